"""Every error answer in one shape, ``{"error": "one line"}`` (plus ``type`` for the library's errors),
with the HTTP status of its kind: 400 bad input, 401/403 keys, 404 unknown, 409 conflict, 413 too
large, 422 malformed request, 503 busy or cluster down, 507 disk full."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from latentsearch import limits
from latentsearch.errors import (
    ClusterUnavailableError,
    ConflictError,
    DiskFullError,
    EncoderMismatchError,
    InvalidInputError,
    LatentSearchError,
    LockTimeoutError,
    NotFoundError,
    ReadOnlyError,
)


class TooLargeError(InvalidInputError):
    """A request body or batch over the server's limits."""


def status_of(exc: LatentSearchError) -> int:
    """HTTP status for a library error."""
    if isinstance(exc, TooLargeError):
        return 413
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, (ConflictError, EncoderMismatchError)):
        return 409
    if isinstance(exc, (LockTimeoutError, ClusterUnavailableError)):
        return 503
    if isinstance(exc, DiskFullError):
        return 507  # Insufficient Storage
    if isinstance(exc, ReadOnlyError):
        return 409
    if isinstance(exc, InvalidInputError):
        return 400
    return 500


def describe_validation_error(error: dict[str, Any]) -> str:
    """One of pydantic's validation errors as ``where: what`` (a JSON syntax error by its offset)."""
    if error.get("type") == "json_invalid":  # loc is ("body", character offset)
        return f"body is not valid JSON at character {error['loc'][-1]}: {error.get('ctx', {}).get('error', '')}"
    return f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}"


def flat_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (recent FastAPI keeps an included router as one
    entry of ``app.routes``; its routes carry no prefix here, so they match as they are)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route


def methods_of(route: BaseRoute) -> set[str]:
    """The HTTP methods a route answers (none for mounts)."""
    return set(getattr(route, "methods", None) or ())


def install_error_handlers(app: FastAPI) -> None:
    """Answer the library's errors, malformed requests, routing misses and bugs in the API's shape."""

    @app.exception_handler(LatentSearchError)
    def library_error(_: Request, exc: LatentSearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One line like every other error; FastAPI's default echoes the input, which fails for NaN.
        parts = [describe_validation_error(e) for e in exc.errors()]
        return JSONResponse({"error": "malformed request: " + "; ".join(parts[:5])}, status_code=422)

    @app.exception_handler(StarletteHTTPException)  # Starlette's: routing's 404/405 too, and FastAPI's subclass
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where, headers = f"{request.method} {request.url.path}", exc.headers
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no such endpoint: {where} (the API is listed at /docs)"
        elif exc.status_code == 405 and exc.detail == "Method Not Allowed":
            # Starlette's Allow names the methods of the first route on the path only: gather them all.
            allowed = sorted(
                {m for r in flat_routes(app.routes) if r.matches(request.scope)[0] != Match.NONE for m in methods_of(r)}
            )
            headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
            message = f"method not allowed: {where} (allowed: {headers['Allow']})"
        elif isinstance(exc.__cause__, RecursionError):  # the JSON decoder recursed through the body
            message = f"request body nested too deeply: metadata and filters nest at most {limits.MAX_NESTING} levels"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # A bug: still one line in the API's shape (uvicorn logs the traceback).
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)
