"""Sharded collections on Ray: the same API as :class:`~latentsearch.collection.Collection`, spread
over N shards, each a normal latentsearch collection held by a Ray actor.

- Items go to shard ``crc32(id) % N`` (stable across processes and machines).
- Encoding fans out to a pool of encoder actors, each loading the model once.
- Vector search (filtered too) asks every shard for its top k and merges by score: the global top k,
  exactly what one collection returns for a flat index. Lexical search runs on one full-text index of
  all the shards' texts, kept beside them, so BM25 uses the whole collection's word statistics; hybrid
  search fuses the two exact rankings. Lexical, hybrid and vector results equal one collection's.
- Recommendations resolve their examples on the shards that hold them and search all shards.
- Outlier scores use neighbours from all shards (the neighbour search itself fans out), so an item's
  k-th neighbour distance is the one it has in the whole collection, not within its shard.
- A shard actor that dies is restarted by Ray and the call retried once; if that fails too, the call
  raises :class:`ShardError`: never a silently partial answer.

Install with ``pip install "latentsearch[distributed]"``. Shard folders live under the sharded
collection's folder; on a multi-node cluster that folder must be on storage every node can reach
(see the README), or each shard pinned to the node that holds it.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch import paths
from latentsearch.analysis.latent import LatentSpaceMethods
from latentsearch.analysis.outliers import OutlierMethods
from latentsearch.analysis.recommend import RecommendMethods
from latentsearch.errors import (
    ClusterUnavailableError,
    CollectionNotFoundError,
    ConflictError,
    InvalidInputError,
    ItemNotFoundError,
    LatentSearchError,
)
from latentsearch.limits import MAX_EF_SEARCH
from latentsearch.records import Hit, Item
from latentsearch.storage.store import Store

SHARDED_FILE = "sharded.json"
LEXICAL_DIR = "lexical"
ENCODER_ACTORS = 2
ProgressFn = Callable[[int, int], None]


class ShardError(LatentSearchError):
    """A shard actor failed and could not answer even after a retry."""


class NotOnShardsError(InvalidInputError, AttributeError):
    """An operation sharded collections do not offer yet (an AttributeError too, so hasattr works)."""


def shard_of(item_id: str, shards: int) -> int:
    """The shard of an item id: a stable hash (not Python's per-process ``hash``)."""
    return zlib.crc32(item_id.encode("utf-8")) % shards


def is_sharded(name: str, home: str | os.PathLike[str] | None = None) -> bool:
    """True when ``name`` is a sharded collection in the data directory."""
    return (paths.collection_dir(name, home) / SHARDED_FILE).exists()


def _ray(address: str | None) -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidInputError('sharded collections need Ray: pip install "latentsearch[distributed]"') from None
    if not ray.is_initialized():
        # Without an address, Ray reads RAY_ADDRESS, else starts a local instance in this process.
        where = address or os.environ.get("RAY_ADDRESS")
        _check_reachable(where)
        try:
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        except ConnectionError:  # "auto" with nothing running, or a cluster that is not there
            raise ClusterUnavailableError(_unreachable(where)) from None
        except ValueError as exc:  # an address Ray cannot use, e.g. ray:// without ray[client] installed
            raise ClusterUnavailableError(f"cannot use Ray address {where!r}: {str(exc).splitlines()[0]}") from None
    return ray


def _unreachable(where: str | None, reason: str = "") -> str:
    return (
        f"cannot reach a Ray cluster at {where!r}{reason}: start one with `ray start --head` (then --ray auto "
        "finds it on this machine), or give no Ray address to run on a local Ray started for this process"
    )


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail at once when a HOST:PORT (or ray://HOST:PORT) address does not answer: Ray itself retries
    such an address for minutes before giving up."""
    import socket

    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # not HOST:PORT: Ray decides
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterUnavailableError(_unreachable(address, f" ({exc.strerror or exc})")) from None


def _actor_classes(ray: Any) -> tuple[Any, Any]:
    """The actor classes, defined once Ray is imported (importing this module does not need Ray)."""
    global _SHARD, _ENCODER
    if "_SHARD" in globals():
        return _SHARD, _ENCODER

    @ray.remote(max_restarts=1, max_task_retries=1)
    class ShardActor:
        """One shard: a normal collection in this actor's process."""

        def __init__(self, folder: str, name: str) -> None:
            import latentsearch as ls

            self.col = ls.open(name, home=folder)

        def write(self, ids, texts, vectors, metadata, uris, upsert) -> int:
            write = self.col.upsert if upsert else self.col.add
            return write(ids, texts, vectors=vectors, metadata=metadata, uris=uris)

        def existing(self, ids) -> list[str]:
            return list(self.col.store.rowids_of(ids))

        def delete(self, ids) -> int:
            return self.col.delete(ids)

        def get(self, ids, with_vectors) -> list:
            return self.col.get(ids, with_vectors=with_vectors)

        def count(self) -> int:
            return self.col.count()

        def seq(self, vectors_only) -> int:
            return self.col.vectors_seq if vectors_only else self.col.seq

        def thumbnails(self, ids) -> dict:
            return self.col.thumbnails(ids)

        def matching_vectors(self, where) -> tuple[list[str], np.ndarray]:
            return self.col.matching_vectors(where)

        def update_metadata(self, updates) -> int:
            return self.col.update_metadata(updates)

        def compact(self) -> None:
            self.col.compact()

        def index_field(self, field, drop) -> bool:
            if drop:
                self.col.drop_field_index(field)
                return True
            return self.col.index_field(field)

        def knn(self, vectors, k, where, exclude, ef_search, nprobe) -> list:
            from latentsearch.search.engine import vector_hits

            return vector_hits(self.col, vectors, k, where, exclude, ef_search, nprobe)

        def vectors(self) -> tuple[list[str], np.ndarray]:
            items = self.col.items()
            ids = [it.id for it in items]
            return ids, self.col.vectors_of(ids) if ids else np.empty((0, self.col.dim), np.float32)

        def info(self) -> dict:
            return self.col.info()

        def save(self) -> None:
            self.col.save()

        def pid(self) -> int:
            return os.getpid()

    @ray.remote
    class EncoderActor:
        """Holds one encoder, loaded once, and encodes batches."""

        def __init__(self, spec: str) -> None:
            from latentsearch.encoders import get_encoder

            self.encoder = get_encoder(spec)

        def load(self) -> None:
            loader = getattr(self.encoder, "load", None)  # optional in the Encoder protocol
            if loader is not None:
                loader()

        def encode(self, batch) -> np.ndarray:
            return self.encoder.encode(batch)

    _SHARD, _ENCODER = ShardActor, EncoderActor
    return _SHARD, _ENCODER


class ShardedCollection(LatentSpaceMethods, OutlierMethods, RecommendMethods):
    """A collection split over shards held by Ray actors; create with :func:`create_sharded`."""

    read_only = False  # its shards may be read-only; the projection cache beside them is written

    def __init__(self, folder: Path, *, address: str | None = None) -> None:
        self.path = Path(folder)
        self.name = self.path.name
        try:
            self.config = json.loads((self.path / SHARDED_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{self.path / SHARDED_FILE} cannot be read: {exc}") from None
        self.ray = _ray(address)
        shard_cls, _ = _actor_classes(self.ray)
        self.shard_names = [f"shard-{i:02d}" for i in range(self.config["shards"])]
        self.actors = [shard_cls.remote(str(self.path), name) for name in self.shard_names]
        self._encoders: list[Any] | None = None
        self._scorer_cache: tuple[Any, Any] | None = None
        self.manifest = {k: self.config[k] for k in ("encoder", "dim", "metric", "index", "modality")}
        # One full-text index over every shard's texts, beside the shards: BM25's word statistics are then
        # those of the whole collection, so lexical and hybrid results equal one collection's.
        (self.path / LEXICAL_DIR).mkdir(exist_ok=True)
        self.lexical = Store(self.path / LEXICAL_DIR, create=True)

    # --- plumbing ----------------------------------------------------------------------------------

    @property
    def shards(self) -> int:
        return len(self.actors)

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def metric(self) -> str:
        return str(self.config["metric"])

    @property
    def encoder_name(self) -> str:
        return str(self.config["encoder"])

    def _get(self, refs: Any) -> Any:
        """Wait for actor calls; library errors pass through, a lost shard becomes a ShardError."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, LatentSearchError):
                raise type(cause)(*cause.args) from None
            raise ShardError(f"a shard of {self.name!r} failed: {str(exc).splitlines()[0]}") from None
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorDiedError) as exc:
            raise ShardError(
                f"a shard of {self.name!r} is gone and did not come back ({type(exc).__name__}): "
                "reopen the collection to restart its actors"
            ) from None

    def _encode(self, inputs: list[Any], progress: ProgressFn | None = None, batch_size: int = 64) -> np.ndarray:
        """Encode in parallel over a pool of encoder actors (each loads the model once)."""
        from ray.util import ActorPool

        if self.encoder_name == "precomputed":
            raise InvalidInputError("this collection stores precomputed vectors: pass vectors")
        batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        pool = ActorPool(self._encoder_actors())
        out, done = [], 0
        try:
            for vectors in pool.map(lambda actor, batch: actor.encode.remote(batch), batches):
                out.append(vectors)
                done += len(vectors)
                if progress:
                    progress(done, len(inputs))
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, LatentSearchError):
                raise type(cause)(*cause.args) from None
            raise
        return np.concatenate(out) if out else np.empty((0, self.dim), np.float32)

    def load_encoder(self, *, background: bool = False) -> None:
        """Start the encoder actors now (each loads the model once); with ``background``, do not wait."""
        if self.encoder_name == "precomputed":
            return
        loads = [actor.load.remote() for actor in self._encoder_actors()]
        if not background:
            self._get(loads)

    def _encoder_actors(self) -> list[Any]:
        if self._encoders is None:
            _, encoder_cls = _actor_classes(self.ray)
            self._encoders = [encoder_cls.remote(self.encoder_name) for _ in range(ENCODER_ACTORS)]
        return self._encoders

    def _query(self, query: Any) -> np.ndarray:
        if isinstance(query, str):
            return self.encode([query])
        return self.prepare_vectors(np.asarray(query, dtype=np.float32).reshape(1, -1))

    def prepare_vectors(self, vectors: Any, *, expected: int | None = None) -> np.ndarray:
        """Check vectors (shape, dimension, finite) and normalise them for cosine collections."""
        from latentsearch.collection import prepare_vectors

        return prepare_vectors(vectors, dim=self.dim, metric=self.metric, name=self.name, expected=expected)

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64, progress: ProgressFn | None = None) -> np.ndarray:
        """Encode inputs on the encoder actors, checked like user vectors."""
        return self.prepare_vectors(self._encode(list(inputs), progress, batch_size), expected=len(inputs))

    def _require(self, ids: Sequence[str], consequence: str) -> dict[int, list[int]]:
        """Positions of ``ids`` grouped by shard, once every id is known to exist (else one error)."""
        present = self.existing_ids(ids)
        missing = [i for i in ids if i not in present]
        if missing:
            raise ItemNotFoundError(f"unknown id {missing[0]!r} in collection {self.name!r}: {consequence}")
        return self._by_shard(ids)

    def _by_shard(self, ids: Sequence[str]) -> dict[int, list[int]]:
        if isinstance(ids, str) or not all(isinstance(i, str) and i.strip() for i in ids):
            raise InvalidInputError("ids must be a list of non-empty strings")
        groups: dict[int, list[int]] = {}
        for position, item_id in enumerate(ids):
            groups.setdefault(shard_of(item_id, self.shards), []).append(position)
        return groups

    # --- writes ------------------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        *,
        vectors: Any = None,
        metadata: Sequence[dict] | None = None,
        uris: Sequence[str] | None = None,
        upsert: bool = False,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> int:
        """Add items (encoded in parallel), each to its shard; every id is checked first, so a duplicate
        changes nothing. Each shard writes its part in one transaction."""
        from latentsearch.collection import _check_ids, _check_metadata, _check_texts

        ids = _check_ids(ids)  # every check of a single collection's add, before any shard writes
        if not ids:
            return 0
        texts_list = _check_texts("texts", texts, len(ids))
        meta = _check_metadata(metadata, len(ids))
        uris_list = _check_texts("uris", uris, len(ids))
        if vectors is None and texts_list is None:
            raise InvalidInputError(
                f"sharded collection {self.name!r} takes texts or vectors; images are not available on shards yet"
            )
        groups = self._by_shard(ids)
        if not upsert:
            present = self.existing_ids(ids)
            existing = [i for i in ids if i in present]
            if existing:
                raise ConflictError(f"id {existing[0]!r} already exists ({len(existing)} do): use upsert")
        matrix = (
            self.prepare_vectors(vectors)
            if vectors is not None
            else self._encode(list(texts_list), progress, batch_size)
        )
        if len(matrix) != len(ids):
            raise InvalidInputError(f"got {len(matrix)} vectors for {len(ids)} items")
        refs = [
            self.actors[s].write.remote(
                [ids[p] for p in ps],
                [texts_list[p] for p in ps] if texts_list else None,
                matrix[ps],
                [meta[p] for p in ps],
                [uris_list[p] for p in ps] if uris_list else None,
                upsert,
            )
            for s, ps in groups.items()
        ]
        added = int(sum(self._get(refs)))
        self._mirror_texts(ids, texts_list, uris_list, meta, upsert)
        return added

    def _mirror_texts(
        self, ids: list[str], texts: list[Any] | None, uris: list[Any] | None, meta: list[dict], upsert: bool
    ) -> None:
        """Keep the shared full-text index in step with the shards (texts only; no vectors)."""
        stale = list(self.lexical.rowids_of(ids)) if upsert else []
        if stale and texts is None:
            self.lexical.delete(stale)
        if texts is None:
            return
        n = len(ids)
        self.lexical.insert(
            ids, ["text"] * n, texts, uris or [None] * n, meta, np.zeros((n, 0), np.float32), upsert=upsert
        )

    def upsert(self, ids: Sequence[str], texts: Sequence[str] | None = None, **options: Any) -> int:
        """Add items, replacing existing ids."""
        return self.add(ids, texts, upsert=True, **options)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete items by id; an unknown id is an error and deletes nothing."""
        ids = list(dict.fromkeys(ids))
        groups = self._require(ids, "nothing was deleted")
        deleted = int(sum(self._get([self.actors[s].delete.remote([ids[p] for p in ps]) for s, ps in groups.items()])))
        indexed = list(self.lexical.rowids_of(ids))
        if indexed:
            self.lexical.delete(indexed)
        return deleted

    # --- reads -------------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of items over all shards."""
        return int(sum(self._get([a.count.remote() for a in self.actors])))

    @property
    def seq(self) -> int:
        """A change sequence for the whole collection: the sum of the shards' (each only grows)."""
        return int(sum(self._get([a.seq.remote(False) for a in self.actors])))

    @property
    def vectors_seq(self) -> int:
        """Like :attr:`seq`, moved only by writes of vectors (the sum of the shards')."""
        return int(sum(self._get([a.seq.remote(True) for a in self.actors])))

    def matching_vectors(self, where: Any = None) -> tuple[list[str], np.ndarray]:
        """Ids and vectors of the items matching ``where``, gathered from every shard (shard by shard)."""
        from latentsearch.storage.filters import compile_filter

        compile_filter(where)  # checked once here, before it is sent to every shard
        parts = self._get([a.matching_vectors.remote(where) for a in self.actors])
        ids = [i for part_ids, _ in parts for i in part_ids]
        return ids, np.concatenate([v for _, v in parts]) if parts else np.empty((0, self.dim), np.float32)

    def update_metadata(self, updates: Any) -> int:
        """Merge fields into items' metadata by id; see :meth:`Collection.update_metadata`."""
        from latentsearch.collection import check_metadata_updates

        ids, fields = check_metadata_updates(updates)  # every check before the first shard writes
        if not ids:
            return 0
        groups = self._require(ids, "nothing was updated")
        calls = [self.actors[s].update_metadata.remote({ids[p]: fields[p] for p in ps}) for s, ps in groups.items()]
        updated = int(sum(self._get(calls)))
        # The shared full-text index filters lexical search by metadata too: keep its copy the same.
        rowids, by_id = self.lexical.rowids_of(ids), dict(zip(ids, fields))
        if rowids:
            self.lexical.update_metadata({rowids[i]: by_id[i] for i in rowids})
        return updated

    def search_batch(
        self,
        queries: Any,
        *,
        k: int = 10,
        where: Any = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """Vector search for many queries (an (n, dim) array or a list of texts), merged over the shards."""
        from latentsearch.search.engine import check_k, is_text_batch

        k = check_k(k)
        vectors = self.encode(queries) if is_text_batch(queries) else self.prepare_vectors(queries)
        return self._knn(vectors, k, where, exclude, ef_search, nprobe)

    def compact(self, *, progress: ProgressFn | None = None) -> None:
        """Rebuild every shard's FAISS index from its SQLite file, in parallel."""
        self._get([a.compact.remote() for a in self.actors])
        if progress:
            progress(self.shards, self.shards)

    def index_field(self, field: str) -> bool:
        """Index a metadata field on every shard; see :meth:`Collection.index_field`."""
        return any(self._get([a.index_field.remote(field, False) for a in self.actors]))

    def drop_field_index(self, field: str) -> None:
        """Drop a metadata field's index on every shard."""
        self._get([a.index_field.remote(field, True) for a in self.actors])

    def get(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Item]:
        """Items by id, in the order given."""
        groups = self._by_shard(list(ids))
        parts = self._get([self.actors[s].get.remote([ids[p] for p in ps], with_vectors) for s, ps in groups.items()])
        out: list[Item | None] = [None] * len(ids)
        for (_, positions), items in zip(groups.items(), parts):
            for p, item in zip(positions, items):
                out[p] = item
        return out  # type: ignore[return-value]

    def thumbnails(self, ids: Sequence[str]) -> dict[str, bytes]:
        """JPEG thumbnails of image items by id, from their shards."""
        groups = self._by_shard(list(ids))
        parts = self._get([self.actors[s].thumbnails.remote([ids[p] for p in ps]) for s, ps in groups.items()])
        return {item_id: thumb for part in parts for item_id, thumb in part.items()}

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors by id."""
        return np.stack([item.vector for item in self.get(ids, with_vectors=True)])

    def info(self) -> dict[str, Any]:
        """Settings and per-shard sizes."""
        infos = self._get([a.info.remote() for a in self.actors])
        return {
            **self.manifest,
            "name": self.name,
            "path": str(self.path),
            "shards": self.shards,
            "count": sum(i["count"] for i in infos),
            "shard_counts": [i["count"] for i in infos],
            "field_indexes": infos[0]["field_indexes"],
        }

    # --- search ------------------------------------------------------------------------------------

    def _knn(
        self,
        vectors: np.ndarray,
        k: int,
        where: Any = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """Global top k per query: every shard's top k, merged by score."""
        from latentsearch.search.engine import check_tuning
        from latentsearch.storage.filters import compile_filter

        ef_search, nprobe = check_tuning(ef_search, nprobe)  # refused here, not in every shard
        compile_filter(where)  # and a bad filter too: one too deep could not even be sent to them
        parts = self._get([a.knn.remote(vectors, k, where, list(exclude), ef_search, nprobe) for a in self.actors])
        merged = []
        for q in range(len(vectors)):
            candidates = [hit for part in parts for hit in part[q]]
            candidates.sort(key=lambda hit: (-hit.score, hit.id))
            merged.append(candidates[:k])
        return merged

    def search(
        self,
        query: Any = None,
        *,
        k: int = 10,
        where: Any = None,
        like: str | None = None,
        mode: str = "vector",
        fusion: str = "rrf",
        alpha: float = 0.5,
        rrf_k: int = 60,
        explain: bool = False,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[Hit]:
        """Search all shards and merge: the same arguments and results as :meth:`Collection.search`."""
        from latentsearch.search.engine import SNIPPET_MARKS, SNIPPET_TOKENS, check_request, explain_hits, fuse
        from latentsearch.storage.fulltext import fts_query

        k, mode = check_request(query, like, k, mode, fusion, alpha, rrf_k)
        exclude = [like] if like else []
        text = query if isinstance(query, str) else None
        if like is not None:
            item = self.get([like], with_vectors=True)[0]
            vector, text = self.prepare_vectors(item.vector[None, :]), item.text
        depth = k if mode != "hybrid" else max(k, 100)
        rankings: dict[str, list[Hit]] = {}
        if mode in ("vector", "hybrid"):
            vector = vector if like is not None else self._query(query)
            rankings["vector"] = self._knn(vector, depth, where, exclude, ef_search, nprobe)[0]
        if mode in ("lexical", "hybrid"):
            rankings["lexical"] = self._lexical(text or "", depth, where, like)
        by_id = {h.id: h for ranking in rankings.values() for h in ranking}
        keyed = {name: [(h.id, h.score) for h in hits] for name, hits in rankings.items()}
        ranked = fuse(keyed, fusion=fusion, alpha=alpha, rrf_k=rrf_k)[:k] if mode == "hybrid" else keyed[mode][:k]
        hits = [Hit(**{**by_id[item_id].__dict__, "score": score}) for item_id, score in ranked]
        match = fts_query(text) if text else None
        if match and hits:  # snippets from the shared full-text index, as one collection gives them
            rowids = self.lexical.rowids_of([h.id for h in hits])
            found = self.lexical.snippets(match, list(rowids.values()), SNIPPET_MARKS, SNIPPET_TOKENS)
            for hit in hits:
                hit.snippet = found.get(rowids.get(hit.id, -1))
        if explain:
            explain_hits(hits, ranked, keyed, mode)
        return hits

    def _lexical(self, text: str, k: int, where: Any, exclude: str | None) -> list[Hit]:
        """BM25 over the shared full-text index (the whole collection's statistics)."""
        from latentsearch.storage.filters import compile_filter
        from latentsearch.storage.fulltext import fts_query

        match = fts_query(text)
        if match is None:
            return []
        sql, params = compile_filter(where)
        skip = self.lexical.rowids_of([exclude]).get(exclude) if exclude else None
        ranked = self.lexical.lexical_search(match, k, sql, params, skip)
        rows = self.lexical.rows_by_rowid([r for r, _ in ranked])
        return [
            Hit(id=rows[r]["id"], score=s, text=rows[r]["text"], uri=rows[r]["uri"], metadata=rows[r]["metadata"])
            for r, s in ranked
        ]

    # Learned users live beside the shards, in the driver's store (with the shared full-text index):
    # a user's vector is one row, read on each recommendation, not spread over shards.
    def user_profile(self, user: str) -> tuple[np.ndarray | None, list[Any]]:
        """A learned user's vector and history; see :meth:`Collection.user_profile`."""
        return self.lexical.get_user(user)

    def put_users(self, users: Sequence[tuple[str, np.ndarray, list[Any]]], *, replace_all: bool = False) -> None:
        """Store learned users (``fit_interactions(..., shards=N)`` does)."""
        self.lexical.put_users(users, replace_all=replace_all)

    def user_count(self) -> int:
        """Number of learned users."""
        return self.lexical.user_count()

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are in the collection."""
        ids = list(ids)
        groups = self._by_shard(ids)
        found = self._get([self.actors[s].existing.remote([ids[p] for p in ps]) for s, ps in groups.items()])
        return {i for part in found for i in part}

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
        """A scorer fitted on every shard's vectors, neighbours searched across all shards (cached until
        the collection changes); see :meth:`Collection.outlier_scorer`."""
        from latentsearch.analysis.outliers import FitData, make_scorer

        if method == "reconstruction":
            raise InvalidInputError("reconstruction scores are not available on sharded collections yet")
        key = (method, k, contamination, percentile, fpr, self.seq)
        if self._scorer_cache is not None and self._scorer_cache[0] == key:
            return self._scorer_cache[1]
        scorer = make_scorer(method, k=k, contamination=contamination, percentile=percentile, fpr=fpr)
        ids, vectors = self.matching_vectors()
        if len(ids) < 3:
            raise InvalidInputError(f"{self.name!r} has fewer than 3 items: too few to score outliers")
        position = {i: n for n, i in enumerate(ids)}

        def search(x: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
            hits = self._knn(np.asarray(x, dtype=np.float32), kk, ef_search=min(max(128, 2 * kk), MAX_EF_SEARCH))
            dists = np.full((len(x), kk), np.inf, dtype=np.float32)
            pos = np.full((len(x), kk), -1, dtype=np.int64)
            for q, row in enumerate(hits):
                for j, h in enumerate(row):
                    pos[q, j] = position[h.id]
                    dists[q, j] = np.sqrt(max(2 - 2 * h.score, 0)) if self.metric == "cosine" else -h.score
            return dists, pos

        scorer.fit(FitData(vectors, ids, search), progress=progress)
        self._scorer_cache = (key, scorer)
        return scorer

    def resize(self, shards: int, *, progress: ProgressFn | None = None) -> int:
        """Change the number of shards and move every item whose shard changes; returns items moved.

        Each move writes the item to its new shard before deleting it from the old one, so an
        interruption leaves an item in two shards (found and fixed by running resize again), never in none.
        """
        from latentsearch.collection import create

        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise InvalidInputError(f"shards must be a whole number >= 1, got {shards!r}")
        shard_cls, _ = _actor_classes(self.ray)
        for i in range(self.shards, shards):
            name = f"shard-{i:02d}"
            if not (self.path / name).exists():
                create(
                    name,
                    encoder=self.encoder_name,
                    index=self.config["index"],
                    metric=self.metric,
                    dim=self.dim if self.encoder_name == "precomputed" else None,
                    home=self.path,
                ).close()
            self.actors.append(shard_cls.remote(str(self.path), name))
            self.shard_names.append(name)
        moved, total = 0, self.count()
        for source in range(len(self.actors)):
            items = self._get(self.actors[source].vectors.remote())[0]
            leaving = [i for i in items if shard_of(i, shards) != source]
            if not leaving:
                continue
            full = self._get(self.actors[source].get.remote(leaving, True))
            for target in sorted({shard_of(i, shards) for i in leaving}):
                batch = [it for it in full if shard_of(it.id, shards) == target]
                texts = [it.text for it in batch]
                self._get(
                    self.actors[target].write.remote(
                        [it.id for it in batch],
                        texts if any(t is not None for t in texts) else None,
                        np.stack([it.vector for it in batch]),
                        [it.metadata for it in batch],
                        [it.uri for it in batch] if any(it.uri for it in batch) else None,
                        True,
                    )
                )
            self._get(self.actors[source].delete.remote(leaving))
            moved += len(leaving)
            if progress:
                progress(moved, total)
        for actor in self.actors[shards:]:  # shrinking: the emptied shards go
            self.ray.kill(actor)
        self.actors, self.shard_names = self.actors[:shards], self.shard_names[:shards]
        self.config["shards"] = shards
        (self.path / SHARDED_FILE).write_text(json.dumps(self.config, indent=2))
        return moved

    def save(self) -> None:
        """Checkpoint every shard's index."""
        self._get([a.save.remote() for a in self.actors])

    def close(self) -> None:
        """Checkpoint the shards that are alive and stop every actor (SQLite already holds all writes)."""
        import logging

        for name, actor in zip(self.shard_names, self.actors):
            try:
                self._get(actor.save.remote())
            except ShardError:
                logging.getLogger("latentsearch").warning("%s of %s could not checkpoint its index", name, self.name)
        for actor in self.actors + (self._encoders or []):
            self.ray.kill(actor)
        self.lexical.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotOnShardsError(
            f"{name} is not available on sharded collections yet; it works on a single-machine collection"
        )

    def __enter__(self) -> ShardedCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()


def create_sharded(
    name: str,
    *,
    shards: int,
    encoder: str = "minilm",
    index: str = "auto",
    metric: str = "cosine",
    dim: int | None = None,
    home: str | os.PathLike[str] | None = None,
    address: str | None = None,
) -> ShardedCollection:
    """Create a collection split into ``shards`` normal collections held by Ray actors."""
    from latentsearch.collection import publish

    tmp = new_sharded_folder(name, shards=shards, encoder=encoder, index=index, metric=metric, dim=dim, home=home)
    try:
        _ray(address)  # a cluster that cannot be reached is refused before the collection appears
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    folder = paths.collection_dir(name, home)
    publish(tmp, folder)
    return ShardedCollection(folder, address=address)


def new_sharded_folder(
    name: str,
    *,
    shards: int,
    encoder: str = "minilm",
    index: str = "auto",
    metric: str = "cosine",
    dim: int | None = None,
    home: str | os.PathLike[str] | None = None,
    replacing: bool = False,
) -> Path:
    """Make an empty sharded collection (its shards and ``sharded.json``) in a hidden work folder of the
    data directory, ``.NAME.creating-PID``, for :func:`latentsearch.collection.publish` to rename into
    place: a crash while creating (or filling, for ``fit_interactions``) leaves nothing under the name.
    ``replacing``: the name may exist (the caller publishes with ``replace``)."""
    from latentsearch.collection import _remove_stale_work_folders, check_settings, create
    from latentsearch.limits import MAX_SHARDS, check_int

    shards = check_int("shards", shards, 1, MAX_SHARDS)
    folder = paths.collection_dir(name, home)
    if folder.exists() and not replacing:
        raise ConflictError(f"collection {name!r} already exists in {folder.parent}")
    check_settings(encoder=encoder, index=index, metric=metric, dim=dim)  # before any folder exists
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_folders(folder)
    tmp = folder.with_name(f".{name}.creating-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        first: dict[str, Any] = {}
        for i in range(shards):
            col = create(f"shard-{i:02d}", encoder=encoder, index=index, metric=metric, dim=dim, home=tmp)
            first = first or {"dim": col.dim, "modality": col.manifest.get("modality")}
            col.close()
        config = {
            "format": "latentsearch-sharded",
            "version": 1,
            "shards": shards,
            "encoder": encoder,
            "index": index,
            "metric": metric,
            **first,
        }
        (tmp / SHARDED_FILE).write_text(json.dumps(config, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a killed process leaves it to the next create
        raise
    return tmp


def open_sharded(
    name: str, *, home: str | os.PathLike[str] | None = None, address: str | None = None
) -> ShardedCollection:
    """Open a sharded collection (connecting to Ray at ``address``, or starting a local Ray)."""
    folder = paths.collection_dir(name, home)
    if not (folder / SHARDED_FILE).exists():
        raise CollectionNotFoundError(f"sharded collection {name!r} not found in {folder.parent}")
    return ShardedCollection(folder, address=address)


def describe_offline(name: str, *, home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Encoder, dimension, shard count and items of a sharded collection, read from its files (no Ray)."""
    from latentsearch.collection import open_collection

    folder = paths.collection_dir(name, home)
    config = json.loads((folder / SHARDED_FILE).read_text())
    count = 0
    for i in range(config["shards"]):
        shard = open_collection(f"shard-{i:02d}", home=folder)
        count += shard.count()
        shard.store.close()
    return {
        "name": name,
        "count": count,
        "encoder": config["encoder"],
        "dim": config["dim"],
        "shards": config["shards"],
    }
