"""The engine as a local HTTP service (FastAPI under uvicorn), thin over the library.

Every endpoint calls the same library function the CLI calls; errors carry the same one-line messages
with HTTP status codes (400 bad input, 401/403 keys, 404 unknown, 409 conflict, 413 too large, 422
malformed request). Install with ``pip install "latentsearch[server]"``; run with ``latentsearch serve``.

Security: API keys (``LATENTSEARCH_API_KEY`` for a read-write key, ``LATENTSEARCH_READ_KEY`` for a
read-only one, or a keys file of ``KEY rw|ro`` lines), compared in constant time; starting on anything
but loopback without a key is refused; request bodies and batches are capped; collection names are
validated so no request reaches outside the data directory; CORS is off unless origins are given.

The package, by concern: ``app`` (create_app), ``run`` (serve, running), ``auth`` (keys), ``models``
(request and answer bodies), ``registry`` (open collections), ``jobs`` (background adds), ``errors``
(status codes, error answers), ``middleware`` (the body limit), ``state`` (what routes share) and
``routers/`` (collections, items, search, analysis, pages).
"""

from __future__ import annotations

from latentsearch.server.app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, create_app
from latentsearch.server.auth import Role, is_loopback, load_keys
from latentsearch.server.errors import TooLargeError, status_of
from latentsearch.server.jobs import Jobs
from latentsearch.server.registry import Registry
from latentsearch.server.run import running, serve

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY",
    "Jobs",
    "Registry",
    "Role",
    "TooLargeError",
    "create_app",
    "is_loopback",
    "load_keys",
    "running",
    "serve",
    "status_of",
]
