"""FAISS index of a collection: a derived, rebuildable cache of the vectors in SQLite.

``index.faiss`` is a plain FAISS file; ``index.checkpoint.json`` records the change sequence it
contains, its factory string, the HNSW tombstones and the file's size and sha256. Both are written to
temp files, fsynced and renamed into place. On load a checkpoint that does not match its file, an
unreadable file or a different dimension/metric means "rebuild from SQLite"; an older sequence means
"catch up" (add the newer rows, drop the deleted ones).

HNSW and flat indexes are written lean: ``index.faiss`` then holds the id map, the HNSW graph (or an
empty flat index) and only the vectors of tombstones, and the vectors themselves are read back from
SQLite when it is loaded, so each vector is on disk once (see :meth:`VectorIndex._write_lean`).
Compressed and IVF indexes are written as FAISS writes them.

FAISS ids are SQLite rowids. Flat and scalar-quantised indexes sit in an ``IndexIDMap2`` and delete
with ``remove_ids``; IVF indexes take ids natively. HNSW cannot remove vectors, so deleted rowids
become tombstones excluded at search time through an ``IDSelector``, and :meth:`VectorIndex.build`
(compaction) drops them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from latentsearch.fileio import exclusive_lock, file_sha256, fsync_replace, remove_stale_temp_files, writing
from latentsearch.index.gate import ReadWriteGate
from latentsearch.index.hugepages import HUGE_PAGE, Placed, available, place_index, place_step, reserve_vectors
from latentsearch.index.partition import (
    MIN_VECTORS,
    IndexReplaced,
    Partition,
    Partitioner,
    read_partition,
    write_partition,
)
from latentsearch.index.partition import build as build_partition
from latentsearch.index.partition import extend as extend_partition
from latentsearch.index.specs import (
    DEFAULT_EF_SEARCH,
    factory_for,
    is_compressed,
    new_faiss_index,
    score_lists,
    to_scores,
    validate_spec,
)
from latentsearch.storage.store import Store
from latentsearch.usercache import remember_sha256, verified_sha256

log = logging.getLogger("latentsearch")

INDEX_FILE = "index.faiss"
CHECKPOINT_FILE = "index.checkpoint.json"
LOCK_FILE = "index.lock"
PARTITION_FILE = "index.partition.npz"  # the filter partition of the checkpointed index (see partition)
BULK_VECTORS = MIN_VECTORS  # a write of this many vectors keeps the filter partition itself (see keep_partition)

COMPACT_TOMBSTONE_FRACTION = 0.3  # HNSW rebuilds once this share of its vectors are deleted
# Vectors added per hold of the search gate: a search waits for at most one block's add (about 0.3 s
# for 784-d HNSW on this machine), not for a whole bulk write.
ADD_BLOCK = 2048
PLACE_STEP = 4 * HUGE_PAGE  # what the background placement of an opened index moves per write hold
FILTERED_PARAMS_CACHE = 8  # search parameters (with their selector) kept for the latest filters
DIGEST_PRIME = 2**31 - 1  # rowid fingerprints: squares stay below 2**62, sums of 2**31 terms in int64
# A lean index.faiss (HNSW and flat) keeps no vectors: SQLite's are attached when it is read.
LEAN_MAGIC = b"LSLEAN01"

ProgressFn = Callable[[int, int], None]


@dataclass
class Checkpoint:
    """What an ``index.faiss`` file contains."""

    seq: int
    factory: str
    dim: int
    metric: str
    trained_n: int
    tombstones: list[int]
    size: int
    sha256: str
    # Identity (older checkpoints lack it, and are rebuilt once): the collection the index belongs to,
    # a fingerprint of the live rowids it holds (see rowids_digest) and the largest of them.
    collection_id: str = ""
    rowids_digest: str = ""
    max_rowid: int = 0

    @classmethod
    def read(cls, path: Path) -> Checkpoint | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def rowids_digest(rowids: np.ndarray) -> str:
    """Fingerprint of a set of rowids, what a checkpoint binds its index's contents with: the count and
    the first three power sums of the rowids modulo a prime. SQLite computes the same in one aggregate
    over a small index (:meth:`Store.rowids_digest_at`, 20x faster than fetching the rowids to hash
    them), and a set that differs by any rowid added, missing or swapped changes it."""
    r = np.asarray(rowids, dtype=np.int64) % DIGEST_PRIME
    r2 = r * r % DIGEST_PRIME
    return f"{len(r)}:{int(r.sum())}:{int(r2.sum())}:{int((r2 * r % DIGEST_PRIME).sum())}"


def _swig_entry_points() -> tuple[Any, Any]:
    """FAISS's SWIG entry points of ``Index::search`` (a virtual call: any index) and ``swig_ptr`` (its
    Python wrapper is one more frame a query, three times), or None and the wrapper where this build of
    FAISS names them otherwise (then :func:`search_raw` goes through the index's proxy)."""
    module = getattr(faiss.Index.search_c, "__globals__", {}).get("_swigfaiss")
    return getattr(module, "Index_search", None), getattr(module, "swig_ptr", faiss.swig_ptr)


_INDEX_SEARCH, _SWIG_PTR = _swig_entry_points()


def search_raw(index: Any, queries: np.ndarray, k: int, params: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` through FAISS's C++ entry point, for ``dim``-d queries (``index.d``, which the
    caller knows: reading it through SWIG costs 4,000 instructions). FAISS's Python wrapper's checks and
    copies, and SWIG's conversion of the index's and the parameters' proxies (handing it their pointer
    objects, ``.this``, skips it), cost a single-query HNSW search more than everything else this
    package adds to it: 27,000 instructions of the 100,000 it added, counted by callgrind."""
    n, d = queries.shape
    if d != dim or queries.dtype != np.float32 or not queries.flags.c_contiguous:
        raise ValueError(f"queries must be C-contiguous float32 of {dim} columns, got {queries.dtype} {queries.shape}")
    distances = np.empty((n, k), dtype=np.float32)
    labels = np.empty((n, k), dtype=np.int64)
    swig_ptr = _SWIG_PTR
    if _INDEX_SEARCH is None:
        index.search_c(n, swig_ptr(queries), k, swig_ptr(distances), swig_ptr(labels), params)
    else:
        pointer = None if params is None else params.this
        _INDEX_SEARCH(index.this, n, swig_ptr(queries), k, swig_ptr(distances), swig_ptr(labels), pointer)
    return distances, labels


def scan_raw(index: Any, queries: np.ndarray, k: int, params: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_raw` for an index that scans its vectors (flat, SQ8): a single query on one
    thread (see :func:`one_thread`). An HNSW walk takes :func:`search_raw` itself: one thread's work
    either way, so it pays for no switch."""
    if len(queries) == 1:
        return one_thread(search_raw, index, queries, k, params, dim)
    return search_raw(index, queries, k, params, dim)


_OMP_THREADS, _OMP_SET_THREADS = faiss.omp_get_max_threads, faiss.omp_set_num_threads


def one_thread(search: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``search(*args, **kwargs)`` with FAISS on one OpenMP thread, this thread's setting restored after.

    For a single query that FAISS would split over threads (an exact scan divides the vectors; IVF
    scans its centroids): waking the other threads for each query costs more than they save. Measured
    on 2 cores, one 128-d query against 10,000 vectors took 117 µs on one thread and 300 µs on two
    (against 200,000: 8.0 and 12.0 ms). An HNSW walk is one thread's work either way. The setting is
    the calling thread's own (OpenMP's ``nthreads-var``), so other threads' searches keep theirs."""
    threads = _OMP_THREADS()
    if threads == 1:
        return search(*args, **kwargs)
    _OMP_SET_THREADS(1)
    try:
        return search(*args, **kwargs)
    finally:
        _OMP_SET_THREADS(threads)


class VectorIndex:
    """The FAISS side of one collection."""

    def __init__(
        self, folder: Path, *, dim: int, metric: str, spec: str, collection_id: str = "", read_only: bool = False
    ) -> None:
        self.folder = Path(folder)
        self.read_only = read_only  # a folder that cannot be written: the index lives in memory only
        self.collection_id = collection_id  # written into checkpoints; a checkpoint of another id is foreign
        self.dim = dim
        self.metric = metric
        self.spec = validate_spec(spec)
        self.index: faiss.Index | None = None
        self.factory = ""
        self.seq = 0
        self.trained_n = 0
        self.tombstones: set[int] = set()
        self.dirty = False  # in-memory changes not yet checkpointed
        self._ids: np.ndarray | None = None  # rowid of each internal position of an IDMap2 index
        self._direct: tuple[Any, np.ndarray, Any, np.ndarray, Callable[..., Any]] | None = None  # see _inner
        # Unfiltered search parameters by (ef_search, nprobe); building them (and the tombstone selector)
        # costs about a tenth of a small HNSW search. Emptied whenever the tombstones change.
        self._params: dict[tuple[int | None, int | None], tuple[np.ndarray | None, Any]] = {}
        self._filtered_params: dict[tuple[int, int, int | None, int | None], tuple[Any, ...]] = {}
        # Searches read the FAISS index together; a change (add, remove, the swap to a rebuilt index)
        # waits for them and holds them off (see latentsearch.index.gate).
        self._gate = ReadWriteGate()
        self._placed: dict[str, Placed] = {}  # what of the index is on huge pages (see hugepages)
        # A k-means partition of an HNSW index's vectors for filtered searches (see partition), and each
        # filter's members among the positions (a boolean per position), kept per match array.
        self.partitioner = Partitioner()
        self._members: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._storage: tuple[Any, Any] | None = None  # (index, its HNSW's flat storage): see _flat_storage
        self._placing: threading.Thread | None = None  # the background placement of an opened index
        self._closed = False

    # --- construction ----------------------------------------------------------------------------

    def _new_index(self, factory: str) -> faiss.Index:
        return new_faiss_index(factory, self.dim, self.metric)

    def build(self, store: Store, *, progress: ProgressFn | None = None) -> None:
        """(Re)build the whole index from SQLite: used when missing, corrupt, or compacting."""
        seq = store.seq
        n = store.vector_count()
        factory = factory_for(self.spec, self.dim, n)
        index = self._new_index(factory)
        if not index.is_trained:
            sample = self._training_sample(store, n)
            log.info("training %s on %d vectors", factory, len(sample))
            try:
                index.train(sample)
            except RuntimeError as exc:
                if not self.spec.startswith("faiss:"):
                    raise
                # A raw factory string says nothing of how much data it needs (IVF lists, PQ codebooks):
                # until training succeeds, serve exact search; needs_rebuild tries again as items come.
                log.info("%s cannot train on %d vectors yet, exact search meanwhile: %s", factory, len(sample), exc)
                factory, index = "Flat", self._new_index("Flat")
        done = 0
        placed = reserve_vectors(index, n, {})  # room on huge pages first: the adds fault straight into it
        for rowids, vectors in store.iter_vectors(self.dim, upto_seq=seq):
            index.add_with_ids(vectors, rowids)
            done += len(rowids)
            if progress:
                progress(done, n)
        placed = place_index(index, placed)  # (the links; before any search can read the index)
        with self._gate.writing():  # the old index is freed here: no search may be walking it
            self.index, self.factory, self.seq, self.trained_n = index, factory, seq, n
            self._placed = placed
            self.tombstones, self._params = set(), {}
            self.dirty, self._ids, self._direct = True, None, None
            self._forget_index()

    def _training_sample(self, store: Store, n: int, max_points: int = 100_000) -> np.ndarray:
        chunks, taken = [], 0
        keep = min(1.0, max_points / max(n, 1))
        rng = np.random.default_rng(0)
        for _, vectors in store.iter_vectors(self.dim):
            if keep < 1.0:
                vectors = vectors[rng.random(len(vectors)) < keep]
            chunks.append(vectors)
            taken += len(vectors)
        return np.ascontiguousarray(np.concatenate(chunks) if chunks else np.empty((0, self.dim), np.float32))

    def needs_rebuild(self, n: int) -> bool:
        """True when a rebuild would serve ``n`` items better: the spec now calls for another index
        family (an exact stand-in that can now train), an IVF outgrew its training, or HNSW
        tombstones pile up."""
        if self.tombstones and len(self.tombstones) > COMPACT_TOMBSTONE_FRACTION * self.ntotal:
            return True
        wanted = factory_for(self.spec, self.dim, n)
        if wanted.split(",")[0].rstrip("0123456789") != self.factory.split(",")[0].rstrip("0123456789"):
            return True
        return self.factory.startswith("IVF") and n > 4 * max(self.trained_n, 1)

    # --- persistence -----------------------------------------------------------------------------

    def load(self, store: Store, *, progress: ProgressFn | None = None) -> None:
        """Load the checkpointed index, rebuilding or catching up from ``store`` as needed."""
        if not self.read_only:
            remove_stale_temp_files(self.folder, ".index.*.tmp")  # left by a writer killed mid-checkpoint
        reason = self._load_checkpoint(store)
        if reason is not None:
            if (self.folder / INDEX_FILE).exists() or (self.folder / CHECKPOINT_FILE).exists():
                where = " in memory (the collection is read-only)" if self.read_only else ""
                log.warning("rebuilding the index of %s%s: %s", self.folder.name, where, reason)
            self.build(store, progress=progress)
            self.save()
            return
        self.catch_up(store, progress=progress)

    def _load_checkpoint(self, store: Store) -> str | None:
        """Read index + checkpoint; return why they cannot be used, or None when loaded.

        Besides the file's checksum, the checkpoint must name this collection and list the rowids
        SQLite held at its change sequence: an index copied in from another collection, or one that
        does not hold what SQLite says, is refused (and rebuilt) rather than served."""
        path, ckpt_path = self.folder / INDEX_FILE, self.folder / CHECKPOINT_FILE
        if not path.exists():
            return "index.faiss is missing"
        ckpt = Checkpoint.read(ckpt_path)
        if ckpt is None:
            return "its checkpoint is missing or unreadable"
        if ckpt.dim != self.dim or ckpt.metric != self.metric:
            return "it was built with another dimension or metric"
        # A checkpoint written before indexes were bound to their collection (no id, no digest) is
        # adopted when the index it describes holds exactly SQLite's rowids at its sequence, rather
        # than rebuilt (minutes for a large HNSW): that check is made below, on the loaded index.
        adopting = not ckpt.collection_id or not ckpt.rowids_digest
        if not adopting and self.collection_id and ckpt.collection_id != self.collection_id:
            return "it belongs to another collection (copied in from elsewhere?)"
        if ckpt.seq > store.seq:
            return "it is newer than the SQLite store (was the store restored from a backup?)"
        if not adopting and store.rowids_digest_at(ckpt.seq, ckpt.max_rowid, DIGEST_PRIME) != ckpt.rowids_digest:
            return "it does not hold the items SQLite had at its change sequence"
        size = path.stat().st_size
        if size != ckpt.size or verified_sha256(path) != ckpt.sha256:
            return "index.faiss does not match its checksum (truncated or corrupt)"
        try:
            index, placed = self._read_index_file(path, store)
        except (RuntimeError, ValueError) as exc:
            return f"FAISS cannot read index.faiss ({str(exc).splitlines()[0][:100]})"
        if index.d != self.dim:
            return "index.faiss has another dimension"
        with self._gate.writing():
            self.index, self.factory, self.seq, self._ids = index, ckpt.factory, ckpt.seq, None
            self._placed = placed
            self._direct = None  # (it holds the index it was made from: released with it)
            self.trained_n, self.tombstones, self._params = ckpt.trained_n, set(ckpt.tombstones), {}
            self._forget_index()
        self.dirty = False
        self._start_placing(index)
        if adopting:
            live = self.live_rowids()
            max_rowid = int(live.max()) if len(live) else 0
            if store.rowids_digest_at(ckpt.seq, max_rowid, DIGEST_PRIME) != rowids_digest(live):
                with self._gate.writing():
                    self.index, self._direct = None, None
                    self._forget_index()
                return "it does not hold the items SQLite had at its change sequence"
            self.dirty = True  # the next checkpoint records the collection's id and the digest
        self._load_partition(ckpt.sha256)
        return None

    def _load_partition(self, sha256: str) -> None:
        """Take up the filter partition saved with the checkpoint whose index file has this checksum,
        if there is one (a missing, unreadable or stale file is left: filtered walks build another)."""
        path = self.folder / PARTITION_FILE
        if not self._partitionable or not path.exists():
            return
        try:
            partition = read_partition(path, sha256, self.index, self.metric)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # (torn or foreign file)
            log.info("ignoring the filter partition of %s: %s", self.folder.name, exc)
            return
        if partition is not None and partition.assigned <= self.ntotal and partition.centroids.d == self.dim:
            self.partitioner.current = partition

    def _save_partition(self, sha256: str) -> None:
        """Save the filter partition beside the checkpoint whose index file has this checksum (once per
        checkpoint); the checkpoint's own guarantees do not depend on it, so a failure is logged, not
        raised."""
        partition = self.partitioner.usable(self.index, self.ntotal)
        if partition is None or partition.saved_for == sha256:
            return
        path = self.folder / PARTITION_FILE
        tmp = path.with_name(f".{INDEX_FILE}.partition.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                write_partition(handle, partition, sha256)
            fsync_replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("could not save the filter partition of %s: %s", self.folder.name, exc)
            return
        partition.saved_for = sha256

    def save(self) -> None:
        """Checkpoint the index atomically (temp file, fsync, rename), if it changed (and the folder
        can be written: a read-only collection keeps a rebuilt or caught-up index in memory); and its
        filter partition, if it has one not yet saved with this checkpoint."""
        if self.index is None or self.read_only:
            return
        if not self.dirty:  # (a partition built since the last checkpoint: saved once, beside it)
            partition = self.partitioner.usable(self.index, self.ntotal)
            unsaved = partition is not None and not partition.saved_for
            ckpt = Checkpoint.read(self.folder / CHECKPOINT_FILE) if unsaved else None
            if ckpt is not None:
                with exclusive_lock(self.folder / LOCK_FILE), self._gate.reading():
                    self._save_partition(ckpt.sha256)
            return
        path, ckpt_path = self.folder / INDEX_FILE, self.folder / CHECKPOINT_FILE
        tmp = path.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
        ckpt_tmp = ckpt_path.with_name(f".{CHECKPOINT_FILE}.{os.getpid()}.tmp")
        # A failure (a full disk) removes both temp files and keeps the old pair in place: the index
        # is replaced first, so at worst a new index.faiss sits beside the old checkpoint, which its
        # checksum refuses (rebuilt from SQLite on open). The in-memory index stays dirty.
        with (
            writing(self.folder.name, self.folder, tmp, ckpt_tmp),
            exclusive_lock(self.folder / LOCK_FILE),
            self._gate.reading(),
        ):
            live = self._live_rowids()
            with open(tmp, "wb") as handle:
                # Through Python's file object, so a write error is an OSError with its errno (FAISS's
                # own writer prints "close error" on stderr and raises a RuntimeError with the text).
                writer = faiss.PyCallbackIOWriter(handle.write)
                if self._lean_inner() is not None:
                    self._write_lean(handle, writer)
                else:
                    faiss.write_index(self.index, writer)
                del writer
            ckpt = Checkpoint(
                seq=self.seq,
                factory=self.factory,
                dim=self.dim,
                metric=self.metric,
                trained_n=self.trained_n,
                tombstones=sorted(self.tombstones),
                size=tmp.stat().st_size,
                sha256=file_sha256(tmp),
                collection_id=self.collection_id,
                rowids_digest=rowids_digest(live),
                max_rowid=int(live.max()) if len(live) else 0,
            )
            ckpt_tmp.write_text(json.dumps(ckpt.__dict__))
            fsync_replace(tmp, path)
            fsync_replace(ckpt_tmp, ckpt_path)
            remember_sha256(path, ckpt.sha256)  # so the next open need not hash it again
            self._save_partition(ckpt.sha256)
        self.dirty = False

    # --- lean files: the vectors are SQLite's -------------------------------------------------------

    def _lean_inner(self) -> Any:
        """The inner index when this index is saved lean (HNSW over float vectors, or flat, in an
        IndexIDMap2), else None (compressed codes and IVF lists are small or hold vectors FAISS
        alone can search: saved as FAISS writes them)."""
        if not isinstance(self.index, faiss.IndexIDMap2):
            return None
        inner = faiss.downcast_index(self.index.index)
        return inner if isinstance(inner, (faiss.IndexHNSWFlat, faiss.IndexFlat)) else None

    def _write_lean(self, handle: Any, writer: Any) -> None:
        """Write :data:`LEAN_MAGIC`, the id map (FAISS position -> passage id), the tombstones' ids and
        vectors (SQLite no longer holds them; the graph still walks through them), then the inner
        index without its vectors: the HNSW graph (``IO_FLAG_SKIP_STORAGE``) or an empty flat index."""
        inner = self._lean_inner()
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        dead = np.array(sorted(self.tombstones), dtype=np.int64)
        dead_vectors = self.index.reconstruct_batch(dead) if len(dead) else np.empty((0, self.dim), np.float32)
        handle.write(LEAN_MAGIC + np.int64(len(ids)).tobytes() + ids.tobytes())
        handle.write(np.int64(len(dead)).tobytes() + dead.tobytes() + np.ascontiguousarray(dead_vectors).tobytes())
        handle.flush()
        if isinstance(inner, faiss.IndexHNSWFlat):
            faiss.write_index(inner, writer, faiss.IO_FLAG_SKIP_STORAGE)
        else:
            faiss.write_index(faiss.IndexFlat(self.dim, inner.metric_type), writer)

    def _read_index_file(self, path: Path, store: Store) -> tuple[faiss.Index, dict[str, Placed]]:
        """Read ``index.faiss``: a FAISS file, or a lean one (see :meth:`_write_lean`) whose vectors are
        read back from SQLite in the id map's order. A passage deleted from SQLite after the checkpoint
        gets a zero vector: catching up tombstones it, and compaction drops it. Also what of it is on
        huge pages: nothing yet (see :meth:`_place_later`)."""
        with open(path, "rb") as handle:
            lean = handle.read(len(LEAN_MAGIC)) == LEAN_MAGIC
        if not lean:
            return faiss.read_index(str(path)), {}
        data = path.read_bytes()
        at = len(LEAN_MAGIC)
        n = int(np.frombuffer(data, np.int64, 1, at)[0])
        ids = np.frombuffer(data, np.int64, n, at + 8)
        at += 8 + 8 * n
        t = int(np.frombuffer(data, np.int64, 1, at)[0])
        dead = np.frombuffer(data, np.int64, t, at + 8)
        dead_vectors = np.frombuffer(data, np.float32, t * self.dim, at + 8 + 8 * t).reshape(t, self.dim)
        at += 8 + 8 * t + 4 * t * self.dim
        inner = faiss.deserialize_index(np.frombuffer(data, np.uint8, offset=at))  # (its own subclass)
        del data
        hnsw = isinstance(inner, faiss.IndexHNSWFlat)
        if hnsw and inner.ntotal != n:
            raise ValueError("the HNSW graph and its id map disagree")
        storage = faiss.IndexFlat(self.dim, inner.metric_type) if hnsw else inner
        # The vectors go from SQLite straight into the flat storage's own (zeroed) memory, once.
        storage.codes.resize(n * self.dim * 4)
        vectors = faiss.rev_swig_ptr(storage.codes.data(), n * self.dim * 4).view(np.float32).reshape(n, self.dim)
        if n:
            store.passage_vectors(ids, self.dim, missing_ok=True, out=vectors)
        if t:
            vectors[_positions(ids, dead)] = dead_vectors
        storage.ntotal = n
        del vectors
        if hnsw:
            storage.this.disown()  # owned by the HNSW index from here on
            inner.storage, inner.own_fields = storage, True
        # The id map's constructor refuses a full inner index: it wraps an empty one, swapped for it.
        index = faiss.IndexIDMap2(faiss.IndexFlat(self.dim, inner.metric_type))
        index.index, index.ntotal, index.referenced_objects = inner, inner.ntotal, []
        inner.this.disown()  # owned by the id map from here on
        index.own_fields = True
        faiss.copy_array_to_vector(ids, index.id_map)
        index.construct_rev_map()
        return index, {}

    # --- changes ---------------------------------------------------------------------------------

    def catch_up(self, store: Store, *, progress: ProgressFn | None = None) -> None:
        """Apply the writes SQLite has committed since this index's sequence (another process's, or
        those after the checkpoint on open), keeping the filter partition in the background as a
        small write would."""
        current = store.seq
        if current == self.seq:
            return
        n = store.vector_count()
        if self.needs_rebuild(n):
            self.build(store, progress=progress)
            return
        # Everything read below stops at `current`: rows committed meanwhile belong to the next catch-up.
        deleted = store.deleted_after(self.seq, current)
        if len(deleted):
            self.remove(deleted)
        total, done = store.count_after(self.seq, current), 0
        for rowids, vectors in store.iter_vectors(self.dim, after_seq=self.seq, upto_seq=current):
            self._add(rowids, vectors)
            done += len(rowids)
            if progress:
                progress(done, total)
        self.seq = current
        self.dirty = True
        if done:
            self.keep_partition(now=False)

    def add(self, rowids: np.ndarray, vectors: np.ndarray, seq: int) -> None:
        """Add vectors that SQLite has just committed at ``seq``, and keep the filter partition current
        with them (:meth:`keep_partition`: a bulk write of :data:`BULK_VECTORS` or more in this thread,
        a smaller one in the background)."""
        self._add(rowids, vectors)
        self.seq, self.dirty = seq, True
        self.keep_partition(now=len(rowids) >= BULK_VECTORS)

    def _add(self, rowids: np.ndarray, vectors: np.ndarray) -> None:
        """Add to the FAISS index block by block, each block with the gate held: searches go on
        between blocks, each seeing the index and its positions' labels as they stand."""
        vectors, rowids = np.ascontiguousarray(vectors, dtype=np.float32), rowids.astype(np.int64)
        for at in range(0, len(rowids), ADD_BLOCK):
            block = slice(at, at + ADD_BLOCK)
            if at:  # the searches the last block held off go in first (see ReadWriteGate.let_waiting_readers_in)
                self._gate.let_waiting_readers_in()
            with self._gate.writing():
                if at == 0:  # room on huge pages for the whole write, into which FAISS adds it
                    self._placed = reserve_vectors(self.index, len(rowids), self._placed)
                self.index.add_with_ids(vectors[block], rowids[block])
                self._ids = None  # (read again from the id map by the next search: once, not per block)
                if at + ADD_BLOCK >= len(rowids):  # once a write, not per block: each copies what moved
                    self._placed = place_index(self.index, self._placed)

    def remove(self, rowids: np.ndarray, seq: int | None = None) -> None:
        """Drop rowids from the index (tombstones for HNSW, which cannot remove)."""
        with self._gate.writing():
            if self._is_hnsw:
                if self._ids is None:
                    self._ids = faiss.vector_to_array(self.index.id_map)
                present = set(self._ids.tolist())
                # A new set, not the searches' one changed in place (they read it without the gate).
                self.tombstones = self.tombstones | {int(r) for r in rowids if int(r) in present}
                self._params = {}
            else:
                self.index.remove_ids(np.asarray(rowids, dtype=np.int64))
                self._ids = None
        if seq is not None:
            self.seq = seq
        self.dirty = True

    def held_rowids(self) -> np.ndarray:
        """Every rowid the FAISS index holds, tombstones included, for every index kind (IVF indexes
        keep theirs in the inverted lists)."""
        with self._gate.reading():
            return self._held_rowids()

    def _held_rowids(self) -> np.ndarray:
        if self.index is None:
            return np.empty(0, np.int64)
        if hasattr(self.index, "id_map"):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def live_rowids(self) -> np.ndarray:
        """The rowids the index serves: those it holds minus the HNSW tombstones."""
        with self._gate.reading():
            return self._live_rowids()

    def _live_rowids(self) -> np.ndarray:
        held = self._held_rowids()
        if self.tombstones:
            held = held[~np.isin(held, np.fromiter(self.tombstones, dtype=np.int64))]
        return held

    @property
    def _is_hnsw(self) -> bool:
        return self.factory.startswith("HNSW")

    @property
    def ntotal(self) -> int:
        """Vectors held by FAISS, tombstones included."""
        return 0 if self.index is None else int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        """An IVF index's list count (1 for the others)."""
        ivf = faiss.try_extract_index_ivf(self.index) if self.index is not None else None
        return int(ivf.nlist) if ivf is not None else 1

    def stored_vectors(self, rowids: np.ndarray) -> np.ndarray | None:
        """The float vectors the index holds for ``rowids`` (copied out), or None when it keeps none
        it can give back exactly (compressed codes, IVF lists) or lacks one of them."""
        if not isinstance(self.index, faiss.IndexIDMap2) or is_compressed(self.factory):
            return None
        try:
            with self._gate.reading():
                return self.index.reconstruct_batch(np.ascontiguousarray(rowids, dtype=np.int64))
        except RuntimeError:  # an id the index does not hold (yet): the caller reads SQLite
            return None

    # --- search ----------------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k-NN search; returns ``(scores, rowids)`` with higher scores better and -1 for no result.

        ``allowed`` restricts the search to those rowids (a pre-filter through an IDSelector).
        Scores are cosine similarities or inner products, or negated Euclidean distances for l2.
        """
        distances, labels = self._search(queries, k, allowed, ef_search, nprobe)
        return to_scores(self.metric, distances), labels

    def search_lists(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[list[list[float]], list[list[int]]]:
        """:meth:`search` as Python lists, one per query (what a ranking is made of; a single query's
        few scores are made without numpy: :func:`~latentsearch.index.specs.score_lists`)."""
        distances, labels = self._search(queries, k, allowed, ef_search, nprobe)
        return score_lists(self.metric, distances), labels.tolist()

    def _search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._gate.reading():
            return self._search_read(queries, k, allowed, ef_search, nprobe)

    def _search_read(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef_search: int | None, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.ntotal))
        if k > (ef_search or DEFAULT_EF_SEARCH) and self._is_hnsw:
            ef_search = k  # (see search_direct)
        inner = self._inner()
        params = self._search_params(allowed, ef_search, nprobe)
        if inner is not None:
            # Search the inner index (its selectors name positions) and map ids in numpy: IndexIDMap
            # maps them in an OpenMP loop whose thread start-up, on a busy machine, cost more than a
            # whole single-query HNSW search (and ten times more than a filtered one, measured).
            distances, positions = inner[2](inner[0], queries, k, params, self.dim)
            return distances, inner[1][positions]  # position -1 (no result) reads the trailing -1
        if len(queries) == 1 and not self.factory.startswith("HNSW"):
            return one_thread(self.index.search, queries, k, params=params)
        return self.index.search(queries, k, params=params)

    # --- the filter partition (see latentsearch.index.partition) -------------------------------------

    @property
    def _partitionable(self) -> bool:
        """Whether this index can have a filter partition: an HNSW graph over float vectors, with an id map."""
        return self._is_hnsw and not is_compressed(self.factory) and isinstance(self.index, faiss.IndexIDMap2)

    @property
    def partition_shape(self) -> tuple[int, float]:
        """This index's filter partition's list count and probe scale; ``(0, 1.0)`` while it has none it
        can use (none built, or one whose check found the walk better for this data)."""
        partition = self.partitioner.usable(self.index, self.ntotal)
        if partition is None or partition.probe_scale is None:
            return 0, 1.0
        return partition.lists, partition.probe_scale

    def search_partition(
        self, queries: np.ndarray, k: int, allowed: np.ndarray, nprobe: int
    ) -> tuple[list[list[float]], list[list[int]]] | None:
        """:meth:`search_lists` among the ``allowed`` rowids through the filter partition, probing
        ``nprobe`` lists; None when the index has no partition (any more: rebuilt or reloaded since)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._gate.reading():
            partition = self.partitioner.usable(self.index, self.ntotal)
            inner = self._inner()
            if partition is None or inner is None:
                return None
            members = self._members_of(allowed, self._ids)
            storage = self._flat_storage()
            distances, positions = partition.search(
                storage, queries, max(1, min(k, self.ntotal)), nprobe, members, l2=self.metric == "l2"
            )
            labels = inner[1][positions]  # (position -1 reads the trailing -1)
        return score_lists(self.metric, distances), labels.tolist()

    def _flat_storage(self) -> Any:
        """The HNSW index's flat vector storage (kept per FAISS index: downcasting costs microseconds)."""
        found = self._storage
        if found is None or found[0] is not self.index:
            found = self._storage = (self.index, faiss.downcast_index(faiss.downcast_index(self.index.index).storage))
        return found[1]

    def charge_filtered(self, seconds: float) -> Any:
        """Count ``seconds`` of a filtered search towards the filter partition an index opened without
        one lacks (its writes keep it otherwise: :meth:`keep_partition`); once the searches have cost
        what one costs to build, it is made in a daemon thread (returned; None when none starts)."""
        if not self._partitionable:
            return None
        source = self.index
        job = self._partition_job(source)
        return self.partitioner.charge(seconds, source=source, count=self.ntotal, dim=self.dim, start=job)

    def build_partition(self, *, progress: ProgressFn | None = None) -> None:
        """Build the filter partition now, in this thread, where searches would build one (an HNSW index
        of at least :data:`~latentsearch.index.partition.MIN_VECTORS` float vectors): ``compact``, and
        benchmarks and tests. Writes otherwise keep it (:meth:`keep_partition`).
        ``progress(done, total)`` follows its vectors' assignment to lists."""
        if self._partitionable and self.partitioner.enabled and self.ntotal >= MIN_VECTORS:
            self.partitioner.current = self._new_partition(self.index, progress)
            self.partitioner.failed = False

    def keep_partition(self, *, now: bool = True) -> None:
        """Keep the filter partition current with the index after writes (see
        :meth:`Partitioner.due <latentsearch.index.partition.Partitioner.due>`): build it once the
        index reaches :data:`~latentsearch.index.partition.MIN_VECTORS` vectors or has grown fourfold
        (or drifted) since, else assign a tail past a sixteenth to its lists, so that filtered
        searches use it from the first instead of walking the graph (a 10% filter on 60,000 × 784:
        0.65× of the unfiltered queries/s on the partition writes of 1,000 kept, against the walk's
        0.43×). ``now``: in this thread, with its FAISS threads (a bulk write, the end of a file's
        ingest: the build costs the load a thirtieth), after the background work in flight; else in
        a background thread, or after the one running (a small write: it returns at once). A failure
        is logged, not raised: the write itself has landed."""
        if not self._partitionable:
            return
        job = self._partition_job(self.index)
        if not now:
            if self.partitioner.due(self.index, self.ntotal) is not None:
                self.partitioner.start(job)
            return
        self.partitioner.wait()  # (what runs would be dropped as older than this)
        try:
            partition = job()
            if partition is not None:
                self.partitioner.current = partition
        except IndexReplaced:
            pass
        except Exception as exc:  # (one line: the write is not the user's mistake, nor lost)
            self.partitioner.failed = True
            log.warning(
                "building the filter partition of %s failed (%s): filtered searches walk the graph meanwhile",
                self.folder.name,
                exc or type(exc).__name__,
            )

    def _start_placing(self, index: Any) -> None:
        """Place the index just read onto huge pages in a background thread (see :meth:`_place_later`)."""
        if available() and not self._closed:
            self._placing = threading.Thread(target=self._place_later, args=(index,), daemon=True)
            self._placing.start()

    def _place_later(self, index: Any) -> None:
        """Move an opened index's vectors and links onto huge pages a step (:data:`PLACE_STEP`) at a
        time, each under the gate's write hold: opening does not wait for it (at a million 384-d
        vectors it took five seconds of the open's ten), and a search waits for one step at most. A
        write meanwhile places what it touches itself (see :meth:`_add`); a rebuilt or reloaded index
        ends it."""
        try:
            done = False
            while not done and not self._closed:
                started = time.perf_counter()
                with self._gate.writing():
                    if self.index is not index:
                        return
                    self._placed, done = place_step(index, self._placed, PLACE_STEP)
                # The searches the step held off go first (else this thread would take the gate back at
                # once, step after step, and they would wait for the whole move); then as long again
                # outside the gate, so that searches get at least half the time.
                self._gate.let_waiting_readers_in()
                time.sleep(time.perf_counter() - started)
        except Exception:  # (searches go on, on 4 KiB pages)
            log.exception("placing the index of %s on huge pages failed", self.folder.name)

    def wait_placed(self, timeout: float | None = None) -> None:
        """Wait for the background placement of an opened index, if one runs (tests, benchmarks)."""
        placing = self._placing
        if placing is not None:
            placing.join(timeout)

    def close(self) -> None:
        """Stop the background work on this index (its placement, its filter partition's builds)."""
        self._closed = True
        self.partitioner.close()

    def _forget_index(self) -> None:
        """Release what refers to the index just replaced (its partition, its storage's proxy)."""
        self._storage = None
        self.partitioner.reset()

    def _partition_job(self, source: Any) -> Callable[[], Partition | None]:
        """What makes the partition of ``source`` that :meth:`Partitioner.due` asks for when it runs (a
        build, an extension), or None where nothing is due."""

        def job() -> Partition | None:
            due = self.partitioner.due(source, int(source.ntotal))
            if due == "build":
                return self._new_partition(source)
            return self._extended(source) if due == "extend" else None

        return job

    def _new_partition(self, source: Any, progress: ProgressFn | None = None) -> Partition:
        copy, distances = self._partition_reads(source)
        count = int(source.ntotal)
        return build_partition(copy, count, self.dim, self.metric, source, progress=progress, distances=distances)

    def _extended(self, source: Any) -> Partition:
        current = self.partitioner.usable(source, int(source.ntotal))
        if current is None:  # (dropped meanwhile: the index was replaced)
            raise IndexReplaced("the index was rebuilt or reloaded before its partition was extended")
        return extend_partition(current, self._partition_reads(source)[0], int(source.ntotal))

    def _partition_reads(
        self, source: Any
    ) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
        """How a partition of ``source`` reads its vectors (``copy(positions)``) and scores one query
        against some (``distances(query, positions)``), each under the read gate; both raise
        IndexReplaced once ``source`` is no longer the index."""

        def storage() -> Any:  # (the caller holds the read gate)
            if self.index is not source:
                raise IndexReplaced("the index was rebuilt or reloaded while its partition was built")
            return self._flat_storage()

        def copy(positions: np.ndarray) -> np.ndarray:
            with self._gate.reading():
                return storage().reconstruct_batch(positions)

        def distances(query: np.ndarray, positions: np.ndarray) -> np.ndarray:
            query, positions = np.ascontiguousarray(query, dtype=np.float32), positions.astype(np.int64)
            values = np.empty(len(positions), dtype=np.float32)
            with self._gate.reading():
                storage().compute_distance_subset(
                    1, faiss.swig_ptr(query), len(positions), faiss.swig_ptr(values), faiss.swig_ptr(positions)
                )
            return values

        return copy, distances

    def search_direct(
        self, queries: np.ndarray, k: int, ef_search: int | None = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """An unfiltered search of an IDMap2 index without tombstones, on its inner index: FAISS's
        ``(distances, positions)`` and the label (rowid) of each position with a trailing -1, so that
        position -1 (no result) reads -1. None where that is not the whole answer (tombstones to
        skip, no id map) or there is nothing to search. (The single-query hot path: one call.)"""
        gate = self._gate
        gate.enter_read()  # (not its context manager: a generator's frames cost more than the gate)
        try:
            inner = None if self.tombstones else self._inner()
            if inner is None or len(inner[1]) == 1:
                return None
            if k > (ef_search or DEFAULT_EF_SEARCH) and self._is_hnsw:
                # A beam narrower than k loses neighbours (FAISS keeps efSearch as set: recall@100 at
                # ef 64 was 0.978 on Fashion-MNIST); hnswlib's rule, max(ef, k).
                ef_search = k
            params = self._unfiltered_params(ef_search, nprobe, self._ids)
            distances, positions = inner[2](inner[0], queries, min(k, len(inner[1]) - 1), params, self.dim)
            return distances, positions, inner[1]
        finally:
            gate.leave_read()

    def _inner(self) -> tuple[Any, np.ndarray, Callable[..., tuple[np.ndarray, np.ndarray]]] | None:
        """An IDMap2 index's inner index, its positions' labels (see :meth:`search_direct`) and how it is
        searched (:func:`search_raw`, or :func:`scan_raw` for an index that scans), kept until the id
        map or the index changes: fetching the inner index's proxy and mapping missing results each
        query cost more than the rest of the mapping. None for an index without an id map (IVF)."""
        if not isinstance(self.index, faiss.IndexIDMap2):
            return None
        if self._ids is None:
            self._ids = faiss.vector_to_array(self.index.id_map)
        direct = self._direct
        if direct is None or direct[0] is not self.index or direct[1] is not self._ids:
            search = search_raw if self.factory.startswith("HNSW") else scan_raw
            direct = self._direct = (self.index, self._ids, self.index.index, np.append(self._ids, -1), search)
        return direct[2], direct[3], direct[4]

    def _search_params(self, allowed: np.ndarray | None, ef_search: int | None, nprobe: int | None) -> Any:
        """Parameters with the selector a search needs (a filter's matches, or all but the tombstones),
        built once per breadth and match array and kept while the positions they name hold (an IDMap2
        index's selectors name its inner index's positions)."""
        positions = self._ids if self._inner() is not None else None
        if allowed is not None:
            # Built once per cached match array (the backend keeps one per filter until a write), not once
            # per query.
            key = (id(allowed), len(allowed), ef_search, nprobe)
            found = self._filtered_params.get(key)
            if found is not None and found[0] is allowed and found[1] is positions:
                return found[2]
            params = self._new_search_params(allowed, ef_search, nprobe, positions)
            if len(self._filtered_params) >= FILTERED_PARAMS_CACHE:
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread evicted first
                    self._filtered_params.pop(next(iter(self._filtered_params)))
            self._filtered_params[key] = (allowed, positions, params)  # the arrays are kept: their ids stay theirs
            return params
        return self._unfiltered_params(ef_search, nprobe, positions)

    def _members_of(self, allowed: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Whether each of the inner index's positions (``positions``: their labels) is one of the
        ``allowed`` rowids, kept per match array while the positions hold (a filter's selector and its
        partition search both read it)."""
        key = (id(allowed), len(allowed))
        found = self._members.get(key)
        if found is not None and found[0] is allowed and found[1] is positions:
            return found[2]
        members = np.isin(positions, allowed)
        if len(self._members) >= FILTERED_PARAMS_CACHE:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread evicted first
                self._members.pop(next(iter(self._members)))
        self._members[key] = (allowed, positions, members)
        return members

    def _unfiltered_params(self, ef_search: int | None, nprobe: int | None, positions: np.ndarray | None) -> Any:
        """Parameters of an unfiltered search (built once per breadth, and again when the positions'
        labels change: a tombstone selector names positions)."""
        key = (ef_search, nprobe)
        found = self._params.get(key)
        if found is not None and found[0] is positions:
            return found[1]
        params = self._new_search_params(None, ef_search, nprobe, positions)
        self._params[key] = (positions, params)
        return params

    def _new_search_params(
        self, allowed: np.ndarray | None, ef_search: int | None, nprobe: int | None, positions: np.ndarray | None
    ) -> Any:
        selector = None
        if allowed is not None:
            if positions is not None:  # the inner index's positions whose labels are allowed, as a bitmap
                selector = _bitmap_selector(self._members_of(allowed, positions))
            else:
                selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        elif self.tombstones:
            tombstones = np.fromiter(self.tombstones, dtype=np.int64)
            if positions is not None:  # (positions appended later are no tombstones: a Not over them)
                excluded = _bitmap_selector(np.isin(positions, tombstones))
            else:
                excluded = faiss.IDSelectorBatch(tombstones)
            selector = faiss.IDSelectorNot(excluded)
            selector.referenced = excluded  # keep the inner selector alive while FAISS uses it
        if self._is_hnsw:
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(ef_search or DEFAULT_EF_SEARCH)
        elif self.factory.startswith("IVF"):
            params = faiss.SearchParametersIVF()
            params.nprobe = int(nprobe or max(1, self.index.nlist // 16))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
            params.referenced = selector
        return params


def _bitmap_selector(members: np.ndarray) -> Any:
    """A selector of the positions where ``members`` is true (positions past its end are not members)."""
    bitmap = np.packbits(members, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    selector.referenced = bitmap  # FAISS reads the array: it lives as long as the selector
    return selector


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions of ``wanted`` in ``ids`` (every one present)."""
    order = np.argsort(ids)
    return order[np.searchsorted(ids[order], wanted)]
