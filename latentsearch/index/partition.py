"""A k-means partition of an HNSW index's vectors, for filters the graph walks badly.

A walk under a selector that lets 10% of the items through computes the distance to every excluded
node it passes, and its beam must be about three times wider to still meet k allowed neighbours: it
costs two to three unfiltered searches. The partition answers the same query the way an IVF index
would, without a second copy of the vectors: the query's ``nprobe`` nearest centroids name lists of
positions, the filter's matches among them are the candidates, and their distances are computed on
the index's own float vectors. Under a 10% filter that is a few hundred distances, against the walk's
thousand and more (Fashion-MNIST, 60,000 × 784).

One partition serves every filter, a new one on its first query included. Building it (k-means on a
sample, then each vector's nearest centroid, then a check of its own recall that sets how many lists
a query probes, or that it is not to be used) costs as much as about a thousand walks, and a
thirtieth of loading the vectors. So the writes keep it (see ``VectorIndex.keep_partition`` and
:meth:`Partitioner.due`): the write that takes an index to MIN_VECTORS builds it; vectors added later
are candidates of every query (the tail, scanned whole) until the tail passes TAIL_SHARE of the
partitioned ones, when a write has them assigned to their nearest lists (:func:`extend`: the
centroids stay, so it costs what assigning them costs); once the index has grown RETRAIN_GROWTH-fold
since the centroids were trained, or DRIFT_GROWTH-fold into lists DRIFT_SKEW times more uneven than
they were (data unlike the vectors the centroids were trained on: a load in sorted order), a write
builds the partition anew. A bulk write does that in its own thread, a small one in a background
thread (writes and searches never wait for it). An index opened without a partition (saved by an
older version, or its file lost) gets one from its next write, or once filtered walks it would have
beaten have cost a build (ski rental, as for the sub-indexes of repeated filters). Removed vectors
are no filter's matches and are never candidates. It is saved beside the index's checkpoint, bound to
the checksum of the index file it partitions, and taken up again when that file is opened; a rebuilt
index starts without one.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from latentsearch.index.specs import faiss_metric

log = logging.getLogger("latentsearch")

MIN_VECTORS = 10_000  # fewer: a filter's matches are few enough for the exact plan or a cheap walk
SAMPLE_PER_LIST = 40  # k-means training vectors per list (FAISS warns below 39)
KMEANS_ITERATIONS = 10
COPY_BLOCK = 16_384  # vectors copied out of the index per hold of its read gate while assigning
# Vectors added since the partition took its last ones, as a share of those: past it, the next write
# has them assigned to lists. (A sixteenth: the tail then adds at most as many candidates as the
# lists a query probes, probe_count's sixteenth, hold.)
TAIL_SHARE = 1 / 16
# Vectors in the index over those its centroids were trained on: from there a write builds it anew
# (new centroids, for data that has drifted, and √n / 2 lists again). Fourfold: rebuilds cost a third
# of the last one over the index's growth.
RETRAIN_GROWTH = 4
# Or from twice as many, where the lists have become this much more uneven (Partition.skew) since then:
# the data has drifted from what the centroids were trained on, and a query's candidates grow with it.
DRIFT_SKEW = 2.0
DRIFT_GROWTH = 2
# A partition checks itself once built: the recall@10 of CHECK_QUERIES of its own vectors, each under
# random filters of CHECK_SHARES of the others, against their exact neighbours; it probes lists at the
# least of PROBE_SCALES that reaches CHECK_RECALL (clustered 128-d data needs more than Fashion-MNIST's).
CHECK_QUERIES = 64
CHECK_SHARES = (0.1, 0.03)
CHECK_K = 10
CHECK_RECALL = 0.97
PROBE_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
# What building costs per float of the index's vectors (k-means and the assignment, one thread):
# 0.5 s for 60,000 Fashion-MNIST vectors (784-d) in 122 lists.
BUILD_SECONDS_PER_FLOAT = 1.1e-8


def list_count(vectors: int) -> int:
    """Lists of a partition of ``vectors``: about √n / 2. A query probes a share of the lists (see
    :func:`probe_count`), so fewer lists cost it fewer centroids and the same candidates, while the
    build's k-means grows with the square of the lists and its assignment with the lists: at half
    FAISS's IVF guidance (√n), Fashion-MNIST's build takes 0.3 s instead of 0.7 (two cores) and its
    queries under a 10% filter keep recall@10 0.994 (0.998 at √n); text's check rejects it (at √n it
    passed only at four times the lists, where the exact plan is as fast)."""
    return max(16, min(4096, round(math.sqrt(vectors) / 2)))


def probe_count(lists: int, k: int, share: float, breadth: float = 1.0) -> int:
    """Lists a query probes for ``k`` results among a ``share`` of the vectors, at about the recall of an
    unfiltered walk at the default breadth: a sixteenth of them (recall@10 0.994 under a 10% filter on
    Fashion-MNIST), widened by √(k / 100s) where the k allowed neighbours lie among more than the
    nearest hundred (a large k, a narrow filter), and by ``breadth``: the caller's efSearch over the
    default (a caller who asks a wider walk for more recall gets more lists)."""
    widen = math.sqrt(max(1.0, k / (100 * share))) * breadth
    return min(lists, max(1, math.ceil(lists / 16 * widen)))


class IndexReplaced(RuntimeError):
    """The index being partitioned was rebuilt or reloaded meanwhile: the build is moot."""


@dataclass(eq=False)
class Partition:
    """Lists of an index's positions by nearest centroid. ``order[offsets[i]:offsets[i + 1]]`` are list
    ``i``'s positions; positions from ``assigned`` on were added since and belong to no list. Queries
    probe ``probe_scale`` times :func:`probe_count`'s lists (see :func:`build`). ``trained``: the
    positions there were when its centroids were trained, ``trained_skew`` its :attr:`skew` then
    (:func:`extend` keeps both)."""

    centroids: faiss.Index
    order: np.ndarray
    offsets: np.ndarray
    assigned: int
    source: object  # the FAISS index it partitions (a rebuilt or reloaded one is another)
    probe_scale: float | None = 1.0  # lists probed, as a multiple of probe_count's (None: not to be used)
    saved_for: str = ""  # the checksum of the index file it was last saved beside (see write_partition)
    trained: int = 0
    trained_skew: float = 1.0

    @property
    def lists(self) -> int:
        """How many lists."""
        return int(self.centroids.ntotal)

    @functools.cached_property
    def skew(self) -> float:
        """How unevenly the lists divide the positions: lists × Σ share², 1 where they are even. A
        query's candidates grow with it (for queries distributed as the vectors are)."""
        shares = np.diff(self.offsets) / max(1, self.assigned)
        return float(self.lists * np.square(shares).sum())

    def candidates(self, query: np.ndarray, nprobe: int, members: np.ndarray) -> np.ndarray:
        """Positions of the ``nprobe`` lists nearest ``query`` (one row) and of the tail, that
        ``members`` (a boolean per position) admits."""
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # (a few hundred centroids: waking a second thread costs more)
        try:
            _, probed = self.centroids.search(query, min(nprobe, self.lists))
        finally:
            faiss.omp_set_num_threads(threads)
        order, offsets = self.order, self.offsets
        parts = [order[offsets[i] : offsets[i + 1]] for i in probed[0].tolist() if i >= 0]
        if len(members) > self.assigned:
            parts.append(np.arange(self.assigned, len(members), dtype=np.int64))
        positions = np.concatenate(parts) if parts else np.empty(0, np.int64)
        return positions[members[positions]]

    def search(
        self, storage: faiss.Index, queries: np.ndarray, k: int, nprobe: int, members: np.ndarray, *, l2: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's ``(distances, positions)`` of the ``k`` nearest admitted positions of each query row,
        best first, computed on ``storage`` (the index's flat vectors); position -1 where fewer exist.
        ``l2``: distances are squared Euclidean (smaller better), else inner products (larger better)."""
        distances = np.full((len(queries), k), np.inf if l2 else -np.inf, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        for row, query in enumerate(queries):
            query = query[None]
            found = self.candidates(query, nprobe, members)
            if not len(found):
                continue
            values = np.empty(len(found), dtype=np.float32)
            storage.compute_distance_subset(
                1, faiss.swig_ptr(query), len(found), faiss.swig_ptr(values), faiss.swig_ptr(found)
            )
            keys = values if l2 else -values
            best = np.argpartition(keys, k - 1)[:k] if len(found) > k else np.arange(len(found))
            best = best[np.argsort(keys[best], kind="stable")]
            distances[row, : len(best)] = values[best]
            positions[row, : len(best)] = found[best]
        return distances, positions


def build(
    copy: Callable[[np.ndarray], np.ndarray],
    count: int,
    dim: int,
    metric: str,
    source: object,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    distances: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Partition:
    """A partition of the first ``count`` positions of an index, whose float vectors ``copy(positions)``
    gives (copied: the caller holds the index's read gate meanwhile, and writes go on between calls),
    calibrated on them (:class:`_Check`). ``distances(query, positions)``, where given, scores one
    query row against those positions' vectors as FAISS does (squared L2, else inner products) without
    copying them (else they are copied and scored here). ``progress(done, count)`` follows the vectors
    assigned to their lists (from 0 before the k-means is trained)."""
    if progress:
        progress(0, count)
    lists = list_count(count)
    rng = np.random.default_rng(seed)
    sample = copy(np.sort(rng.choice(count, size=min(count, lists * SAMPLE_PER_LIST), replace=False)))
    kmeans = faiss.Kmeans(dim, lists, niter=KMEANS_ITERATIONS, seed=seed, spherical=metric != "l2", verbose=False)
    kmeans.cp.max_points_per_centroid = SAMPLE_PER_LIST + 1  # (the sample is already drawn)
    kmeans.train(sample)
    centroids = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlat(dim, faiss_metric(metric))
    centroids.add(kmeans.centroids)
    check = _Check(copy, count, metric, rng, distances)

    def each_block(start: int, block: np.ndarray) -> None:
        check.scan(start, block)
        if progress:
            progress(start + len(block), count)

    nearest = _nearest_lists(centroids, copy, 0, count, each_block)
    order = np.argsort(nearest, kind="stable").astype(np.int64)
    offsets = np.searchsorted(nearest[order], np.arange(lists + 1)).astype(np.int64)
    partition = Partition(centroids, order, offsets, count, source, trained=count)
    partition.trained_skew = partition.skew
    partition.probe_scale = check.probe_scale(partition)
    return partition


def extend(partition: Partition, copy: Callable[[np.ndarray], np.ndarray], count: int) -> Partition:
    """``partition`` with the positions from its ``assigned`` to ``count`` in the lists of their nearest
    centroids (a new partition: searches go on with the old one meanwhile). The centroids, the probe
    scale and what they were trained on stay; ``copy`` as for :func:`build`."""
    added = np.arange(partition.assigned, count, dtype=np.int64)
    nearest = _nearest_lists(partition.centroids, copy, partition.assigned, count)
    lists = partition.lists
    was_in = np.repeat(np.arange(lists, dtype=np.int64), np.diff(partition.offsets))  # (list of each in order)
    by_list = np.argsort(np.concatenate([was_in, nearest]), kind="stable")  # (each list: old positions, then new)
    order = np.concatenate([partition.order, added])[by_list]
    offsets = partition.offsets + np.concatenate([[0], np.cumsum(np.bincount(nearest, minlength=lists))])
    return Partition(
        partition.centroids,
        order,
        offsets.astype(np.int64),
        count,
        partition.source,
        partition.probe_scale,
        trained=partition.trained,
        trained_skew=partition.trained_skew,
    )


def _nearest_lists(
    centroids: faiss.Index,
    copy: Callable[[np.ndarray], np.ndarray],
    start: int,
    stop: int,
    each_block: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """The nearest centroid of each position from ``start`` to ``stop``, their vectors copied COPY_BLOCK
    at a time (``each_block(first position, vectors)`` sees each block)."""
    nearest = np.empty(stop - start, dtype=np.int64)
    for at in range(start, stop, COPY_BLOCK):
        block = copy(np.arange(at, min(stop, at + COPY_BLOCK), dtype=np.int64))
        nearest[at - start : at - start + len(block)] = centroids.search(block, 1)[1][:, 0]
        if each_block:
            each_block(at, block)
    return nearest


class _Check:
    """Calibration of a partition on its own vectors: CHECK_QUERIES of them, each searched under random
    filters of each CHECK_SHARES (itself excluded), exact neighbours found while the partition's build
    reads every vector anyway."""

    def __init__(
        self,
        copy: Callable[[np.ndarray], np.ndarray],
        count: int,
        metric: str,
        rng: np.random.Generator,
        distances: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ):
        self.copy, self.distances, self.l2 = copy, distances, metric == "l2"
        self.kind = faiss.METRIC_L2 if self.l2 else faiss.METRIC_INNER_PRODUCT
        self.at = np.sort(rng.choice(count, size=min(count, CHECK_QUERIES), replace=False))
        self.queries = copy(self.at)
        self.masks = [rng.random(count) < share for share in CHECK_SHARES]
        for mask in self.masks:
            mask[self.at] = False
        worst = np.inf if self.l2 else -np.inf
        shape = (len(self.at), CHECK_K)
        self.best = [(np.full(shape, worst, np.float32), np.full(shape, -1)) for _ in self.masks]

    def scan(self, start: int, block: np.ndarray) -> None:
        """Take the exact neighbours among ``block`` (the vectors from position ``start``) into account."""
        for slot, mask in enumerate(self.masks):
            inside = np.flatnonzero(mask[start : start + len(block)])
            if not len(inside):
                continue
            distances, found = faiss.knn(self.queries, block[inside], min(CHECK_K, len(inside)), metric=self.kind)
            kept, kept_at = self.best[slot]
            merged = np.concatenate([kept, distances], axis=1)
            merged_at = np.concatenate([kept_at, np.where(found >= 0, start + inside[found], -1)], axis=1)
            order = np.argsort(merged if self.l2 else -merged, axis=1, kind="stable")[:, :CHECK_K]
            self.best[slot] = (np.take_along_axis(merged, order, 1), np.take_along_axis(merged_at, order, 1))

    def passes(self, partition: Partition, scale: float) -> bool:
        """Whether the partition, probing at ``scale``, finds CHECK_RECALL of the neighbours (recall@
        CHECK_K) under every checked filter. It stops at the query whose misses make that impossible:
        on data the partition does not suit, each scale's verdict comes after a few queries instead of
        all of them (scoring candidates is the check's main cost: 2.3 s of a 2.6 s build of 100,000
        clustered 384-d vectors, before)."""
        for share, mask, (_, truth) in zip(CHECK_SHARES, self.masks, self.best):
            nprobe = probe_count(partition.lists, CHECK_K, share, scale)
            allowed = (1 - CHECK_RECALL) * int((truth >= 0).sum())
            misses = 0
            for query, wanted in zip(self.queries, truth):
                found = partition.candidates(query[None], nprobe, mask)
                best = found[np.argsort(-self._scores(query, found), kind="stable")[:CHECK_K]]
                wanted = wanted[wanted >= 0]
                misses += len(wanted) - len(set(best.tolist()) & set(wanted.tolist()))
                if misses > allowed:
                    return False
        return True

    def _scores(self, query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Similarities (larger better) of one query to the vectors at ``positions``."""
        if self.distances is not None:
            values = self.distances(query, positions)
            return -values if self.l2 else values
        vectors = self.copy(positions)
        return -((vectors - query) ** 2).sum(1) if self.l2 else vectors @ query

    def probe_scale(self, partition: Partition) -> float | None:
        """The least of PROBE_SCALES at which the partition :meth:`passes`; None when none does (it is
        not used: the walk serves such data better)."""
        for scale in PROBE_SCALES:
            if self.passes(partition, scale):
                return scale
        return None


def write_partition(handle: BinaryIO, partition: Partition, index_sha256: str) -> None:
    """Write a partition (numpy's ``.npz``) for the index file whose checksum is ``index_sha256``."""
    np.savez(
        handle,
        centroids=partition.centroids.reconstruct_n(0, partition.lists),
        metric=np.int64(partition.centroids.metric_type),
        order=partition.order,
        offsets=partition.offsets,
        assigned=np.int64(partition.assigned),
        probe_scale=np.float64(np.nan if partition.probe_scale is None else partition.probe_scale),
        index_sha256=np.str_(index_sha256),
        trained=np.int64(partition.trained),
        trained_skew=np.float64(partition.trained_skew),
    )


def read_partition(path: Path, index_sha256: str, source: object, metric: str) -> Partition | None:
    """The partition :func:`write_partition` saved at ``path`` for this index file (``source`` is the
    FAISS index read from it), or None when it was saved for another one or another metric."""
    with np.load(path, allow_pickle=False) as saved:
        if str(saved["index_sha256"]) != index_sha256 or int(saved["metric"]) != faiss_metric(metric):
            return None
        centroids = faiss.IndexFlat(saved["centroids"].shape[1], faiss_metric(metric))
        centroids.add(np.ascontiguousarray(saved["centroids"], dtype=np.float32))
        order, offsets, assigned = (
            saved["order"].astype(np.int64),
            saved["offsets"].astype(np.int64),
            int(saved["assigned"]),
        )
        scale = float(saved["probe_scale"])
        # (Saved before extensions: its centroids were trained on all of it.)
        trained = int(saved["trained"]) if "trained" in saved.files else assigned
        trained_skew = float(saved["trained_skew"]) if "trained_skew" in saved.files else None
    if len(order) != assigned or len(offsets) != centroids.ntotal + 1 or offsets[-1] != assigned:
        raise ValueError("its lists do not add up")
    partition = Partition(
        centroids, order, offsets, assigned, source, None if math.isnan(scale) else scale, trained=trained
    )
    partition.trained_skew = partition.skew if trained_skew is None else trained_skew
    partition.saved_for = index_sha256
    return partition


class Partitioner:
    """One index's partition: the filtered walks' time counted towards it, and its build in a daemon
    thread (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self.enabled = True  # off: no partition is used or built (benchmarks measure the walk beside it)
        self.current: Partition | None = None
        self._walked = 0.0
        self._build: threading.Thread | None = None
        self._again = False  # a job was asked for while one ran: run it again once done
        # A build or extension failed (memory, most likely): none is tried again for this index (its
        # writes would each try and log), until it is replaced (reset) or compacted.
        self.failed = False
        self._closed = False
        self._generation = 0  # reset() counts: a build started before one is discarded
        self._lock = threading.Lock()

    def usable(self, source: object, count: int) -> Partition | None:
        """The partition of this FAISS index (of ``count`` positions now), if one is built."""
        current = self.current
        usable = current is not None and self.enabled and current.source is source and count >= current.assigned
        return current if usable else None

    def due(self, source: object, count: int) -> str | None:
        """What keeping this index's partition current asks now that it holds ``count`` positions:
        ``"build"`` (none yet, or the index has grown RETRAIN_GROWTH-fold since its centroids were
        trained, or DRIFT_GROWTH-fold into lists DRIFT_SKEW times more uneven), ``"extend"`` (its
        tail has passed TAIL_SHARE), or None: nothing (it is current, the index is too small,
        partitions are off, the last one failed its check, data whose neighbours the lists scatter,
        for which the next would fail too, or the last build failed)."""
        if count < MIN_VECTORS or not self.enabled or self.failed:
            return None
        current = self.usable(source, count)
        if current is None:
            return "build"
        if current.probe_scale is None:
            return None
        grown = count / max(1, current.trained)
        if grown >= RETRAIN_GROWTH or (grown >= DRIFT_GROWTH and current.skew > DRIFT_SKEW * current.trained_skew):
            return "build"
        return "extend" if count - current.assigned > TAIL_SHARE * current.assigned else None

    def start(self, job: Callable[[], Partition | None]) -> threading.Thread | None:
        """Run ``job`` (which makes the partition :meth:`due` asks for, or None where nothing is) in a
        daemon thread, returned, and take up what it makes unless the index was replaced meanwhile or
        a newer partition covers more. Where one runs already, it runs ``job`` again once done (the
        writes meanwhile may have made more due) and None is returned; None too once closed."""
        with self._lock:
            if self._closed:
                return None
            if self._build is not None:
                self._again = True
                return None
            thread = threading.Thread(target=self._run, args=(job, self._generation), daemon=True)
            self._build = thread
        thread.start()
        return thread

    def charge(
        self, seconds: float, *, source: object, count: int, dim: int, start: Callable[[], Partition | None]
    ) -> threading.Thread | None:
        """Count ``seconds`` of filtered search on an index of ``count`` ``dim``-d vectors whose
        partition is :meth:`due` (one opened without it, no write since); once they add up to what a
        build costs, :meth:`start` ``start``, and return its thread."""
        if self.due(source, count) is None:
            return None
        with self._lock:
            if self._closed or self._build is not None:
                return None
            self._walked += seconds
            if self._walked < count * dim * BUILD_SECONDS_PER_FLOAT:
                return None
            self._walked = 0.0
        return self.start(start)

    def _run(self, job: Callable[[], Partition | None], generation: int) -> None:
        faiss.omp_set_num_threads(1)  # (this thread's own setting: the searches keep the other cores)
        while True:
            partition = None
            try:
                partition = job()
            except IndexReplaced:
                pass  # (its successor's writes and walks ask for their own)
            except Exception as exc:  # (one line, as a bulk write's: the writes themselves have landed)
                log.warning("building the filter partition failed (%s): filtered searches walk the graph", exc)
                self.failed = True
            with self._lock:
                current = self.current  # (a bulk write may have made one over more vectors meanwhile)
                kept = not self._closed and generation == self._generation
                if partition is not None and kept and (current is None or partition.assigned >= current.assigned):
                    self.current = partition
                if not (self._again and kept) or self.failed:
                    self._build, self._again = None, False
                    return
                self._again = False

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background build or extension in progress, if any."""
        thread = self._build
        if thread is not None:
            thread.join(timeout)

    def reset(self) -> None:
        """Drop the partition (its index was replaced): searches count towards a new one from nothing,
        and a build in progress is discarded when it ends."""
        with self._lock:
            self._generation += 1
            self.current, self._walked, self.failed = None, 0.0, False

    def close(self) -> None:
        """:meth:`reset`, and build no more."""
        with self._lock:
            self._closed = True
        self.reset()
