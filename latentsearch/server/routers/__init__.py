"""The API's routes by concern, included by :func:`latentsearch.server.create_app` in this order."""

from __future__ import annotations

from latentsearch.server.routers import analysis, collections, items, pages, search

ROUTERS = [collections.router, items.router, search.router, analysis.router, pages.router]
