"""The engine as a local HTTP service (FastAPI under uvicorn), thin over the library.

Every endpoint calls the same library function the CLI calls; errors carry the same one-line messages
with HTTP status codes (400 bad input, 401/403 keys, 404 unknown, 409 conflict, 413 too large, 422
malformed request). Install with ``pip install "latentsearch[server]"``; run with ``latentsearch serve``.

Security: API keys (``LATENTSEARCH_API_KEY`` for a read-write key, ``LATENTSEARCH_READ_KEY`` for a
read-only one, or a keys file of ``KEY rw|ro`` lines), compared in constant time; starting on anything
but loopback without a key is refused; request bodies and batches are capped; collection names are
validated so no request reaches outside the data directory; CORS is off unless origins are given.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from latentsearch import limits, paths
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

# uvicorn's own logger for general messages: its lines show beside "Application startup complete".
log = logging.getLogger("uvicorn.error")

WEB = Path(__file__).with_name("web")
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_BATCH = 10_000
Role = Literal["ro", "rw"]


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


# --- keys --------------------------------------------------------------------------------------------


def load_keys(keys_file: str | os.PathLike[str] | None = None) -> dict[str, Role]:
    """API keys from the environment and an optional file of ``KEY rw|ro`` lines (# comments allowed)."""
    keys: dict[str, Role] = {}
    if os.environ.get("LATENTSEARCH_API_KEY"):
        keys[os.environ["LATENTSEARCH_API_KEY"]] = "rw"
    if os.environ.get("LATENTSEARCH_READ_KEY"):
        keys[os.environ["LATENTSEARCH_READ_KEY"]] = "ro"
    if keys_file is not None:
        try:
            lines = Path(keys_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read keys file {keys_file}: {exc}") from None
        for number, line in enumerate(lines, 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("rw", "ro") or len(parts[0]) < 16:
                raise InvalidInputError(
                    f"{keys_file} line {number}: expected 'KEY rw' or 'KEY ro' with a key of 16+ characters"
                )
            keys[parts[0]] = parts[1]  # type: ignore[assignment]
    return keys


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="What was wrong, where, and what to do, in one line.")
    type: str | None = Field(None, description="The library's exception class, for errors the engine raised.")


# --- request bodies ------------------------------------------------------------------------------------


# Bounds from latentsearch.limits, so the schema (and /docs) states what the library enforces.
def _k() -> Any:
    return Field(10, ge=1, le=limits.MAX_K, description=f"Number of results, 1 to {limits.MAX_K:,}.")


def _seed() -> Any:
    return Field(0, ge=0, le=limits.MAX_SEED)


class Body(BaseModel):
    """A JSON request body, validated strictly: a value of the wrong JSON type is refused (422), never
    coerced (``"background": 0`` is not false, ``"seed": false`` is not 0), as the schema says."""

    model_config = ConfigDict(strict=True)


class CreateBody(Body):
    name: str
    encoder: str = "minilm"
    index: str = "auto"
    metric: str = "cosine"
    dim: int | None = Field(None, ge=1, le=limits.MAX_DIM)


class ItemBody(Body):
    id: str
    text: str | None = None
    uri: str | None = None
    vector: list[float] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddBody(Body):
    items: list[ItemBody]
    upsert: bool = False
    background: bool = Field(False, description="Run as a job: returns a job id to poll at /api/jobs/{id}.")


class IdsBody(Body):
    ids: list[str]


class MetadataBody(Body):
    updates: dict[str, dict[str, Any]] = Field(
        description='Fields to merge into each item\'s metadata by id: {"doc-1": {"reviewed": true}}; null removes one.'
    )


class SearchBody(Body):
    query: str | None = None
    vector: list[float] | None = None
    like: str | None = None
    k: int = _k()
    where: dict[str, Any] | str | None = None
    mode: str = "vector"
    fusion: str = "rrf"
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    rrf_k: int = Field(60, ge=0, le=limits.MAX_RRF_K)
    explain: bool = False
    ef_search: int | None = Field(None, ge=1, le=limits.MAX_EF_SEARCH)
    nprobe: int | None = Field(None, ge=1, le=limits.MAX_NPROBE)


class RecommendBody(Body):
    positive: list[Any] | None = None
    negative: list[Any] | None = None
    user: str | None = None
    k: int = _k()
    strategy: str = "average"
    diversity: float = 0.0
    where: dict[str, Any] | str | None = None
    exclude: list[str] = Field(default_factory=list)


class HistoryBody(Body):
    history: list[Any]
    k: int = _k()
    half_life: float | None = None
    where: dict[str, Any] | str | None = None
    diversity: float = 0.0


class CheckBody(Body):
    texts: list[str] | None = None
    vectors: list[list[float]] | None = None
    method: str = "knn"
    k: int = _k()
    contamination: float | None = None
    fpr: float | None = None


class JobStarted(BaseModel):
    job: str = Field(description="The job id.")
    status: str = Field(description="Where to poll the job's progress: /api/jobs/{job}.")


class ClustersBody(Body):
    n: Annotated[int, Field(ge=1, le=limits.MAX_CLUSTERS)] | Literal["auto"] = 8
    where: dict[str, Any] | str | None = None
    write: bool = True
    seed: int = _seed()


# --- the app -------------------------------------------------------------------------------------------


class Jobs:
    """Background adds: progress and outcome by job id."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self, work: Callable[[Callable[[int, int], None]], int], total: int) -> str:
        job_id = uuid.uuid4().hex
        self._jobs[job_id] = {"id": job_id, "state": "running", "done": 0, "total": total, "error": None}

        def progress(done: int, _total: int) -> None:
            with self._lock:
                self._jobs[job_id]["done"] = done

        def run() -> None:
            try:
                work(progress)
                state, error = "done", None
            except LatentSearchError as exc:
                state, error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - reported to the client, never lost silently
                state, error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            with self._lock:
                self._jobs[job_id].update(state=state, error=error)

        threading.Thread(target=run, name=f"latentsearch-job-{job_id[:8]}", daemon=True).start()
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            if job_id not in self._jobs:
                raise NotFoundError(f"unknown job {job_id!r}")
            return dict(self._jobs[job_id])


class Registry:
    """Open collections, one shared object per name (models and indexes load once per process).
    Sharded collections join the Ray cluster at ``ray_address`` (else a local Ray)."""

    def __init__(self, home: Path, ray_address: str | None = None) -> None:
        self.home = home
        self.ray_address = ray_address
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        import latentsearch as ls

        paths.validate_name(name)
        with self._lock:
            col = self._open.get(name)
            if col is not None and not ls.connect(self.home).exists(name):
                self._open.pop(name, None)  # dropped by someone else
                with contextlib.suppress(Exception):  # its files are gone: release what it holds
                    col.close()
                col = None
            if col is None:
                col = self._open[name] = ls.open(name, home=self.home, ray_address=self.ray_address)
            return col

    def load_encoders(self) -> None:
        """Open every collection, load its index and the models they use (each model once), so that
        the first request is as fast as the rest; logs one line per model with the time it took."""
        from latentsearch.connection import list_collections

        by_encoder: dict[str, list[Any]] = {}
        for name in list_collections(home=self.home):
            try:
                col = self.get(name)
            except LatentSearchError as exc:  # a damaged collection is reported by its own requests
                log.warning("not preloading the model of %s: %s", name, exc)
                continue
            by_encoder.setdefault(col.encoder_name, []).append(col)
        for encoder, cols in by_encoder.items():
            start = time.perf_counter()
            try:
                for col in cols:
                    col.load_encoder(background=True)  # the model loads while the index opens
                    col.info()  # opens (or catches up) the index: the first search need not
                    col.load_encoder()
            except LatentSearchError as exc:
                log.warning("cannot preload encoder %s: %s", encoder, exc)
                continue
            if encoder != "precomputed":  # no model: its indexes opened silently
                names = ", ".join(col.name for col in cols)
                log.info("loaded encoder %s for %s in %.2fs", encoder, names, time.perf_counter() - start)

    def forget(self, name: str) -> None:
        with self._lock:
            col = self._open.pop(name, None)
        if col is not None:
            col.close()

    def close(self) -> None:
        with self._lock:
            open_now, self._open = list(self._open.values()), {}
        for col in open_now:
            col.close()


class BodyTooLarge(StarletteHTTPException):
    """A request body over the server's byte limit, noticed while it streams in (chunked uploads have
    no Content-Length). An HTTPException, so FastAPI's body parsing passes it on instead of answering
    400 "There was an error parsing the body"; the app's handler gives it the ``{"error": ...}`` shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit:,}-byte limit: send smaller batches")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (declared or streamed) with 413."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen, started = 0, False

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        async def watching_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:  # read outside a route (the routes' own handler answers inside them)
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps({"error": BodyTooLarge(self.limit).detail}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


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
    keys = dict(keys or {})
    registry, jobs = Registry(root, ray_address), Jobs()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
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
    app.state.registry, app.state.home = registry, root
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=max_body)

    @app.exception_handler(LatentSearchError)
    def library_error(_: Request, exc: LatentSearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=status_of(exc))

    def role_of(x_api_key: str | None, authorization: str | None) -> Role:
        if not keys:
            return "rw"
        given = x_api_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        if not given:
            raise HTTPException(401, "missing API key: send it as X-API-Key or Authorization: Bearer KEY")
        role: Role | None = None
        for key, key_role in keys.items():  # compare with every key, in constant time
            if hmac.compare_digest(key.encode(), given.encode()):
                role = key_role
        if role is None:
            raise HTTPException(401, "unknown API key")
        return role

    def reader(x_api_key: str | None = Header(None), authorization: str | None = Header(None)) -> Role:
        return role_of(x_api_key, authorization)

    def writer(x_api_key: str | None = Header(None), authorization: str | None = Header(None)) -> Role:
        if role_of(x_api_key, authorization) != "rw":
            raise HTTPException(403, "this API key is read-only")
        return "rw"

    @app.exception_handler(RequestValidationError)
    def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One line like every other error; FastAPI's default echoes the input, which fails for NaN.
        def describe(e: dict[str, Any]) -> str:
            if e.get("type") == "json_invalid":  # loc is ("body", character offset)
                return f"body is not valid JSON at character {e['loc'][-1]}: {e.get('ctx', {}).get('error', '')}"
            return f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"

        parts = [describe(e) for e in exc.errors()]
        return JSONResponse({"error": "malformed request: " + "; ".join(parts[:5])}, status_code=422)

    @app.exception_handler(StarletteHTTPException)  # Starlette's: routing's 404/405 too, and FastAPI's subclass
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where, headers = f"{request.method} {request.url.path}", exc.headers
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no such endpoint: {where} (the API is listed at /docs)"
        elif exc.status_code == 405 and exc.detail == "Method Not Allowed":
            # Starlette's Allow names the methods of the first route on the path only: gather them all.
            allowed = sorted(
                {m for r in app.routes if r.matches(request.scope)[0] != Match.NONE for m in getattr(r, "methods", ())}
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

    def check_batch(n: int) -> None:
        if n > max_batch:
            raise TooLargeError(f"{n:,} items in one request, over the limit of {max_batch:,}: split the batch")

    # --- collections -----------------------------------------------------------------------------------

    @app.get("/api/collections", dependencies=[Depends(reader)])
    def list_collections() -> list[dict[str, Any]]:
        db = ls.connect(root)
        return [db.describe(name, opener=registry.get) for name in db.list()]

    @app.post("/api/collections", status_code=201, dependencies=[Depends(writer)])
    def create_collection(body: CreateBody) -> dict[str, Any]:
        col = ls.create(body.name, encoder=body.encoder, index=body.index, metric=body.metric, dim=body.dim, home=root)
        col.close()
        return registry.get(body.name).info()

    @app.get("/api/collections/{name}", dependencies=[Depends(reader)])
    def info(name: str) -> dict[str, Any]:
        return registry.get(name).info()

    @app.delete("/api/collections/{name}", dependencies=[Depends(writer)])
    def drop(name: str) -> dict[str, Any]:
        paths.validate_name(name)
        registry.forget(name)
        ls.drop(name, home=root)
        return {"dropped": name}

    # --- items -----------------------------------------------------------------------------------------

    def write_items(col: Any, items: list[ItemBody], upsert: bool, progress: Callable[[int, int], None] | None) -> int:
        if col.manifest.get("modality") in ("image", "joint") and any(it.uri for it in items):
            # A uri would make the server read a file the client names, anywhere on its disk.
            raise InvalidInputError(
                f"collection {col.name!r} encodes images: upload them with POST /api/collections/{col.name}/images"
            )
        vectors = [it.vector for it in items]
        if any(v is not None for v in vectors) and any(v is None for v in vectors):
            raise InvalidInputError("give a vector for every item in the batch, or for none")
        texts = [it.text for it in items]
        has_text = any(t is not None for t in texts)
        write = col.upsert if upsert else col.add
        return write(
            [it.id for it in items],
            texts if has_text else None,
            vectors=vectors if vectors and vectors[0] is not None else None,
            metadata=[it.metadata for it in items],
            uris=[it.uri for it in items] if any(it.uri for it in items) else None,
            progress=progress,
        )

    @app.post(
        "/api/collections/{name}/items",
        dependencies=[Depends(writer)],
        responses={202: {"model": JobStarted, "description": "With background: the job started; poll its status"}},
    )
    def add_items(name: str, body: AddBody) -> Any:
        check_batch(len(body.items))
        col = registry.get(name)
        if body.background:
            job = jobs.start(lambda progress: write_items(col, body.items, body.upsert, progress), len(body.items))
            return JSONResponse({"job": job, "status": f"/api/jobs/{job}"}, status_code=202)
        return {"added": write_items(col, body.items, body.upsert, None), "count": col.count()}

    @app.post("/api/collections/{name}/images", dependencies=[Depends(writer)])
    def add_images(name: str, files: list[UploadFile] = File(...), upsert: bool = Form(False)) -> dict[str, Any]:
        check_batch(len(files))
        col = registry.get(name)
        folder = col.path / "uploads"
        folder.mkdir(exist_ok=True)
        ids, uris = [], []
        for upload in files:
            # Only the base name is kept, so an upload can never be written outside the collection.
            base = Path(upload.filename or "upload").name or "upload"
            target = folder / f"{uuid.uuid4().hex[:8]}-{base}"
            with open(target, "wb") as handle:
                shutil.copyfileobj(upload.file, handle)
            ids.append(base)
            uris.append(str(target))
        try:
            added = (col.upsert if upsert else col.add)(ids, uris=uris)
        except LatentSearchError:
            for uri in uris:
                Path(uri).unlink(missing_ok=True)
            raise
        return {"added": added, "ids": ids, "count": col.count()}

    @app.get("/api/collections/{name}/items", dependencies=[Depends(reader)])
    def get_items(name: str, ids: list[str] = Query(...), vectors: bool = False) -> list[dict[str, Any]]:
        check_batch(len(ids))
        return [item.to_dict() for item in registry.get(name).get(ids, with_vectors=vectors)]

    @app.post("/api/collections/{name}/items/delete", dependencies=[Depends(writer)])
    def delete_items(name: str, body: IdsBody) -> dict[str, Any]:
        check_batch(len(body.ids))
        col = registry.get(name)
        return {"deleted": col.delete(body.ids), "count": col.count()}

    @app.post("/api/collections/{name}/items/metadata", dependencies=[Depends(writer)])
    def update_metadata(name: str, body: MetadataBody) -> dict[str, Any]:
        check_batch(len(body.updates))
        return {"updated": registry.get(name).update_metadata(body.updates)}

    @app.get("/api/collections/{name}/thumbnails/{item_id:path}", dependencies=[Depends(reader)])
    def thumbnail(name: str, item_id: str) -> Response:
        found = registry.get(name).thumbnails([item_id])
        if item_id not in found:
            raise NotFoundError(f"item {item_id!r} has no thumbnail in collection {name!r}")
        return Response(found[item_id], media_type="image/jpeg")

    @app.get("/api/jobs/{job_id}", dependencies=[Depends(reader)])
    def job_status(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id)

    # --- search and friends ----------------------------------------------------------------------------

    @app.post("/api/collections/{name}/search", dependencies=[Depends(reader)])
    def search(name: str, body: SearchBody) -> list[dict[str, Any]]:
        given = [x is not None for x in (body.query, body.vector, body.like)]
        if sum(given) != 1:
            raise InvalidInputError("give exactly one of query, vector or like")
        hits = registry.get(name).search(
            body.query if body.query is not None else body.vector,
            k=body.k,
            where=body.where,
            like=body.like,
            mode=body.mode,
            fusion=body.fusion,
            alpha=body.alpha,
            rrf_k=body.rrf_k,
            explain=body.explain,
            ef_search=body.ef_search,
            nprobe=body.nprobe,
        )
        return [hit.to_dict() for hit in hits]

    @app.post("/api/collections/{name}/search/image", dependencies=[Depends(reader)])
    def search_image(
        name: str, file: UploadFile = File(...), k: int = Form(10, ge=1, le=limits.MAX_K)
    ) -> list[dict[str, Any]]:
        with tempfile.NamedTemporaryFile(suffix=Path(file.filename or "q.jpg").suffix) as handle:
            shutil.copyfileobj(file.file, handle)
            handle.flush()
            return [hit.to_dict() for hit in registry.get(name).search(Path(handle.name), k=k)]

    @app.post("/api/collections/{name}/recommend", dependencies=[Depends(reader)])
    def recommend(name: str, body: RecommendBody) -> list[dict[str, Any]]:
        hits = registry.get(name).recommend(
            body.positive,
            body.negative,
            user=body.user,
            k=body.k,
            strategy=body.strategy,
            diversity=body.diversity,
            where=body.where,
            exclude=body.exclude,
        )
        return [hit.to_dict() for hit in hits]

    @app.post("/api/collections/{name}/recommend/history", dependencies=[Depends(reader)])
    def recommend_history(name: str, body: HistoryBody) -> list[dict[str, Any]]:
        history = [tuple(h) if isinstance(h, list) else h for h in body.history]
        hits = registry.get(name).recommend_for(
            history, k=body.k, half_life=body.half_life, where=body.where, diversity=body.diversity
        )
        return [hit.to_dict() for hit in hits]

    @app.get("/api/collections/{name}/outliers", dependencies=[Depends(reader)])
    def outliers(
        name: str,
        method: str = "knn",
        k: int = Query(10, ge=1, le=limits.MAX_K),
        contamination: float | None = None,
        fpr: float | None = None,
        top: int = Query(20, ge=0, le=limits.MAX_K),
    ) -> list[dict[str, Any]]:
        found = registry.get(name).outliers(method, k=k, contamination=contamination, fpr=fpr, top=top)
        return [r.to_dict() for r in found]

    @app.post("/api/collections/{name}/check", dependencies=[Depends(reader)])
    def check(name: str, body: CheckBody) -> list[dict[str, Any]]:
        if (body.texts is None) == (body.vectors is None):
            raise InvalidInputError("give texts or vectors to check")
        inputs = body.texts if body.texts is not None else body.vectors
        check_batch(len(inputs))
        found = registry.get(name).check(
            inputs, method=body.method, k=body.k, contamination=body.contamination, fpr=body.fpr
        )
        return [r.to_dict() for r in found]

    @app.get("/api/collections/{name}/map", dependencies=[Depends(reader)])
    def map_data(
        name: str,
        method: str = "pca",
        dim: int = Query(2, ge=2, le=3),
        sample: int | None = Query(None, ge=1, le=limits.MAX_SAMPLE),
        seed: int = Query(0, ge=0, le=limits.MAX_SEED),
    ) -> dict[str, Any]:
        col = registry.get(name)
        projection = col.project(method, dim=dim, sample=sample, seed=seed)
        items = col.get(projection.ids)
        return {
            **projection.to_dict(),
            "texts": [(item.text or item.uri or "")[:200] for item in items],
            "metadata": [item.metadata for item in items],
        }

    @app.post("/api/collections/{name}/clusters", dependencies=[Depends(writer)])
    def clusters(name: str, body: ClustersBody) -> list[dict[str, Any]]:
        found = registry.get(name).clusters(body.n, where=body.where, write=body.write, seed=body.seed)
        return [c.to_dict() for c in found]

    @app.get("/api/collections/{name}/interpolate", dependencies=[Depends(reader)])
    def interpolate(
        name: str, start: str, end: str, steps: int = Query(8, ge=2, le=limits.MAX_STEPS)
    ) -> list[dict[str, Any]]:
        return [s.to_dict() for s in registry.get(name).interpolate(start, end, steps=steps)]

    # --- the web page ----------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/app.js", include_in_schema=False)
    def script() -> FileResponse:
        return FileResponse(WEB / "app.js", media_type="text/javascript")

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` under uvicorn on a free port in a background thread; yields its base URL and stops
    it on exit (for notebooks, tests and load tests)."""
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="latentsearch-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise InvalidInputError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def serve(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    keys_file: str | os.PathLike[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    cors_origins: list[str] | None = None,
    ray_address: str | None = None,
) -> None:
    """Run the server under uvicorn; refuses a non-loopback address unless API keys are configured."""
    import uvicorn

    keys = load_keys(keys_file)
    if not keys and not is_loopback(host):
        raise InvalidInputError(
            f"refusing to serve on {host} without an API key: set LATENTSEARCH_API_KEY (or --keys-file), "
            "or bind to 127.0.0.1"
        )
    app = create_app(
        home, keys=keys, max_body=max_body, max_batch=max_batch, cors_origins=cors_origins, ray_address=ray_address
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
