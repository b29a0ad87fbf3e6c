"""The FastAPI app: its state, start-up and shutdown, middleware, error handlers and routes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI

from latentsearch import paths
from latentsearch.server.auth import Role
from latentsearch.server.errors import install_error_handlers
from latentsearch.server.jobs import Jobs
from latentsearch.server.middleware import BodyLimit
from latentsearch.server.models import ErrorBody
from latentsearch.server.registry import Registry
from latentsearch.server.routers import ROUTERS
from latentsearch.server.state import ServerState

DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_BATCH = 10_000


def create_app(
    home: str | os.PathLike[str] | None = None,
    *,
    keys: dict[str, Role] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    cors_origins: list[str] | None = None,
    ray_address: str | None = None,
    preload: bool = True,
) -> FastAPI:
    """The FastAPI app over the collections in ``home``. ``keys`` maps API keys to ``ro``/``rw``; with
    none, every request is allowed (start such a server on loopback only: :func:`serve` enforces it).
    ``ray_address`` is the Ray cluster of sharded collections. With ``preload``, the models of the
    collections in ``home`` load when the server starts, not on the first request that needs them."""
    from fastapi_offline import FastAPIOffline  # Swagger UI assets served locally: /docs works offline

    import latentsearch as ls

    root = paths.resolve_home(home)
    registry = Registry(root, ray_address)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if preload:
            registry.load_encoders()
        yield
        registry.close()  # checkpoint every open index on shutdown

    app = FastAPIOffline(
        lifespan=lifespan,
        # Every error answer has one shape; the schema says so (clients and schemathesis check against it).
        responses={"4XX": {"model": ErrorBody, "description": "Bad request: the one-line error says what to do"}},
        title="latentsearch",
        version=ls.__version__,
        description="Semantic search, recommendations, outliers and maps over SQLite + FAISS collections.",
    )
    app.state.server = ServerState(registry, Jobs(), max_batch)
    app.state.registry, app.state.home, app.state.keys = registry, root, dict(keys or {})
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=max_body)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
