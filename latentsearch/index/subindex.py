"""HNSW sub-indexes of repeated filters' matches.

A filter that comes back query after query (a tenant, a category, a facet) is searched on a small
graph of its own matches instead of walking the whole graph past the items it excludes. A walk under
a selector that lets 10% of the items through costs about twice an unfiltered search: its breadth is
widened so that it still meets k allowed neighbours, and it computes the distance to every excluded
node it passes. A graph of the matches alone costs less than an unfiltered search of the whole index.

Building one costs as much as a few hundred such walks, so it is built only for a filter that has
already cost that much in walks since the collection last changed (ski rental: whatever the queries
to come, at most about twice the time of the best choice made knowing them), in a background thread
while the walks go on, and dropped when the collection changes. Searches never wait for a build (the
one that starts it copies the matches' vectors first).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from latentsearch.index.faiss_index import search_raw
from latentsearch.index.hugepages import place_index
from latentsearch.index.specs import DEFAULT_EF_SEARCH, HNSW_EF_CONSTRUCTION, HNSW_M, faiss_metric, score_lists

log = logging.getLogger("latentsearch")

SUBINDEX_BYTES = 512 << 20  # sub-indexes kept per collection, at most (vectors and graph)
# What building costs, per float of the matches' vectors, to weigh against the walks already spent:
# HNSW32 at efConstruction 80 on one thread took 0.55 s for 6,000 Fashion-MNIST vectors (784-d).
BUILD_SECONDS_PER_FLOAT = 1.2e-7
MIN_MATCHES = 1_000  # fewer matches are searched exactly (see the planner); no graph below this
# More matches than this share of the index: the walk's breadth is widened by at most 1.8x and it costs
# little more than an unfiltered search, while a graph of the matches would copy a third of the index.
MAX_SHARE = 0.3
MAX_FILTERS = 64  # filters whose walk time is counted, besides those with a sub-index
LINK_BYTES = 2 * HNSW_M * 4 * 1.1  # level-0 links per vector, and the upper levels' share


class SubIndex:
    """An HNSW graph over some vectors, answering with their ids (``ids[i]`` is vector ``i``'s)."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, metric: str) -> None:
        self.ids = np.append(np.asarray(ids, dtype=np.int64), -1)  # (position -1, no result, reads -1)
        self.metric = metric
        self.dim = vectors.shape[1]
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss_metric(metric))
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        place_index(self.index)  # (built before any search reads it)
        self.nbytes = subindex_bytes(len(ids), vectors.shape[1])
        self._params: dict[int, faiss.SearchParametersHNSW] = {}  # per breadth (making one costs 4 µs a query)

    def search(self, queries: np.ndarray, k: int, ef_search: int | None = None) -> list[list[tuple[int, float]]]:
        """The ``k`` nearest ``(id, score)`` of each query row, best first (scores as the collection's)."""
        ef = max(int(ef_search or DEFAULT_EF_SEARCH), k)  # (a beam narrower than k loses neighbours)
        params = self._params.get(ef)
        if params is None:
            params = self._params[ef] = faiss.SearchParametersHNSW()
            params.efSearch = ef
        distances, positions = search_raw(self.index, queries, min(k, len(self.ids) - 1), params, self.dim)
        labels = self.ids[positions].tolist()
        return [
            [(i, s) for i, s in zip(row_labels, row_scores) if i >= 0]
            for row_labels, row_scores in zip(labels, score_lists(self.metric, distances))
        ]


def subindex_bytes(count: int, dim: int) -> int:
    """What a sub-index of ``count`` ``dim``-d vectors holds in memory, about."""
    return int(count * (dim * 4 + LINK_BYTES + 8))


@dataclass(eq=False)
class _Entry:
    """One filter's matches (the array the backend keeps for it): the walk time spent on it, and its
    sub-index once built."""

    allowed: np.ndarray
    walked: float = 0.0
    building: bool = False
    index: SubIndex | None = None
    used: int = 0  # when last searched (the cache's clock)


