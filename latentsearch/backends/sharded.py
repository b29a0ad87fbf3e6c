"""The sharded backend: a collection spread over N shards, each a local backend held by a Ray actor.

- Items go to shard ``crc32(id) % N`` (stable across processes and machines).
- Encoding fans out to a pool of encoder actors, each loading the model once.
- Vector search (filtered too) asks every shard for its top k and merges by score: the global top k,
  exactly what one collection returns for a flat index. Lexical search runs on one full-text index of
  all the shards' texts, kept beside them, so BM25 uses the whole collection's word statistics.
- Learned users live beside the shards too, in that same driver-side store: one row per user.
- A shard actor that dies is restarted by Ray and the call retried once; if that fails too, the call
  raises :class:`ShardError`: never a silently partial answer.

Keys in rankings are :class:`ShardKey` objects: the item's id, carrying the hit the shard already
read, so merged results need no second round trip. Install with ``pip install
"latentsearch[distributed]"``. Shard folders live under the collection's folder; on a multi-node
cluster that folder must be on storage every node can reach (see the README).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import uuid
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch import paths
from latentsearch.backends import SHARDED_FILE
from latentsearch.backends.base import PassageSpan, ProgressFn, Ranking, VectorTable, WriteBatch, nearest_by_knn
from latentsearch.backends.local import LocalBackend, lexical_ranking, read_hits
from latentsearch.errors import ClusterUnavailableError, InvalidInputError, LatentSearchError
from latentsearch.fileio import fsync_replace
from latentsearch.limits import MAX_EF_SEARCH, MAX_SHARDS, check_int
from latentsearch.records import DEFAULT_INCLUDE, Hit, Item
from latentsearch.storage.store import Store

LEXICAL_DIR = "lexical"
ENCODER_ACTORS = 2

log = logging.getLogger("latentsearch")


class ShardError(LatentSearchError):
    """A shard actor failed and could not answer even after a retry."""


def shard_of(item_id: str, shards: int) -> int:
    """The shard of an item id: a stable hash (not Python's per-process ``hash``)."""
    return zlib.crc32(item_id.encode("utf-8")) % shards


def shard_name(i: int) -> str:
    """The folder of shard ``i``."""
    return f"shard-{i:02d}"


def is_sharded_folder(folder: Path) -> bool:
    """True when ``folder`` holds a sharded collection."""
    return (folder / SHARDED_FILE).is_file()


def is_sharded(name: str, home: str | os.PathLike[str] | None = None) -> bool:
    """True when ``name`` is a sharded collection in the data directory."""
    return is_sharded_folder(paths.collection_dir(name, home))


class ShardKey:
    """A ranking key on shards: equal (and hashing) by item id, carrying the hit read by its shard."""

    __slots__ = ("hit", "id")

    def __init__(self, hit: Hit) -> None:
        self.id, self.hit = hit.id, hit

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShardKey) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"ShardKey({self.id!r})"


# --- Ray ---------------------------------------------------------------------------------------------


def connect_ray(address: str | None) -> Any:
    """The ``ray`` module, initialised: connected to ``address`` (or ``$RAY_ADDRESS``), else a local Ray
    started for this process. A cluster that cannot be reached is one :class:`ClusterUnavailableError`."""
    try:
        import ray
    except ImportError:
        raise InvalidInputError('sharded collections need Ray: pip install "latentsearch[distributed]"') from None
    if not ray.is_initialized():
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
        """One shard: a local backend in this actor's process, answering the Backend protocol."""

        def __init__(self, folder: str) -> None:
            self.backend = LocalBackend(Path(folder))

        def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.backend, method)(*args, **kwargs)

        def knn_hits(self, *args: Any) -> tuple[list[list[Hit]], list[np.ndarray]]:
            """The shard's top k for each query, already read (one round trip), and the scores of the
            passages each query ranked here."""
            rankings, scores = self.backend.knn_passages(*args)
            return [[h for h in hits if h is not None] for hits in self.backend.hits(rankings)], scores

        def items(self, with_vectors: bool = False) -> list[Item]:
            return list(self.backend.iter_items(with_vectors=with_vectors))

        def vector_rows(self) -> tuple[list[str], np.ndarray, list[str | None]]:
            table = self.backend.vector_table()
            return table.ids, table.vectors, table.uris

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

        def encode(self, batch: list[Any]) -> np.ndarray:
            return self.encoder.encode(batch)

    _SHARD, _ENCODER = ShardActor, EncoderActor
    return _SHARD, _ENCODER


