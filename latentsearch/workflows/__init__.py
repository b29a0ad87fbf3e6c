"""Multi-step jobs that build or repair collections."""