class SubIndexCache:
    """The sub-indexes of one collection's filters, for one version of it at a time (see the module
    docstring). Thread-safe; builds run in daemon threads, one at a time."""

    def __init__(self, limit: int = SUBINDEX_BYTES) -> None:
        self.limit = limit
        self._entries: dict[int, _Entry] = {}  # by id of the match array (the entry keeps the array)
        self._version = -1
        self._bytes = 0
        self._clock = 0  # for least recently used eviction
        self._build: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def get(self, version: int, allowed: np.ndarray) -> SubIndex | None:
        """The sub-index of these matches at this version, if one is built."""
        entry = self._entries.get(id(allowed))  # (a dict read: atomic; checked below)
        if entry is None or entry.index is None or entry.allowed is not allowed or self._version != version:
            return None
        self._clock += 1
        entry.used = self._clock
        return entry.index

    def charge(
        self,
        version: int,
        allowed: np.ndarray,
        seconds: float,
        *,
        total: int,
        dim: int,
        metric: str,
        gather: Callable[[np.ndarray], np.ndarray],
    ) -> threading.Thread | None:
        """Count ``seconds`` of walking under these matches (of an index of ``total`` vectors); once the
        walks have cost what a sub-index would, gather the matches' vectors (``gather(allowed)``, here)
        and build one in a thread (returned; None when none starts)."""
        matches = len(allowed)
        if not MIN_MATCHES <= matches <= MAX_SHARE * total or subindex_bytes(matches, dim) > self.limit:
            return None
        with self._lock:
            if self._closed:
                return None
            if version != self._version:
                self._entries, self._bytes, self._version = {}, 0, version
            entry = self._entries.get(id(allowed))
            if entry is None or entry.allowed is not allowed:
                self._forget_unbuilt(MAX_FILTERS - 1)
                entry = self._entries[id(allowed)] = _Entry(allowed)
            entry.walked += seconds
            due = entry.walked >= len(allowed) * dim * BUILD_SECONDS_PER_FLOAT
            if not due or entry.building or entry.index is not None or self._build is not None:
                return None
            entry.building = True
        try:
            vectors = gather(allowed)
        except Exception:  # (the walks go on; this filter is not tried again at this version)
            log.exception("gathering a filter's vectors for its sub-index failed")
            return None
        thread = threading.Thread(target=self._run, args=(version, entry, vectors, metric), daemon=True)
        with self._lock:
            self._build = thread
        thread.start()
        return thread

    def _forget_unbuilt(self, keep: int) -> None:
        """Forget the oldest filters without a sub-index (and their match arrays) past ``keep`` of them:
        a server seeing ever new filters between two writes must not keep them all."""
        unbuilt = [key for key, e in self._entries.items() if e.index is None and not e.building]
        for key in unbuilt[: max(0, len(unbuilt) - keep)]:
            del self._entries[key]

    def _run(self, version: int, entry: _Entry, vectors: np.ndarray, metric: str) -> None:
        try:
            faiss.omp_set_num_threads(1)  # (this thread's own setting: the searches keep the other cores)
            index = SubIndex(entry.allowed, vectors, metric)
        except Exception:
            log.exception("building a filter's sub-index failed; its searches walk the whole index")
            index = None
        with self._lock:
            self._build = None
            current = not self._closed and version == self._version and self._entries.get(id(entry.allowed)) is entry
            if index is None or not current:
                return  # the collection changed while it was built: the next version starts over
            entry.index = index
            self._bytes += index.nbytes
            self._clock += 1
            entry.used = self._clock
            while self._bytes > self.limit:  # least recently used out first
                oldest = min((e for e in self._entries.values() if e.index is not None), key=lambda e: e.used)
                self._bytes -= oldest.index.nbytes
                oldest.index = None
                oldest.walked = 0.0
                oldest.building = False

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the build in progress, if any (tests, benchmarks)."""
        thread = self._build
        if thread is not None:
            thread.join(timeout)

    def clear(self) -> None:
        """Drop every sub-index; a build in progress is discarded when it ends."""
        with self._lock:
            self._entries, self._bytes = {}, 0

    def close(self) -> None:
        """:meth:`clear`, and build no more."""
        with self._lock:
            self._closed = True
        self.clear()

    @property
    def nbytes(self) -> int:
        """Memory the built sub-indexes hold, about."""
        return self._bytes
