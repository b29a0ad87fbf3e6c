"""Recommendations, outliers, latent-space views, plots."""
