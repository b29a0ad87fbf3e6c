"""Sub-indexes of repeated filters (issue #19): built once the walks under a filter have cost what
one costs, searched instead of the whole graph, dropped on any change, bounded in memory."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

import latentsearch as ls
import latentsearch.index.subindex as subindex
from latentsearch.index.subindex import SubIndex, SubIndexCache, subindex_bytes

from .conftest import random_vectors


def test_a_sub_index_answers_with_the_ids_and_scores_of_its_vectors():
    x = random_vectors(3_000, 16, seed=1)
    ids = np.arange(3_000, dtype=np.int64) * 7 + 5  # ids unlike positions
    sub = SubIndex(ids, x, "l2")
    queries = random_vectors(40, 16, seed=2)
    _, truth = faiss.knn(queries, x, 10)
    found = sub.search(queries, 10, ef_search=128)
    recall = np.mean([len({i for i, _ in row} & set(ids[t].tolist())) / 10 for row, t in zip(found, truth)])
    assert recall >= 0.95
    for q, row in zip(queries, found):
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
        for item, score in row:  # the score of each id is that id's own vector's
            position = (item - 5) // 7
            assert score == pytest.approx(-np.linalg.norm(q - x[position]), rel=1e-5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)  # a cosine collection's vectors: scores are cosines
    for q, row in zip(queries, SubIndex(ids, unit, "cosine").search(queries, 10, ef_search=128)):
        for item, score in row:
            assert score == pytest.approx(float(unit[(item - 5) // 7] @ q), rel=1e-5)
    wide = [i for i, _ in sub.search(queries[:1], 50_000)[0]]  # k past the size: what the walk met, once each
    assert 0 < len(wide) <= 3_000 and len(set(wide)) == len(wide) and set(wide) <= set(ids.tolist())


def _gather(vectors):
    def gather(allowed):
        return vectors[allowed]

    return gather


def test_a_sub_index_is_built_once_the_walks_cost_what_it_costs(monkeypatch):
    monkeypatch.setattr(subindex, "BUILD_SECONDS_PER_FLOAT", 1e-6)  # 2,000 × 8 floats: 0.016 s of walks
    x = random_vectors(4_000, 8, seed=3)
    allowed = np.arange(0, 4_000, 2, dtype=np.int64)
    cache = SubIndexCache()
    assert cache.charge(1, allowed, 0.010, total=10_000, dim=8, metric="l2", gather=_gather(x)) is None
    assert cache.get(1, allowed) is None
    thread = cache.charge(1, allowed, 0.010, total=10_000, dim=8, metric="l2", gather=_gather(x))
    assert thread is not None
    cache.wait()
    built = cache.get(1, allowed)
    assert built is not None and cache.nbytes == subindex_bytes(2_000, 8)
    assert cache.charge(1, allowed, 1.0, total=10_000, dim=8, metric="l2", gather=_gather(x)) is None  # built once
    assert cache.get(1, allowed.copy()) is None  # another array (another filter's matches)
    assert cache.get(2, allowed) is None  # another version of the collection
    cache.charge(2, allowed, 0.001, total=10_000, dim=8, metric="l2", gather=_gather(x))
    assert cache.nbytes == 0  # a new version starts over


def test_few_matches_or_too_many_bytes_are_never_built(monkeypatch):
    monkeypatch.setattr(subindex, "BUILD_SECONDS_PER_FLOAT", 0.0)
    x = random_vectors(4_000, 8, seed=3)
    few = np.arange(subindex.MIN_MATCHES - 1, dtype=np.int64)
    assert SubIndexCache().charge(1, few, 1.0, total=10_000, dim=8, metric="l2", gather=_gather(x)) is None
    many = np.arange(2_000, dtype=np.int64)
    small = SubIndexCache(limit=subindex_bytes(2_000, 8) - 1)
    assert small.charge(1, many, 1.0, total=10_000, dim=8, metric="l2", gather=_gather(x)) is None
    # A filter that lets most of the index through walks nearly as fast as no filter: no copy of it.
    assert SubIndexCache().charge(1, many, 1.0, total=6_000, dim=8, metric="l2", gather=_gather(x)) is None
    assert SubIndexCache().charge(1, many, 1.0, total=7_000, dim=8, metric="l2", gather=_gather(x)) is not None


def test_a_build_that_ends_after_a_change_is_dropped(monkeypatch):
    monkeypatch.setattr(subindex, "BUILD_SECONDS_PER_FLOAT", 0.0)
    release = threading.Event()
    real = subindex.SubIndex

    class Held(real):
        def __init__(self, *args, **kwargs):
            release.wait(30)  # the build is held until the collection has changed
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(subindex, "SubIndex", Held)
    x = random_vectors(4_000, 8, seed=3)
    allowed = np.arange(2_000, dtype=np.int64)
    cache = SubIndexCache()
    assert cache.charge(1, allowed, 1.0, total=10_000, dim=8, metric="l2", gather=_gather(x)) is not None
    cache.charge(2, allowed[:1_500].copy(), 0.0, total=10_000, dim=8, metric="l2", gather=_gather(x))  # version 2 seen
    release.set()
    cache.wait()
    assert cache.get(1, allowed) is None and cache.get(2, allowed) is None and cache.nbytes == 0


def test_the_least_recently_searched_sub_index_goes_first(monkeypatch):
    monkeypatch.setattr(subindex, "BUILD_SECONDS_PER_FLOAT", 0.0)
    x = random_vectors(4_000, 8, seed=3)
    first, second = np.arange(2_000, dtype=np.int64), np.arange(2_000, 4_000, dtype=np.int64)
    cache = SubIndexCache(limit=subindex_bytes(2_000, 8) * 3 // 2)  # room for one
    cache.charge(1, first, 1.0, total=10_000, dim=8, metric="l2", gather=_gather(x))
    cache.wait()
    assert cache.get(1, first) is not None
    cache.charge(1, second, 1.0, total=10_000, dim=8, metric="l2", gather=_gather(x))
    cache.wait()
    assert cache.get(1, first) is None and cache.get(1, second) is not None
    assert cache.nbytes == subindex_bytes(2_000, 8)


@pytest.fixture
def clustered(home, walks):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 24)).astype(np.float32)
    x = (centres[rng.integers(0, 20, 12_000)] + 0.35 * rng.normal(size=(12_000, 24))).astype(np.float32)
    buckets = rng.integers(0, 4, size=len(x))  # b == 0: a quarter of the items (the index plan)
    col = ls.create("clustered", encoder="precomputed", dim=24, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(len(x))], vectors=x, metadata=[{"b": int(b)} for b in buckets])
    yield col, x, buckets
    col.close()


def test_a_repeated_filter_is_searched_on_its_own_graph_until_the_collection_changes(clustered, monkeypatch):
    monkeypatch.setattr(subindex, "BUILD_SECONDS_PER_FLOAT", 0.0)  # built after the first walk
    col, x, buckets = clustered
    subset = np.flatnonzero(buckets == 0)
    queries = x[:30] + 0.2 * random_vectors(30, 24, seed=5)
    first = col.search(queries[0], k=10, where={"b": 0}, explain=True)
    assert first[0].details["plan"].startswith("index efSearch")
    col.backend.subindexes.wait()
    _, truth = faiss.knn(queries, x[subset], 10)
    recalls = []
    for q, t in zip(queries, truth):
        hits = col.search(q, k=10, where={"b": 0}, explain=True)
        assert hits[0].details["plan"] == f"HNSW sub-index of the matches efSearch 64 over {len(subset):,} matches"
        assert len(hits) == 10 and all(h.metadata == {"b": 0} for h in hits)
        recalls.append(len({int(h.id) for h in hits} & set(subset[t].tolist())) / 10)
    assert np.mean(recalls) >= 0.95

    # A write changes the collection: the next search walks the index again and sees the new item.
    col.add(["new"], vectors=queries[3:4] + 0.001, metadata=[{"b": 0}])
    hits = col.search(queries[3], k=10, where={"b": 0}, explain=True)
    assert hits[0].id == "new" and hits[0].details["plan"].startswith("index efSearch")
    col.backend.subindexes.wait()
    hits = col.search(queries[3], k=10, where={"b": 0}, explain=True)
    assert hits[0].id == "new" and hits[0].details["plan"].startswith("HNSW sub-index")


def test_walk_time_is_counted_for_a_bounded_number_of_filters(monkeypatch):
    monkeypatch.setattr(subindex, "BUILD_SECONDS_PER_FLOAT", 1.0)  # never due
    x = random_vectors(4_000, 8, seed=3)
    cache = SubIndexCache()
    arrays = [np.arange(i, i + 1_000, dtype=np.int64) for i in range(subindex.MAX_FILTERS + 10)]
    for allowed in arrays:
        cache.charge(1, allowed, 0.5, total=10_000, dim=8, metric="l2", gather=_gather(x))
    assert len(cache._entries) == subindex.MAX_FILTERS
    assert {id(a) for a in arrays[-subindex.MAX_FILTERS :]} == set(cache._entries)  # the newest kept


def test_searches_in_threads_while_the_sub_index_is_built_all_answer_alike(clustered, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(subindex, "BUILD_SECONDS_PER_FLOAT", 0.0)
    col, x, buckets = clustered
    subset = np.flatnonzero(buckets == 0)
    queries = x[:60] + 0.2 * random_vectors(60, 24, seed=8)
    _, truth = faiss.knn(queries, x[subset], 10)

    def search(i: int) -> tuple[int, float, str]:
        hits = col.search(queries[i], k=10, where={"b": 0}, explain=True)
        recall = len({int(h.id) for h in hits} & set(subset[truth[i]].tolist())) / 10
        return len(hits), recall, hits[0].details["plan"]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(search, [i % 60 for i in range(240)]))
    col.backend.subindexes.wait()
    assert all(n == 10 for n, _, _ in answers)
    assert np.mean([r for _, r, _ in answers]) >= 0.95
    assert col.search(queries[0], k=10, where={"b": 0}, explain=True)[0].details["plan"].startswith("HNSW sub-index")
