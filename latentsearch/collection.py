"""The public ``Collection``: one folder that ties the SQLite store, the FAISS index and an encoder."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch import paths
from latentsearch.analysis.latent import LatentSpaceMethods
from latentsearch.analysis.outliers import OutlierMethods
from latentsearch.analysis.recommend import RecommendMethods
from latentsearch.encoders import Encoder, get_encoder
from latentsearch.errors import (
    CollectionNotFoundError,
    ConflictError,
    EncoderMismatchError,
    InvalidInputError,
    ItemNotFoundError,
    LatentSearchError,
)
from latentsearch.fileio import fsync_path, process_alive
from latentsearch.index.faiss_index import METRICS, ProgressFn, VectorIndex, validate_spec
from latentsearch.limits import MAX_DIM, check_int, check_json_value, check_text
from latentsearch.records import Hit, Item
from latentsearch.search.request import SearchRequest
from latentsearch.storage.filters import Filter, compile_filter, field_expression
from latentsearch.storage.store import DB_FILE, FORMAT_VERSION, Store

log = logging.getLogger("latentsearch")

FILTER_CACHE_SIZE = 32  # distinct filters whose matching rowids are kept between searches


class Collection(LatentSpaceMethods, OutlierMethods, RecommendMethods):
    """A named collection of items with vectors, metadata and a FAISS index.

    Get one with :func:`create` or :func:`open_collection` (``latentsearch.create`` /
    ``latentsearch.open``). Writes go to SQLite first, in one transaction per call; the index follows.
    Use it as a context manager, or call :meth:`close`, to checkpoint the index on the way out.
    """

    def __init__(self, folder: Path, *, encoder: str | None = None) -> None:
        self.path = Path(folder)
        self.name = self.path.name
        self.store = Store(self.path)
        self.manifest: dict[str, Any] = self.store.read_manifest()
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise EncoderMismatchError(
                f"collection {self.name!r} has format version {self.manifest.get('format_version')}, "
                f"this latentsearch reads version {FORMAT_VERSION}: upgrade latentsearch"
            )
        if encoder is not None and encoder != self.manifest["encoder"]:
            raise EncoderMismatchError(
                f"collection {self.name!r} was built with encoder {self.manifest['encoder']!r}, not "
                f"{encoder!r}: open it without an encoder, or create a new collection for {encoder!r}"
            )
        # Binds the index files to this collection (a copied-in foreign index is rebuilt, not served).
        self.collection_id = self.store.ensure_collection_id()
        self._encoder: Encoder | None = None
        self._index: VectorIndex | None = None
        self._lock = threading.RLock()
        self._filters: dict[tuple[str, str], np.ndarray] = {}
        self._filters_seq = -1

    # --- properties ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.manifest["dim"])

    @property
    def metric(self) -> str:
        """``cosine`` (vectors L2-normalised, inner product) or ``l2``."""
        return str(self.manifest["metric"])

    @property
    def read_only(self) -> bool:
        """True when the collection's folder cannot be written: reads work, writes raise ReadOnlyError."""
        return self.store.read_only

    @property
    def encoder_name(self) -> str:
        """The encoder pinned in the manifest."""
        return str(self.manifest["encoder"])

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder, loaded on first use and checked against the manifest."""
        if self._encoder is None:
            encoder = get_encoder(self.encoder_name)
            pinned = self.manifest.get("weights_hash")
            if pinned and encoder.weights_hash != pinned:
                raise EncoderMismatchError(
                    f"the weights of encoder {self.encoder_name!r} changed since collection {self.name!r} "
                    f"was built (sha256 {encoder.weights_hash[:12]}… vs {pinned[:12]}…): restore the "
                    "original model, or rebuild the collection with the new one"
                )
            self._encoder = encoder
        return self._encoder

    def load_encoder(self, *, background: bool = False) -> threading.Thread | None:
        """Load the collection's model now rather than on the first encode (the first time on a
        machine, ``minilm`` also exports its ONNX graph). With ``background``, load it in a daemon
        thread while the caller goes on, for example opening the index, and return the thread; an
        error there is left for the first call that needs the model, which raises it."""
        if self.encoder_name == "precomputed":
            return None

        def load() -> None:
            loader = getattr(self.encoder, "load", None)  # optional in the Encoder protocol
            if loader is not None:
                loader()

        if not background:
            load()
            return None

        def quietly() -> None:
            with contextlib.suppress(Exception):  # raised again, in the caller's thread, on first use
                load()

        thread = threading.Thread(target=quietly, name=f"load-encoder-{self.name}", daemon=True)
        thread.start()
        return thread

    @property
    def index(self) -> VectorIndex:
        """The FAISS index, loaded (or rebuilt) on first use and caught up with SQLite on each use."""
        with self._lock:
            if self._index is None:
                index = self.new_index()
                index.load(self.store)
                self._index = index
            elif self._index.seq != self.store.seq:  # another process wrote
                self._index.catch_up(self.store)
            return self._index

    def new_index(self) -> VectorIndex:
        """An empty (not yet loaded) FAISS side of this collection."""
        return VectorIndex(
            self.path,
            dim=self.dim,
            metric=self.metric,
            spec=self.manifest["index"],
            collection_id=self.collection_id,
            read_only=self.store.read_only,
        )

    def filter_cache(self, sql: str, params: list[Any]) -> np.ndarray:
        """Rowids matching a compiled filter, cached until the collection's change sequence moves."""
        seq = self.store.seq
        key = (sql, json.dumps(params))
        with self._lock:
            if self._filters_seq != seq:
                self._filters, self._filters_seq = {}, seq
            if key not in self._filters:
                if len(self._filters) >= FILTER_CACHE_SIZE:
                    self._filters.pop(next(iter(self._filters)))
                self._filters[key] = self.store.rowids_matching(sql, params)
            return self._filters[key]

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, encoder={self.encoder_name!r}, dim={self.dim}, path={str(self.path)!r})"

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ----------------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        *,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        uris: Sequence[str | None] | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> int:
        """Add new items in one transaction; an id that already exists is an error.

        Give ``texts`` (encoded by the collection's encoder), image file ``uris`` (for image
        collections: encoded, with a thumbnail kept in SQLite) and/or ``vectors`` (used as given).
        ``progress(done, total)`` is called while encoding. Returns the number of items added.
        """
        return self._write(ids, texts, vectors, metadata, uris, thumbnails, batch_size, progress, upsert=False)

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        *,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        uris: Sequence[str | None] | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> int:
        """Add items, replacing those whose id exists. Same arguments as :meth:`add`."""
        return self._write(ids, texts, vectors, metadata, uris, thumbnails, batch_size, progress, upsert=True)

    def _write(
        self,
        ids: Sequence[str],
        texts: Sequence[str] | None,
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None,
        uris: Sequence[str | None] | None,
        thumbnails: Sequence[bytes | None] | None,
        batch_size: int,
        progress: ProgressFn | None,
        *,
        upsert: bool,
    ) -> int:
        ids = _check_ids(ids)
        n = len(ids)
        if n == 0:
            return 0
        texts_list = _check_texts("texts", texts, n)
        uris_list = _check_texts("uris", uris, n)
        meta_list = _check_metadata(metadata, n)
        images = uris_list is not None and texts_list is None and self.manifest.get("modality") in ("image", "joint")
        if vectors is None:
            if texts_list is not None:
                matrix = self.encode(texts_list, batch_size=batch_size, progress=progress)
            elif images:
                paths = [Path(u) for u in uris_list]  # a Path is an image to encoders, a str a text
                matrix = self.encode(paths, batch_size=batch_size, progress=progress)
            else:
                raise InvalidInputError("nothing to encode: pass texts, image uris, or vectors for the items")
        else:
            matrix = self.prepare_vectors(vectors, expected=n)
        kind = "text" if texts_list is not None else "image" if images else "uri" if uris_list else "vector"
        if kind == "image" and thumbnails is None:
            from latentsearch.encoders.image import thumbnail_bytes

            thumbnails = [thumbnail_bytes(u) for u in uris_list]
        with self._lock:
            index = self.index  # caught up before the write, so it can follow with a plain add
            before = index.seq
            seq, rowids, replaced = self.store.insert(
                ids,
                [kind] * n,
                texts_list or [None] * n,
                uris_list or [None] * n,
                meta_list,
                matrix,
                upsert=upsert,
                thumbnails=thumbnails,
            )
            if seq != before + 1:  # another process wrote in between: replay from SQLite
                index.catch_up(self.store)
            else:
                if len(replaced):
                    index.remove(replaced)
                index.add(rowids, matrix, seq)
            self._maintain()
        return n

    def update_metadata(self, updates: Mapping[str, Mapping[str, Any]]) -> int:
        """Merge fields into items' metadata by id: ``{"doc-1": {"reviewed": True}}``, as a JSON merge
        patch (RFC 7396: nested objects merge too, a ``None`` value removes the field). All or nothing:
        an unknown id or a non-JSON value changes nothing. Returns the number of items updated."""
        ids, fields = check_metadata_updates(updates)
        if not ids:
            return 0
        found = self.store.rowids_of(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise ItemNotFoundError(f"unknown id {missing[0]!r} in collection {self.name!r}: nothing was updated")
        self.store.update_metadata({found[i]: f for i, f in zip(ids, fields)})
        return len(ids)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete items by id in one transaction; an unknown id is an error and deletes nothing."""
        ids = _check_ids(ids, allow_duplicates=True)
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        with self._lock:
            index = self.index
            before = index.seq
            seq, rowids = self.store.delete(ids)
            if seq != before + 1:
                index.catch_up(self.store)
            else:
                index.remove(rowids, seq)
            self._maintain()
        return len(rowids)

    def _maintain(self) -> None:
        index = self._index
        if index is not None and index.needs_rebuild(self.store.count()):
            index.build(self.store)

    def compact(self, *, progress: ProgressFn | None = None) -> None:
        """Rebuild the index from SQLite (drops HNSW tombstones, retrains IVF/PQ) and checkpoint it."""
        self.store.check_writable()
        with self._lock:
            index = self._index or self.new_index()
            index.build(self.store, progress=progress)
            index.save()
            self._index = index

    def save(self) -> None:
        """Checkpoint the index to disk if it changed (SQLite is already durable)."""
        with self._lock:
            if self._index is not None:
                self._index.save()

    def close(self) -> None:
        """Checkpoint the index and close the store. A checkpoint that cannot be written (a full disk)
        is logged, not raised: SQLite holds every acknowledged write and the next open catches up."""
        try:
            self.save()
        except LatentSearchError as exc:
            log.warning("%s (the index is caught up from SQLite on the next open)", exc)
        finally:
            self.store.close()

    # --- metadata field indexes ----------------------------------------------------------------

    def index_field(self, field: str) -> bool:
        """Index a metadata field (``"lang"``, ``"author.name"``) so filters on it read an SQLite index
        instead of parsing every item's JSON: worth it for fields filtered often in large collections.
        Returns False when the field was already indexed. Takes effect for every process."""
        return self.store.create_field_index(field, field_expression(field))

    def drop_field_index(self, field: str) -> None:
        """Remove a metadata field's index (filters on the field keep working, by scanning)."""
        field_expression(field)  # the same one-line error for a malformed name
        if not self.store.drop_field_index(field):
            raise InvalidInputError(
                f"field {field!r} has no index in collection {self.name!r}; indexed: "
                f"{', '.join(self.store.field_indexes()) or 'none'}"
            )

    # --- reads -----------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of items."""
        return self.store.count()

    @property
    def seq(self) -> int:
        """The change sequence: it grows with every write, from any process (caches are keyed on it)."""
        return self.store.seq

    @property
    def vectors_seq(self) -> int:
        """Like :attr:`seq`, but only adds, upserts and deletes move it, not metadata updates."""
        return self.store.vectors_seq()

    def get(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Item]:
        """Items by id, in the order given; an unknown id is an error."""
        ids = _check_ids(ids, allow_duplicates=True)
        found = self.store.rowids_of(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise ItemNotFoundError(f"unknown id {missing[0]!r} in collection {self.name!r}")
        rows = self.store.rows_by_rowid([found[i] for i in ids], with_vectors=with_vectors)
        return [_item(rows[found[i]]) for i in ids]

    def thumbnails(self, ids: Sequence[str]) -> dict[str, bytes]:
        """JPEG thumbnails of image items by id (items without one, and unknown ids, are left out)."""
        rowids = self.store.rowids_of(_check_ids(ids, allow_duplicates=True))
        by_rowid = self.store.thumbnails(list(rowids.values()))
        return {item_id: by_rowid[r] for item_id, r in rowids.items() if r in by_rowid}

    def items(self) -> list[Item]:
        """Every item (without vectors), in insertion order."""
        return [_item(row) for row in self.store.iter_rows()]

    def info(self) -> dict[str, Any]:
        """A summary: name, path, count, encoder, dim, metric, index spec and the factory in use."""
        index = self.index
        return {
            "name": self.name,
            "path": str(self.path),
            "count": self.count(),
            "encoder": self.encoder_name,
            "dim": self.dim,
            "metric": self.metric,
            "index": self.manifest["index"],
            "faiss_factory": index.factory,
            "index_vectors": index.ntotal,
            "tombstones": len(index.tombstones),
            "field_indexes": self.store.field_indexes(),
            "change_seq": self.store.seq,
            "created_at": self.manifest.get("created_at"),
        }

    # --- vectors ---------------------------------------------------------------------------------

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64, progress: ProgressFn | None = None) -> np.ndarray:
        """Encode inputs with the collection's encoder, in batches, checked like user vectors."""
        inputs = list(inputs)
        # Batches of similar length pad less: encode longest first, then restore the input order.
        order = np.arange(len(inputs))
        if inputs and all(isinstance(x, str) for x in inputs):
            order = np.argsort([-len(x) for x in inputs], kind="stable")
        parts = []
        for start in range(0, len(inputs), batch_size):
            batch = [inputs[i] for i in order[start : start + batch_size]]
            parts.append(self.encoder.encode(batch, batch_size=batch_size))
            if progress:
                progress(min(start + batch_size, len(inputs)), len(inputs))
        matrix = np.empty((len(inputs), self.dim), np.float32)
        if parts:
            matrix[order] = np.concatenate(parts)
        return self.prepare_vectors(matrix, expected=len(inputs))

    def prepare_vectors(self, vectors: Any, *, expected: int | None = None) -> np.ndarray:
        """Check vectors (shape, dimension, finite) and normalise them for cosine collections."""
        return prepare_vectors(vectors, dim=self.dim, metric=self.metric, name=self.name, expected=expected)

    def matching_vectors(self, where: Filter | str | None = None) -> tuple[list[str], np.ndarray]:
        """Ids and stored vectors of the items matching ``where`` (every item without it), in insertion order."""
        sql, params = compile_filter(where)
        return self.store.matching_vectors(sql, params, self.dim)

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of items by id; an unknown id is an error."""
        ids = _check_ids(ids, allow_duplicates=True)
        found = self.store.rowids_of(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise ItemNotFoundError(f"unknown id {missing[0]!r} in collection {self.name!r}")
        unique = list(dict.fromkeys(found[i] for i in ids))
        matrix = self.store.vectors(unique, self.dim)
        position = {rowid: i for i, rowid in enumerate(unique)}
        return matrix[[position[found[i]] for i in ids]]

    # --- search ----------------------------------------------------------------------------------

    def search(
        self,
        query: str | np.ndarray | Sequence[float] | SearchRequest | None = None,
        *,
        k: int = 10,
        where: Filter | str | None = None,
        like: str | None = None,
        mode: str = "vector",
        fusion: str = "rrf",
        alpha: float = 0.5,
        rrf_k: int = 60,
        explain: bool = False,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[Hit]:
        """Top-``k`` items for a text, a vector, or an item (``like=ID``, itself excluded).

        ``mode``: ``vector`` (k-NN on the encoder's vectors), ``lexical`` (BM25 over the text, SQLite
        FTS5) or ``hybrid`` (both, fused by reciprocal rank fusion with ``rrf_k``, or by
        ``fusion="weighted"`` with ``alpha`` the vector weight). ``where`` is a metadata filter (dict
        or expression string) applied before ranking, so a selective filter still returns ``k``
        results when ``k`` items match. ``explain`` fills each hit's ``details`` with every mode's rank and score.
        ``ef_search`` (HNSW) and ``nprobe`` (IVF) trade speed for recall per query.
        """
        from latentsearch.search.engine import search

        if isinstance(query, SearchRequest):  # built by the CLI or the server
            request = query
            query = request.query if request.vector is None else request.vector
            like, k, where, mode = request.like, request.k, request.where, request.mode
            fusion, alpha, rrf_k, explain = request.fusion, request.alpha, request.rrf_k, request.explain
            ef_search, nprobe = request.ef_search, request.nprobe
        return search(
            self,
            query,
            k=k,
            where=where,
            like=like,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            rrf_k=rrf_k,
            explain=explain,
            ef_search=ef_search,
            nprobe=nprobe,
        )

    def search_batch(
        self,
        queries: np.ndarray | Sequence[str],
        *,
        k: int = 10,
        where: Filter | str | None = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """Vector search for many queries (an (n, dim) array or a list of texts) in one call: one FAISS
        search and one SQLite read for all of them. Returns one list of hits per query; ``exclude``
        ids never appear."""
        from latentsearch.search.engine import search_batch

        return search_batch(self, queries, k=k, where=where, exclude=exclude, ef_search=ef_search, nprobe=nprobe)

    def user_profile(self, user: str) -> tuple[np.ndarray | None, list[tuple[str, float | None]]]:
        """A learned user's vector and history ``[(item id, timestamp)]`` (``None`` vector: unknown user)."""
        if not isinstance(user, str):
            raise InvalidInputError(f"user must be a user id (a string), got {type(user).__name__}")
        return self.store.get_user(check_text(user, "the user id"))

    def put_users(self, users: Sequence[tuple[str, np.ndarray, list[Any]]], *, replace_all: bool = False) -> None:
        """Store learned users: ``(user id, vector, history [(item id, timestamp)])`` each."""
        for i, user in enumerate(users):
            if not isinstance(user[0], str) or not user[0]:
                raise InvalidInputError(f"user #{i} has id {user[0]!r}: user ids are non-empty strings")
            check_text(user[0], f"user #{i}'s id")
            for entry in user[2]:
                item_id = entry[0] if isinstance(entry, (tuple, list)) and entry else entry
                if isinstance(item_id, str):
                    check_text(item_id, f"an item id in user {user[0]!r}'s history")
        self.store.put_users(users, replace_all=replace_all)

    def user_count(self) -> int:
        """Number of learned users."""
        return self.store.user_count()

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are in the collection."""
        return set(self.store.rowids_of(list(ids)))

    # --- outliers --------------------------------------------------------------------------------

    def outlier_scorer(
        self,
        method: str = "knn",
        *,
        k: int = 10,
        contamination: float | None = None,
        percentile: float | None = None,
        fpr: float | None = None,
        progress: ProgressFn | None = None,
    ) -> Any:
        """A scorer fitted on this collection's vectors (cached until the collection changes).

        ``method``: ``knn``, ``lof``, ``iforest``, ``ensemble``, or ``reconstruction`` (autoencoder
        collections: each image's reconstruction error); one threshold of ``contamination``
        (default 0.01), ``percentile`` or ``fpr`` (conformal false-alarm rate). See
        :mod:`latentsearch.analysis.outliers`.
        """
        from latentsearch.analysis.outliers import ReconstructionScorer, make_scorer

        key = (method, k, contamination, percentile, fpr, self.store.seq)
        cached = getattr(self, "_scorer_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        thresholds = {"contamination": contamination, "percentile": percentile, "fpr": fpr}
        if method == "reconstruction":
            scorer = ReconstructionScorer(self.encoder, **thresholds)
        else:
            scorer = make_scorer(method, k=k, **thresholds)
        scorer.fit(self, progress=progress)
        self._scorer_cache = (key, scorer)
        return scorer


# --- module-level operations ---------------------------------------------------------------------


def create(
    name: str,
    *,
    encoder: str = "minilm",
    index: str = "auto",
    metric: str = "cosine",
    dim: int | None = None,
    home: str | os.PathLike[str] | None = None,
    exist_ok: bool = False,
    shards: int | None = None,
    ray_address: str | None = None,
) -> Collection:
    """Create a collection (or open it with ``exist_ok`` if it exists with the same settings).

    ``encoder`` is ``minilm``, ``st:PATH`` or ``precomputed`` (then ``dim`` is required); ``index`` is
    ``auto``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq``, ``sq8`` or ``faiss:FACTORY``; ``metric`` is
    ``cosine``, ``ip`` or ``l2``. ``shards`` splits it over that many Ray actors
    (:mod:`latentsearch.backends.sharded`; ``ray_address`` of an existing cluster, else a local one).
    """
    if shards is not None:
        from latentsearch.backends.sharded import create_sharded

        return create_sharded(  # type: ignore[return-value]
            name, shards=shards, encoder=encoder, index=index, metric=metric, dim=dim, home=home, address=ray_address
        )
    folder = paths.collection_dir(name, home)
    validate_spec(index)
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    if (folder / DB_FILE).exists():
        if not exist_ok:
            raise ConflictError(f"collection {name!r} already exists in {folder.parent}: open it, or drop it first")
        collection = Collection(folder, encoder=encoder)
        if collection.manifest["index"] != index or collection.metric != metric:
            raise EncoderMismatchError(
                f"collection {name!r} exists with index {collection.manifest['index']!r} and metric "
                f"{collection.metric!r}: drop it to change them"
            )
        return collection
    tmp = new_collection_folder(name, encoder=encoder, index=index, metric=metric, dim=dim, home=home)
    publish(tmp, folder)
    return Collection(folder)


def new_collection_folder(
    name: str,
    *,
    encoder: str = "minilm",
    index: str = "auto",
    metric: str = "cosine",
    dim: int | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Check the settings and make an empty collection in a hidden work folder of the data directory
    (``.NAME.creating-PID``); :func:`publish` renames it into place. Operations that fill a new
    collection in several steps (``fit_interactions``) fill it there first, so a crash leaves either
    nothing under the name or the whole result; the next create of the name removes the leftover."""
    folder = paths.collection_dir(name, home)
    enc, dim = check_settings(encoder=encoder, index=index, metric=metric, dim=dim)
    weights_hash = None if encoder == "precomputed" else enc.weights_hash
    normalize = metric == "cosine"
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_folders(folder)
    tmp = folder.with_name(f".{name}.creating-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    store = Store(tmp, create=True)
    store.write_manifest(
        {
            "format_version": FORMAT_VERSION,
            "encoder": encoder,
            "modality": enc.modality,
            "weights_hash": weights_hash,
            "dim": dim,
            "metric": metric,
            "normalize": normalize,
            "index": index,
            "collection_id": uuid.uuid4().hex,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    store.close()
    return tmp


def publish(tmp: Path, folder: Path, *, replace: bool = False) -> None:
    """Rename a work folder made by :func:`new_collection_folder` into place as ``folder`` (one rename:
    the collection appears whole or not at all). With ``replace`` an existing collection of that name
    is first moved aside and deleted after the rename."""
    trash = None
    if replace and folder.exists():
        trash = folder.with_name(f".{folder.name}.dropping-{os.getpid()}")
        os.rename(folder, trash)
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConflictError(
            f"collection {folder.name!r} already exists in {folder.parent} (created by another process "
            "meanwhile?): open it, or drop it first"
        ) from None
    fsync_path(folder.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def check_settings(*, encoder: str, index: str, metric: str, dim: int | None) -> tuple[Encoder, int]:
    """Check a new collection's settings before anything is written (shared by single and sharded
    collections): a known encoder, a dimension it makes (or, for ``precomputed``, one from 1 to
    :data:`~latentsearch.limits.MAX_DIM`), a known metric, and an index FAISS can build for them.
    Returns the encoder and the dimension."""
    from latentsearch.index.faiss_index import check_index

    if not isinstance(encoder, str):
        raise InvalidInputError(f"encoder must be a name such as 'minilm', got {encoder!r}")
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    validate_spec(index)
    enc = get_encoder(encoder)
    if encoder == "precomputed":
        if dim is None:
            raise InvalidInputError("the precomputed encoder needs the vector dimension: pass dim (CLI: --dim)")
        dim = check_int("dim", dim, 1, MAX_DIM)
    elif dim is not None and (isinstance(dim, bool) or dim != enc.dim):
        raise InvalidInputError(f"encoder {encoder!r} makes {enc.dim}-d vectors, not {dim}")
    else:
        dim = enc.dim
    check_index(index, dim, metric)
    return enc, int(dim)


def open_collection(
    name: str,
    *,
    home: str | os.PathLike[str] | None = None,
    encoder: str | None = None,
    ray_address: str | None = None,
) -> Collection:
    """Open an existing collection; ``encoder``, if given, must match the one it was built with.
    A sharded collection opens on Ray (``ray_address`` of a cluster, else a local Ray)."""
    folder = paths.collection_dir(name, home)
    if (folder / "sharded.json").exists():
        from latentsearch.backends.sharded import open_sharded

        return open_sharded(name, home=home, address=ray_address)  # type: ignore[return-value]
    if not (folder / DB_FILE).exists():
        raise CollectionNotFoundError(
            f"collection {name!r} not found in {folder.parent}: create it first "
            f"(latentsearch create {name}), or point --home / LATENTSEARCH_HOME at its data directory"
        )
    return Collection(folder, encoder=encoder)


def list_collections(*, home: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the collections in the data directory, sorted."""
    root = paths.resolve_home(home)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if ((p / DB_FILE).is_file() or (p / "sharded.json").is_file()) and not p.name.startswith(".")
    )


def summarize(
    name: str, *, home: str | os.PathLike[str] | None = None, opener: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """One line about a collection for listings: name, count, encoder, dim, modality (and shards).

    A collection that cannot be opened (a damaged file, a missing model) is reported with a ``problem``
    instead of failing the whole listing. ``opener`` returns an already opened collection (the server's).
    """
    from latentsearch.backends.sharded import describe_offline, is_sharded

    try:
        if opener is None and is_sharded(name, home):
            return describe_offline(name, home=home)  # its files, without starting Ray
        col = opener(name) if opener else open_collection(name, home=home)
        try:
            return {
                "name": name,
                "count": col.count(),
                "encoder": col.encoder_name,
                "dim": col.dim,
                "modality": col.manifest.get("modality"),
            }
        finally:
            if opener is None:
                col.store.close()
    except (LatentSearchError, OSError, ValueError) as exc:
        return {"name": name, "problem": str(exc)}


def drop(name: str, *, home: str | os.PathLike[str] | None = None) -> None:
    """Delete a collection and its files."""
    folder = paths.collection_dir(name, home)
    if not (folder / DB_FILE).exists() and not (folder / "sharded.json").exists():
        raise CollectionNotFoundError(f"collection {name!r} not found in {folder.parent}: nothing to drop")
    # Rename first so a crash mid-delete leaves no half collection under the real name.
    trash = folder.with_name(f".{name}.dropping-{os.getpid()}")
    os.rename(folder, trash)
    shutil.rmtree(trash)
    _remove_stale_work_folders(folder)


def _remove_stale_work_folders(folder: Path) -> None:
    """Remove what a killed create or drop of this name left (``.NAME.creating-PID``,
    ``.NAME.dropping-PID``), once its process is gone: hidden folders no listing shows."""
    for path in folder.parent.glob(f".{folder.name}.*-*"):
        stem, _, pid = path.name.rpartition("-")
        ours = stem in (f".{folder.name}.creating", f".{folder.name}.dropping") and pid.isdigit()
        if ours and path.is_dir() and (int(pid) == os.getpid() or not process_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


def prepare_vectors(vectors: Any, *, dim: int, metric: str, name: str, expected: int | None = None) -> np.ndarray:
    """Vectors as a contiguous float32 (n, dim) array: right dimension, finite, and L2-normalised for
    cosine; one-line errors otherwise. Shared by single and sharded collections."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError("vectors must be numbers in a 2-D array of shape (n, dim)") from None
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise InvalidInputError(
            f"wrong vector dimension: got shape {tuple(np.shape(vectors))}, collection {name!r} stores {dim}-d vectors"
        )
    if expected is not None and matrix.shape[0] != expected:
        raise InvalidInputError(f"got {matrix.shape[0]} vectors for {expected} items")
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"vector #{int(np.argmax(bad))} contains NaN or infinity")
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InvalidInputError(
                f"vector #{int(np.argmax(norms[:, 0] == 0))} is all zeros and has no direction for cosine"
            )
        matrix = matrix / norms
    return np.ascontiguousarray(matrix, dtype=np.float32)


# --- validation helpers --------------------------------------------------------------------------


def check_metadata_updates(updates: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The ids and field dicts of ``{id: {field: value}}`` metadata updates, checked before any write
    (shared by single and sharded collections, so a bad update changes nothing on any shard)."""
    if not isinstance(updates, Mapping):
        raise InvalidInputError("updates must be a dict of {id: {field: value}}")
    ids = _check_ids(list(updates))
    return ids, _check_metadata([updates[i] for i in ids], len(ids))


def _check_ids(ids: Sequence[str], *, allow_duplicates: bool = False) -> list[str]:
    if isinstance(ids, str):
        raise InvalidInputError("ids must be a list of strings, not a single string")
    out = list(ids)
    seen: set[str] = set()
    for i, item_id in enumerate(out):
        if not isinstance(item_id, str) or not item_id.strip():
            raise InvalidInputError(f"id #{i} is {item_id!r}: ids must be non-empty strings")
        check_text(item_id, f"id #{i}")
        if not allow_duplicates and item_id in seen:
            raise InvalidInputError(f"duplicate id {item_id!r} in the input: ids must be unique")
        seen.add(item_id)
    return out


def _check_length(what: str, values: Sequence[Any] | None, n: int) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise InvalidInputError(f"{what} must be a list, not a single string")
    values = list(values)
    if len(values) != n:
        raise InvalidInputError(f"got {len(values)} {what} for {n} ids")
    return values


def _check_texts(what: str, values: Sequence[Any] | None, n: int) -> list[Any] | None:
    """Texts or uris (paths allowed): one per id, each a valid-Unicode string or None."""
    out = _check_length(what, values, n)
    for i, value in enumerate(out or ()):
        if value is None:
            continue
        if what == "uris" and isinstance(value, os.PathLike):
            value = out[i] = os.fspath(value)
        if not isinstance(value, str):
            raise InvalidInputError(f"{what[:-1]} #{i} is a {type(value).__name__}, not a string")
        check_text(value, f"{what[:-1]} #{i}")
    return out


def _check_metadata(metadata: Sequence[Mapping[str, Any] | None] | None, n: int) -> list[dict[str, Any]]:
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a list with one dict per item")
    values = list(metadata)
    if len(values) != n:
        raise InvalidInputError(f"got {len(values)} metadata entries for {n} ids")
    out = []
    for i, meta in enumerate(values):
        if meta is None:
            meta = {}
        if not isinstance(meta, Mapping):
            raise InvalidInputError(f"metadata #{i} is a {type(meta).__name__}, not a dict")
        check_json_value(meta, f"metadata #{i}")  # depth, Unicode, 64-bit integers; before json.dumps recurses
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"metadata #{i} cannot be stored as JSON ({exc}): use strings, finite numbers, booleans, null"
            ) from None
        out.append(dict(meta))
    return out


def _item(row: dict[str, Any]) -> Item:
    return Item(
        id=row["id"],
        kind=row["kind"],
        text=row["text"],
        uri=row["uri"],
        metadata=row["metadata"],
        vector=row.get("vector"),
    )
