"""Choosing how a filtered vector search runs, from the filter's match count (known before searching).

Four plans, by what each costs per query, and a fifth for filters that come back:

- ``exact``: exact k-NN over the matching float vectors, held in memory (gathered once per filter
  and collection version, from the index when it keeps floats, else from SQLite; see
  :class:`SubsetCache`). It costs one distance per match, so it wins when the matches are few.
- ``index``: the ANN index with an ID selector, its breadth scaled to the selectivity ``s``, because a
  walk that skips most of the nodes it meets needs a wider beam to collect k allowed neighbours
  (HNSW: :func:`filtered_ef_search`; IVF ``nprobe`` ``nprobe / s``). It costs about six distances
  per unit of efSearch for HNSW, each dearer than an exact scan's (:func:`exact_is_cheaper`), and
  the listed vectors for IVF.
- ``scan``: the index's own exact scan with the selector (a flat index too large to gather).
- ``partition``: for HNSW, once the index has a k-means partition of its vectors (built after
  filtered walks have cost as much: :mod:`latentsearch.index.partition`), the matches in the lists
  nearest the query, each at about a walk distance's cost (:func:`partition_cost`). It wins where a
  walk would pass many excluded nodes and the matches are too many to scan: filters of about 3% to
  20% of the items.

A filter whose HNSW walks have cost as much as a graph of its own matches would is then searched on
one, built in the background (``subindex``: :mod:`latentsearch.index.subindex`), at the caller's
breadth.

A query whose ANN walk still finds fewer than k allowed neighbours is answered exactly (``exact``).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from latentsearch.index.partition import MIN_VECTORS, list_count, probe_count
from latentsearch.index.specs import DEFAULT_EF_SEARCH
from latentsearch.limits import MAX_EF_SEARCH

SUBSET_CACHE_BYTES = 512 << 20  # gathered match vectors kept between searches, at most
# Exact search or the walk, by what each costs a single query (FAISS 1.15, x86-64 AVX2; the walk and
# exact columns of benchmarks.breadth). An exact scan costs about one unit per float of the matches'
# vectors (0.1-0.16 ns, streamed); a walk's distance costs WALK_FLOAT_COST units per float (one vector
# at a time, wherever it lies) plus WALK_DISTANCE_OVERHEAD units of graph and heap work (~100 ns),
# and a walk computes about WALK_DISTANCES_PER_EF distances per unit of efSearch (6.3 on
# Fashion-MNIST; clustered data walk more, 9-14, where exact search then wins more often than
# planned). The fixed part is why low-dimensional vectors cross over late: exact search is planned
# up to ~24 × efSearch matches at 784-d, ~71 × at 128-d.
WALK_DISTANCES_PER_EF = 6
WALK_FLOAT_COST = 2.4
WALK_DISTANCE_OVERHEAD = 500
# A partition search's fixed part, in the same units: its centroid scan is ``lists × dim`` of them
# (streamed), and its numpy steps about 45 µs (Fashion-MNIST, 245 lists: 285 µs for 436 candidates).
PARTITION_OVERHEAD = 300_000
EXACT_SCAN_LIMIT = 200_000  # matches of a flat index gathered for exact search; more: the index's own scan


@dataclass(frozen=True)
class Plan:
    """How one filtered search runs: ``kind`` (``exact``, ``index``, ``subindex``, ``partition`` or ``scan``)
    and the breadth the index searches with (``ef_search`` for HNSW, ``nprobe`` for IVF and for the
    partition's ``lists``; None where unused). A partition plan keeps the walk's ``ef_search``, for an
    index that lost its partition meanwhile."""

    kind: str
    matches: int
    ef_search: int | None = None
    nprobe: int | None = None
    lists: int | None = None
    wants_partition: bool = False  # an index plan a partition would beat: its time counts towards one

    def describe(self) -> str:
        """One line for ``--explain``: ``index efSearch 203 with a selector over 6,053 matches``."""
        if self.kind == "partition":
            return f"partition, {self.nprobe} of {self.lists} k-means lists, over {self.matches:,} matches"
        breadth = f" efSearch {self.ef_search}" if self.ef_search else f" nprobe {self.nprobe}" if self.nprobe else ""
        how = {
            "exact": "exact k-NN in memory",
            "index": f"index{breadth} with a selector",
            "subindex": f"HNSW sub-index of the matches{breadth}",
            "scan": "index scan",
        }
        return f"{how[self.kind]} over {self.matches:,} matches"


def filtered_ef_search(ef_search: int, k: int, share: float) -> int:
    """The HNSW breadth of a walk that keeps only ``share`` of the nodes it meets, for ``k`` results
    at about the recall of an unfiltered walk at ``ef_search``: the larger of two needs.

    - ``ef / √s``: the walk spreads wider before it settles (what a small k needs: for k = 1 at 1%,
      recall 0.98, where the other term alone gives 0.92).
    - ``max(ef, k) + k·(1/s − 1)``: room in the beam for the k·(1/s − 1) excluded nodes that lie, on
      average, among the nearest ones up to the k-th allowed. Without it a large k starves: at k = 100
      under a 10% filter on Fashion-MNIST, ``ef / √s`` alone found 0.78 of the true neighbours
      (0.998 with it).

    Measured on Fashion-MNIST (784-d) and clustered synthetic data (64-d and 128-d) for k 1–100 and
    filters from 50% to 1%; the second term alone would be cheaper for k = 10 at 10% (efSearch 154,
    not 203) but lost recall on the clustered data (0.978 against 0.983)."""
    scaled = max(ef_search, math.ceil(ef_search / math.sqrt(share)))
    excluded = max(ef_search, k) + math.ceil(k * (1 / share - 1))
    return min(MAX_EF_SEARCH, max(scaled, excluded))


def walk_cost(ef_search: int, dim: int) -> float:
    """What an HNSW walk at ``ef_search`` costs a query (the cost model above)."""
    return WALK_DISTANCES_PER_EF * ef_search * WALK_FLOAT_COST * (dim + WALK_DISTANCE_OVERHEAD)


def exact_cost(matches: int, dim: int) -> float:
    """What an exact scan of ``matches`` vectors of ``dim`` floats costs a query (the cost model above)."""
    return matches * dim


def exact_is_cheaper(matches: int, ef_search: int, dim: int) -> bool:
    """Whether an exact scan of ``matches`` vectors of ``dim`` floats costs a query no more than an HNSW
    walk at ``ef_search`` (the cost model above)."""
    return exact_cost(matches, dim) <= walk_cost(ef_search, dim)


def partition_cost(candidates: float, lists: int, dim: int) -> float:
    """What scoring ``candidates`` list members after a scan of ``lists`` centroids costs a query (the
    cost model above: a candidate's distance costs about what a walk's does, one vector wherever it
    lies)."""
    return PARTITION_OVERHEAD + lists * dim + candidates * WALK_FLOAT_COST * (dim + WALK_DISTANCE_OVERHEAD)


@lru_cache(maxsize=1024)  # (a plan per query otherwise: the same few, made again each search)
def plan_filtered(
    matches: int,
    total: int,
    *,
    k: int,
    factory: str,
    dim: int,
    ef_search: int | None = None,
    nprobe: int | None = None,
    nlist: int = 1,
    partition: tuple[int, float] = (0, 1.0),
) -> Plan:
    """The plan for a search for ``k`` results among ``matches`` of the index's ``total`` vectors (see
    the module docstring). ``ef_search``/``nprobe`` are the caller's (None: the defaults); ``nlist`` is
    an IVF index's list count, ``partition`` an HNSW index's filter partition's list count (0: none
    yet) and probe scale. Exact search is
    planned only when the matches' vectors (``dim`` floats each) fit the cache: gathering them again
    for every query would cost more than the index."""
    share = max(matches / max(total, 1), 1e-12)
    fits = matches * dim * 4 <= SUBSET_CACHE_BYTES
    if factory.startswith("HNSW"):
        ef = filtered_ef_search(ef_search or DEFAULT_EF_SEARCH, k, share)
        exact, walk = exact_cost(matches, dim) if fits else math.inf, walk_cost(ef, dim)
        lists, scale = partition
        partitioned = lists or (list_count(total) if total >= MIN_VECTORS else 0)  # (one to come, if none)
        breadth = scale * (ef_search or DEFAULT_EF_SEARCH) / DEFAULT_EF_SEARCH
        probe = probe_count(partitioned, k, share, breadth) if partitioned else 0
        cost = partition_cost(matches * probe / partitioned, partitioned, dim) if partitioned else math.inf
        if exact <= min(walk, cost if lists else math.inf):
            return Plan("exact", matches)
        if cost < walk and lists:
            return Plan("partition", matches, ef_search=ef, nprobe=probe, lists=lists)
        return Plan("index", matches, ef_search=ef, wants_partition=cost < min(walk, exact))
    if factory.startswith("IVF"):
        base = nprobe or max(1, nlist // 16)
        probe = min(nlist, max(base, math.ceil(base / share)))
        exact = matches <= probe * total / max(nlist, 1)  # the vectors its lists hold
        return Plan("exact", matches) if exact and fits else Plan("index", matches, nprobe=probe)
    return Plan("exact", matches) if matches <= EXACT_SCAN_LIMIT and fits else Plan("scan", matches)


@lru_cache(maxsize=1024)
def subindex_plan(matches: int, ef_search: int) -> Plan:
    """The plan of a search on a filter's own graph (:mod:`latentsearch.index.subindex`)."""
    return Plan("subindex", matches, ef_search=ef_search)


class SubsetCache:
    """The vectors of a filter's matches, gathered once per collection version and kept in memory
    (least recently used out first, within :data:`SUBSET_CACHE_BYTES`)."""

    def __init__(self, limit: int = SUBSET_CACHE_BYTES) -> None:
        self.limit = limit
        self._entries: OrderedDict[tuple[int, int, bytes], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._version = -1
        self._lock = threading.Lock()

    def get(self, version: int, ids: np.ndarray, gather: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The vectors of ``ids`` (sorted, unique), from the cache or ``gather(ids)``."""
        key = (version, len(ids), ids.tobytes())
        with self._lock:
            if version != self._version:
                self._entries.clear()
                self._bytes, self._version = 0, version
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        vectors = np.ascontiguousarray(gather(ids), dtype=np.float32)
        if vectors.nbytes <= self.limit:
            with self._lock:
                if version == self._version and key not in self._entries:
                    self._entries[key] = vectors
                    self._bytes += vectors.nbytes
                    while self._bytes > self.limit:
                        _, dropped = self._entries.popitem(last=False)
                        self._bytes -= dropped.nbytes
        return vectors