def _unwrap(ray: Any, exc: Exception, name: str) -> Exception:
    """A library error raised in an actor, as itself; anything else as a ShardError."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.as_instanceof_cause()
        if isinstance(cause, LatentSearchError):
            return type(cause)(*cause.args)
        return ShardError(f"a shard of {name!r} failed: {str(exc).splitlines()[0]}")
    return ShardError(
        f"a shard of {name!r} is gone and did not come back ({type(exc).__name__}): "
        "reopen the collection to restart its actors"
    )


class ActorEncoderPool:
    """Encoding over a pool of Ray actors, each holding the model once."""

    def __init__(self, ray: Any, spec: str, name: str) -> None:
        self.ray, self.spec, self.name = ray, spec, name
        self._actors: list[Any] | None = None

    def actors(self) -> list[Any]:
        if self._actors is None:
            _, encoder_cls = _actor_classes(self.ray)
            self._actors = [encoder_cls.remote(self.spec) for _ in range(ENCODER_ACTORS)]
        return self._actors

    def load(self, *, background: bool = False) -> None:
        loads = [actor.load.remote() for actor in self.actors()]
        if not background:
            self._wait(loads)

    def _wait(self, refs: Any) -> Any:
        try:
            return self.ray.get(refs)
        except (self.ray.exceptions.RayTaskError, self.ray.exceptions.RayActorError) as exc:
            raise _unwrap(self.ray, exc, self.name) from None

    def encode(self, inputs: list[Any], *, batch_size: int, progress: ProgressFn | None) -> np.ndarray:
        from ray.util import ActorPool

        if self.spec == "precomputed":
            raise InvalidInputError("this collection stores precomputed vectors: pass vectors")
        batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        out, done = [], 0
        try:
            for vectors in ActorPool(self.actors()).map(lambda actor, batch: actor.encode.remote(batch), batches):
                out.append(vectors)
                done += len(vectors)
                if progress:
                    progress(done, len(inputs))
        except (self.ray.exceptions.RayTaskError, self.ray.exceptions.RayActorError) as exc:
            raise _unwrap(self.ray, exc, self.name) from None
        return np.concatenate(out) if out else np.empty((0, 0), np.float32)

    def close(self) -> None:
        for actor in self._actors or []:
            self.ray.kill(actor)


# --- the backend ---------------------------------------------------------------------------------


class ShardedBackend:
    """Shards held by Ray actors (see the module docstring)."""

    def __init__(self, folder: Path, *, address: str | None = None) -> None:
        self.path = Path(folder)
        self.name = self.path.name
        try:
            self.config = json.loads((self.path / SHARDED_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{self.path / SHARDED_FILE} cannot be read: {exc}") from None
        self.manifest: dict[str, Any] = {
            k: self.config.get(k)
            for k in ("encoder", "weights_hash", "dim", "metric", "index", "modality", "created_at")
        }
        if self.config.get("search"):  # a tuned fusion (see write_manifest)
            self.manifest["search"] = self.config["search"]
        self.ray = connect_ray(address)
        shard_cls, _ = _actor_classes(self.ray)
        self.shard_names = [shard_name(i) for i in range(self.config["shards"])]
        self.actors = [shard_cls.remote(str(self.path / name)) for name in self.shard_names]
        self.pool = ActorEncoderPool(self.ray, str(self.config["encoder"]), self.name)
        # One full-text index over every shard's texts, beside the shards: BM25's word statistics are then
        # those of the whole collection, so lexical and hybrid results equal one collection's.
        (self.path / LEXICAL_DIR).mkdir(exist_ok=True)
        self.lexical_store = Store(self.path / LEXICAL_DIR, create=True)
        self.lexical_store.upgrade()  # one made before passages: its full text moves to them

    @staticmethod
    def create(folder: Path, manifest: dict[str, Any], *, shards: int) -> None:
        """Make an empty sharded collection in ``folder``: its shards and ``sharded.json``."""
        shards = check_int("shards", shards, 1, MAX_SHARDS)
        for i in range(shards):
            LocalBackend.create(folder / shard_name(i), {**manifest, "collection_id": uuid.uuid4().hex})
        keys = ("encoder", "weights_hash", "index", "metric", "dim", "modality", "created_at")
        config = {"format": "latentsearch-sharded", "version": 1, "shards": shards, **{k: manifest[k] for k in keys}}
        (folder / SHARDED_FILE).write_text(json.dumps(config, indent=2))

    @property
    def read_only(self) -> bool:
        return False  # its shards may be read-only; the projection cache beside them is written

    @property
    def shards(self) -> int:
        return len(self.actors)

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    def _get(self, refs: Any) -> Any:
        """Wait for actor calls; library errors pass through, a lost shard becomes a ShardError."""
        try:
            return self.ray.get(refs)
        except (
            self.ray.exceptions.RayTaskError,
            self.ray.exceptions.RayActorError,
            self.ray.exceptions.ActorDiedError,
        ) as exc:
            raise _unwrap(self.ray, exc, self.name) from None

    def _all(self, method: str, *args: Any) -> list[Any]:
        """Call a backend method on every shard, in parallel."""
        return self._get([actor.call.remote(method, *args) for actor in self.actors])

    def _by_shard(self, ids: Sequence[str]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for position, item_id in enumerate(ids):
            groups.setdefault(shard_of(item_id, self.shards), []).append(position)
        return groups

    def _routed(self, method: str, ids: list[str], **options: Any) -> list[Any]:
        """Call a backend method on each shard with its share of ``ids``."""
        groups = self._by_shard(ids)
        return self._get(
            [self.actors[s].call.remote(method, [ids[p] for p in ps], **options) for s, ps in groups.items()]
        )

    def prepare_search(self) -> None:
        """Nothing to open here: each shard opens its own index."""

    def without_writes(self) -> contextlib.AbstractContextManager[Any]:
        """Nothing to hold off here: each shard's actor runs its calls one at a time."""
        return contextlib.nullcontext()

    def encoder_pool(self) -> ActorEncoderPool:
        return self.pool

    # --- writes ------------------------------------------------------------------------------------

    def write(self, batch: WriteBatch, *, upsert: bool) -> int:
        groups = self._by_shard(batch.ids)
        refs = [self.actors[s].call.remote("write", batch.subset(ps), upsert=upsert) for s, ps in groups.items()]
        written = int(sum(self._get(refs)))
        self._mirror_texts(batch, upsert)
        return written

    def _mirror_texts(self, batch: WriteBatch, upsert: bool) -> None:
        """Keep the shared full-text index in step with the shards (texts only; no vectors)."""
        has_text = any(t is not None for t in batch.texts)
        stale = list(self.lexical_store.rowids_of(batch.ids)) if upsert else []
        if stale and not has_text:
            self.lexical_store.delete(stale)
        if not has_text:
            return
        n = len(batch.ids)
        self.lexical_store.insert(
            batch.ids,
            batch.kinds,
            batch.texts,
            batch.uris,
            batch.metadata,
            np.zeros((n, 0), np.float32),
            upsert=upsert,
            passages=batch.passages,  # the spans only: full text needs no vectors
        )

    def delete(self, ids: list[str]) -> int:
        deleted = int(sum(self._routed("delete", ids)))
        indexed = list(self.lexical_store.rowids_of(ids))
        if indexed:
            self.lexical_store.delete(indexed)
        return deleted

    def update_metadata(self, updates: dict[str, dict[str, Any]]) -> int:
        groups = self._by_shard(list(updates))
        ids = list(updates)
        calls = [
            self.actors[s].call.remote("update_metadata", {ids[p]: updates[ids[p]] for p in ps})
            for s, ps in groups.items()
        ]
        updated = int(sum(self._get(calls)))
        # The shared full-text index filters lexical search by metadata too: keep its copy the same.
        rowids = self.lexical_store.rowids_of(ids)
        if rowids:
            self.lexical_store.update_metadata({rowids[i]: updates[i] for i in rowids})
        return updated

    def put_users(self, users: Sequence[tuple[str, np.ndarray, list[Any]]], *, replace_all: bool = False) -> None:
        self.lexical_store.put_users(users, replace_all=replace_all)

    # --- reads -------------------------------------------------------------------------------------

    def count(self) -> int:
        return int(sum(self._all("count")))

    def seq(self) -> int:
        """The sum of the shards' change sequences (each only grows)."""
        return int(sum(self._all("seq")))

    def vectors_seq(self) -> int:
        return int(sum(self._all("vectors_seq")))

    def existing(self, ids: list[str]) -> set[str]:
        return {i for part in self._routed("existing", ids) for i in part}

    def get(self, ids: list[str], *, with_vectors: bool = False) -> dict[str, Item]:
        return {k: v for part in self._routed("get", ids, with_vectors=with_vectors) for k, v in part.items()}

    def vectors_of(self, ids: list[str]) -> dict[str, np.ndarray]:
        return {k: v for part in self._routed("vectors_of", ids) for k, v in part.items()}

    def matching_vectors(self, where: Any = None) -> tuple[list[str], np.ndarray]:
        parts = self._all("matching_vectors", where)
        ids = [i for part_ids, _ in parts for i in part_ids]
        return ids, np.concatenate([v for _, v in parts]) if parts else np.empty((0, self.dim), np.float32)

    def iter_items(self, *, with_vectors: bool = False) -> Iterator[Item]:
        for actor in self.actors:  # shard by shard: one shard's items in memory at a time
            yield from self._get(actor.items.remote(with_vectors))

    def thumbnails(self, ids: list[str]) -> dict[str, bytes]:
        return {k: v for part in self._routed("thumbnails", ids) for k, v in part.items()}

    def passages(self, ids: list[str]) -> dict[str, list[PassageSpan]]:
        return {k: v for part in self._routed("passages", ids) for k, v in part.items()}

    def passage_count(self) -> int:
        return int(sum(self._all("passage_count")))

    def search_plan(self) -> str | None:
        return None  # each shard plans its own part; their plans stay on the shards

    def passage_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        return {k: v for part in self._routed("passage_vectors", ids) for k, v in part.items()}

    def write_manifest(self, values: dict[str, Any]) -> None:
        """Kept in ``sharded.json``, written whole to a temporary file and renamed over it."""
        config = {k: v for k, v in {**self.config, **values}.items() if v is not None}
        tmp = self.path / (SHARDED_FILE + ".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        fsync_replace(tmp, self.path / SHARDED_FILE)
        self.config = config
        for key, value in values.items():
            if value is None:
                self.manifest.pop(key, None)
            else:
                self.manifest[key] = value

    def user(self, user: str) -> tuple[np.ndarray | None, list[Any]]:
        return self.lexical_store.get_user(user)

    def user_count(self) -> int:
        return self.lexical_store.user_count()

    def vector_table(self) -> VectorTable:
        """Every shard's vectors, and a neighbour search that fans out to all shards, so an item's
        k-th neighbour is the one it has in the whole collection, not within its shard."""
        parts = self._get([actor.vector_rows.remote() for actor in self.actors])
        ids = [i for part_ids, _, _ in parts for i in part_ids]
        vectors = np.concatenate([v for _, v, _ in parts]) if parts else np.empty((0, self.dim), np.float32)
        uris = [u for _, _, part_uris in parts for u in part_uris]
        if self.config["metric"] == "ip" or self.passage_count() > len(ids):
            # Raw inner products are no distances; a search of passages gives none between documents.
            return VectorTable(ids, vectors, uris, None)
        position = {item_id: n for n, item_id in enumerate(ids)}
        cosine = self.config["metric"] == "cosine"

        def search(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            rankings = self.knn(np.asarray(x, dtype=np.float32), k, ef_search=min(max(128, 2 * k), MAX_EF_SEARCH))
            dists = np.full((len(x), k), np.inf, dtype=np.float32)
            pos = np.full((len(x), k), -1, dtype=np.int64)
            for q, ranking in enumerate(rankings):
                for j, (key, score) in enumerate(ranking):
                    pos[q, j] = position[key.id]
                    dists[q, j] = np.sqrt(max(2 - 2 * score, 0)) if cosine else -score
            return dists, pos

        return VectorTable(ids, vectors, uris, search)

    # --- ranking -----------------------------------------------------------------------------------

    def knn(
        self,
        vectors: np.ndarray,
        k: int,
        where: Any = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[Ranking]:
        """Global top k per query: every shard's top k, merged by score (ties by id). A hit's passage rank
        becomes its rank among every shard's passages, as one collection counts it."""
        parts = self._get([a.knn_hits.remote(vectors, k, where, list(exclude), ef_search, nprobe) for a in self.actors])
        merged: list[Ranking] = []
        for q in range(len(vectors)):
            candidates = sorted((hit for hits, _ in parts for hit in hits[q]), key=lambda hit: (-hit.score, hit.id))
            top = candidates[:k]
            for hit in top:
                if hit.passage is not None and hit.passage.score is not None:
                    above = sum(int(np.sum(scores[q] > hit.passage.score)) for _, scores in parts)
                    hit.passage.rank = above + 1
            merged.append([(ShardKey(hit), hit.score) for hit in top])
        return merged

    def nearest(
        self,
        vectors: np.ndarray,
        k: int,
        ef_search: int | None = None,
        nprobe: int | None = None,
        include: frozenset[str] = frozenset(),
        where: Any = None,
    ) -> list[list[Hit]]:
        return nearest_by_knn(self, vectors, k, ef_search, nprobe, include, where)

    def lexical(self, match: str, k: int, where: Any = None, exclude: str | None = None) -> Ranking:
        """BM25 over the shared full-text index of every shard's passages (the whole collection's
        statistics), read there at once."""
        ranking = lexical_ranking(self.lexical_store, match, k, where, exclude)
        hits = read_hits(self.lexical_store, [ranking])[0]
        return [(ShardKey(hit), score) for hit, (_, score) in zip(hits, ranking) if hit is not None]

    def hits(self, rankings: Sequence[Ranking], include: frozenset[str] = DEFAULT_INCLUDE) -> list[list[Hit | None]]:
        """The hits the shards read while ranking, with the ranking's (merged or fused) scores, cut to
        the fields ``include`` names (vectors are read for them when included)."""
        out = [[dataclasses.replace(key.hit, score=float(score)) for key, score in ranking] for ranking in rankings]
        if include != DEFAULT_INCLUDE:
            flat = [hit for hits in out for hit in hits]
            vectors = self.vectors_of(sorted({hit.id for hit in flat})) if "vector" in include else {}
            for hit in flat:
                if "text" not in include:
                    hit.text = hit.uri = None
                if "metadata" not in include:
                    hit.metadata = None
                if "passage" not in include:
                    hit.passage = None
                hit.vector = vectors.get(hit.id)
        return out

    # --- housekeeping ------------------------------------------------------------------------------

    def compact(self, *, progress: ProgressFn | None = None) -> None:
        """Rebuild every shard's index from its SQLite file, in parallel."""
        self._all("compact")
        if progress:
            progress(self.shards, self.shards)

    def finish_bulk_load(self) -> None:
        self._all("finish_bulk_load")

    def resize(self, shards: int, *, progress: ProgressFn | None = None) -> int:
        """Change the number of shards and move every item whose shard changes; returns items moved.

        Each move writes the item to its new shard before deleting it from the old one, so an
        interruption leaves an item in two shards (found and fixed by running resize again), never in none.
        """
        shards = check_int("shards", shards, 1, MAX_SHARDS)
        shard_cls, _ = _actor_classes(self.ray)
        template = Store(self.path / self.shard_names[0]).read_manifest()
        for i in range(self.shards, shards):
            folder = self.path / shard_name(i)
            if not folder.exists():
                LocalBackend.create(folder, {**template, "collection_id": uuid.uuid4().hex})
            self.actors.append(shard_cls.remote(str(folder)))
            self.shard_names.append(shard_name(i))
        moved, total = 0, self.count()
        for source in range(len(self.actors)):
            held = self._get(self.actors[source].vector_rows.remote())[0]
            leaving = [i for i in held if shard_of(i, shards) != source]
            if not leaving:
                continue
            batch = self._get(self.actors[source].call.remote("batch_of", leaving))
            targets: dict[int, list[int]] = {}
            for position, item_id in enumerate(batch.ids):
                targets.setdefault(shard_of(item_id, shards), []).append(position)
            for target, positions in sorted(targets.items()):
                self._get(self.actors[target].call.remote("write", batch.subset(positions), upsert=True))
            self._get(self.actors[source].call.remote("delete", leaving))
            moved += len(leaving)
            if progress:
                progress(moved, total)
        for actor in self.actors[shards:]:  # shrinking: the emptied shards go
            self.ray.kill(actor)
        self.actors, self.shard_names = self.actors[:shards], self.shard_names[:shards]
        self.config["shards"] = shards
        (self.path / SHARDED_FILE).write_text(json.dumps(self.config, indent=2))
        return moved

    def index_field(self, field: str) -> bool:
        return any(self._all("index_field", field))

    def drop_field_index(self, field: str) -> bool:
        return any(self._all("drop_field_index", field))

    def field_indexes(self) -> list[str]:
        return self._get(self.actors[0].call.remote("field_indexes"))

    def info(self) -> dict[str, Any]:
        counts = self._all("count")
        return {
            "shards": self.shards,
            "shard_counts": counts,
            "passages": self.passage_count(),
            "field_indexes": self.field_indexes(),
        }

    def save(self) -> None:
        """Checkpoint every shard's index."""
        self._all("save")

    def close(self) -> None:
        """Checkpoint the shards that are alive and stop every actor (SQLite already holds all writes)."""
        for name, actor in zip(self.shard_names, self.actors):
            try:
                self._get(actor.call.remote("save"))
            except ShardError:
                log.warning("%s of %s could not checkpoint its index", name, self.name)
        for actor in self.actors:
            self.ray.kill(actor)
        self.pool.close()
        self.lexical_store.close()


def describe_offline(folder: Path) -> dict[str, Any]:
    """Count, encoder, dimension and shard count of a sharded collection, read from its files (no Ray)."""
    config = json.loads((folder / SHARDED_FILE).read_text())
    count = 0
    for i in range(config["shards"]):
        store = Store(folder / shard_name(i))
        try:
            count += store.count()
        finally:
            store.close()
    return {
        "count": count,
        "encoder": config["encoder"],
        "dim": config["dim"],
        "shards": config["shards"],
    }
