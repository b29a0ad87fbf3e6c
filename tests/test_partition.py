"""The filter partition (issue #19): k-means lists of an HNSW index's positions that answer filtered
searches a walk would pass many excluded nodes for; kept current by the writes (built, extended,
built anew), or built once filtered walks have cost what it costs on an index opened without one;
dropped with the index it partitions."""

from __future__ import annotations

import logging
import threading

import faiss
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import latentsearch as ls
import latentsearch.index.partition as partition_module
from latentsearch.backends import planner
from latentsearch.index.faiss_index import BULK_VECTORS
from latentsearch.index.partition import MIN_VECTORS, Partitioner, build, extend, list_count, probe_count

from .conftest import random_vectors


def add_in_small_writes(
    col, vectors: np.ndarray, metadata: list[dict] | None = None, *, step: int = 0, first: int = 0
) -> None:
    """Add items ``first..first+n-1`` in writes of ``step`` (half a bulk write unless given), each too
    small to keep the partition itself (as a collection grows item by item): the background does."""
    n, step = len(vectors), step or BULK_VECTORS // 2
    for at in range(0, n, step):
        meta = metadata[at : at + step] if metadata else None
        ids = [str(first + i) for i in range(at, min(n, at + step))]
        col.add(ids, vectors=vectors[at : at + step], metadata=meta)


def reopened_without_partition(col, home):
    """``col`` closed and opened again without its partition file (one saved by an older version, or
    lost): no write since, so its filtered walks are to pay for one."""
    from latentsearch.index.faiss_index import PARTITION_FILE

    name = col.name
    col.close()
    (home / name / PARTITION_FILE).unlink()
    col = ls.open(name, home=home)
    assert col.backend.index.partitioner.current is None
    return col


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
    """Vectors around random centres: the kind of data a partition is for."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32) * 4
    return (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def assert_lists_of_nearest_centroids(part, x: np.ndarray) -> None:
    """Each of ``x``'s positions once in ``part``'s lists, in the list of its nearest centroid."""
    n = len(x)
    assert part.assigned == n and sorted(part.order.tolist()) == list(range(n))
    assert part.offsets[0] == 0 and part.offsets[-1] == n and np.all(np.diff(part.offsets) >= 0)
    nearest = part.centroids.search(x, 1)[1][:, 0]
    for i in range(part.lists):
        members = part.order[part.offsets[i] : part.offsets[i + 1]]
        assert np.all(nearest[members] == i)


def test_every_position_is_in_the_list_of_its_nearest_centroid():
    x = clustered(3_000, 8, seed=1)
    part = build(lambda positions: x[positions], 3_000, 8, "l2", source=None)
    assert part.lists == list_count(3_000) == 27 and part.trained == 3_000
    assert_lists_of_nearest_centroids(part, x)


def test_an_extended_partition_has_the_new_positions_in_the_lists_of_their_nearest_centroids():
    x = clustered(3_800, 8, seed=2)
    part = build(lambda positions: x[positions], 3_000, 8, "l2", source=None)
    extended = extend(part, lambda positions: x[positions], 3_800)
    assert extended.centroids is part.centroids and extended.trained == 3_000
    assert extended.trained_skew == part.trained_skew == part.skew > 1  # (what drift is measured against)
    assert extended.probe_scale == part.probe_scale and extended.source is part.source
    assert_lists_of_nearest_centroids(extended, x)
    assert part.assigned == 3_000 and len(part.order) == 3_000  # (searches meanwhile keep the old one whole)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_a_partition_search_ranks_the_admitted_candidates_exactly(metric):
    x = clustered(6_000, 16, seed=2)
    storage = faiss.IndexFlatL2(16) if metric == "l2" else faiss.IndexFlatIP(16)
    storage.add(x)
    part = build(lambda positions: x[positions], 5_000, 16, metric, source=None)  # 1,000 added since
    members = np.random.default_rng(3).random(6_000) < 0.1
    rng = np.random.default_rng(4)
    queries = x[rng.integers(0, 6_000, 30)] + rng.normal(size=(30, 16)).astype(np.float32)  # near the data
    queries[0] = x[5_500]  # a tail vector, a member
    members[5_500] = True
    nprobe = probe_count(part.lists, 10, 0.1)
    distances, positions = part.search(storage, queries, 10, nprobe, members, l2=metric == "l2")
    allowed = np.flatnonzero(members)
    truth = faiss.knn(queries, x[allowed], 10, metric=faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    recall = np.mean([len(set(p.tolist()) & set(allowed[t].tolist())) / 10 for p, t in zip(positions, truth[1])])
    assert recall >= 0.95
    assert 5_500 in part.candidates(queries[:1], nprobe, members)  # the tail is searched whole
    assert metric != "l2" or positions[0, 0] == 5_500
    for q, row, found in zip(queries, distances, positions):
        assert np.all(members[found])  # only what the filter admits
        candidates = part.candidates(q[None], nprobe, members)
        exact = ((x[candidates] - q) ** 2).sum(1) if metric == "l2" else x[candidates] @ q
        best = np.sort(exact)[:10] if metric == "l2" else -np.sort(-exact)[:10]
        np.testing.assert_allclose(row, best, rtol=1e-4, atol=1e-3)  # the candidates' k best, in order
        own = ((x[found] - q) ** 2).sum(1) if metric == "l2" else x[found] @ q
        np.testing.assert_allclose(row, own, rtol=1e-4, atol=1e-3)  # each distance its own vector's
    nobody = np.zeros(6_000, dtype=bool)
    distances, positions = part.search(storage, queries[:2], 10, nprobe, nobody, l2=metric == "l2")
    assert np.all(positions == -1)


def test_the_check_stops_early_with_the_verdict_of_a_full_count():
    x = clustered(20_000, 16, seed=26, clusters=200)  # between: the least scales miss, the others pass
    part = build(lambda positions: x[positions], 20_000, 16, "l2", source=None)
    check = partition_module._Check(lambda positions: x[positions], 20_000, "l2", np.random.default_rng(3))
    check.scan(0, x)

    def full_recall(scale: float) -> float:  # every query of every filter counted, no early stop
        worst = 1.0
        for share, mask, (_, truth) in zip(partition_module.CHECK_SHARES, check.masks, check.best):
            nprobe, hits, wanted_count = probe_count(part.lists, 10, share, scale), 0, 0
            for query, wanted in zip(check.queries, truth):
                found = part.candidates(query[None], nprobe, mask)
                best = found[np.argsort(((x[found] - query) ** 2).sum(1), kind="stable")[:10]]
                hits += len(set(best.tolist()) & set(wanted[wanted >= 0].tolist()))
                wanted_count += int((wanted >= 0).sum())
            worst = min(worst, hits / wanted_count)
        return worst

    verdicts = [check.passes(part, scale) for scale in partition_module.PROBE_SCALES]
    assert verdicts == [full_recall(scale) >= partition_module.CHECK_RECALL for scale in partition_module.PROBE_SCALES]
    assert any(verdicts) and not all(verdicts)  # (the data lies between: the early stop is tried both ways)
    # Scored by FAISS on the index's own storage (what a collection's build does), the same verdicts.
    storage = faiss.IndexFlatL2(16)
    storage.add(x)

    def distances(query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        values = np.empty(len(positions), dtype=np.float32)
        storage.compute_distance_subset(
            1, faiss.swig_ptr(query), len(positions), faiss.swig_ptr(values), faiss.swig_ptr(positions)
        )
        return values

    scored = partition_module._Check(lambda positions: x[positions], 20_000, "l2", np.random.default_rng(3), distances)
    scored.scan(0, x)
    assert [scored.passes(part, scale) for scale in partition_module.PROBE_SCALES] == verdicts


def test_a_partition_checks_itself_and_steps_aside_where_it_misses():
    easy = clustered(20_000, 16, seed=9)
    assert build(lambda positions: easy[positions], 20_000, 16, "l2", source=None).probe_scale == 1.0
    # Gaussian noise in 64 dimensions has no clusters: a query's neighbours lie in lists all around.
    noise = random_vectors(20_000, 64, seed=10)
    part = build(lambda positions: noise[positions], 20_000, 64, "l2", source=None)
    assert part.probe_scale is None
    storage = faiss.IndexFlatL2(64)
    storage.add(noise)
    members = np.random.default_rng(11).random(20_000) < 0.1
    queries = random_vectors(40, 64, seed=12)
    allowed = np.flatnonzero(members)
    truth = allowed[faiss.knn(queries, noise[allowed], 10)[1]]
    _, found = part.search(storage, queries, 10, probe_count(part.lists, 10, 0.1), members, l2=True)
    assert np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)]) < 0.9  # rightly


@given(
    lists=st.integers(16, 4096),
    k=st.integers(1, 1000),
    share=st.floats(1e-4, 1.0),
    narrower=st.floats(1e-3, 1.0),
    wider=st.floats(1.0, 8.0),
)
def test_probes_stay_within_the_lists_and_grow_with_k_narrower_filters_and_breadth(lists, k, share, narrower, wider):
    probes = probe_count(lists, k, share)
    assert 1 <= probes <= lists
    assert probe_count(lists, k + 1, share) >= probes
    assert probe_count(lists, k, share * narrower) >= probes
    assert probe_count(lists, k, share, wider) >= probes
    assert probes >= lists // 16


def test_a_partition_is_built_once_the_walks_cost_what_it_costs(monkeypatch):
    monkeypatch.setattr(partition_module, "BUILD_SECONDS_PER_FLOAT", 1e-7)  # 20,000 × 8 floats: 0.016 s
    x = clustered(20_000, 8)
    source = object()
    partitioner = Partitioner()

    def start():
        return build(lambda positions: x[positions], 20_000, 8, "l2", source)

    assert partitioner.charge(0.010, source=source, count=20_000, dim=8, start=start) is None
    assert partitioner.usable(source, 20_000) is None
    thread = partitioner.charge(0.010, source=source, count=20_000, dim=8, start=start)
    assert thread is not None
    partitioner.wait()
    assert partitioner.usable(source, 20_000) is not None and partitioner.due(source, 20_000) is None
    assert partitioner.charge(1.0, source=source, count=20_000, dim=8, start=start) is None  # built, current
    assert partitioner.usable(object(), 20_000) is None  # another index (rebuilt, reloaded): not this one's
    # A sixteenth more added since: still used as it is; past that, its tail is to be assigned, and
    # from four times the vectors its centroids were trained on, it is to be built anew.
    assert partitioner.due(source, 21_250) is None
    assert partitioner.usable(source, 21_251) is not None and partitioner.due(source, 21_251) == "extend"
    assert partitioner.due(source, 79_999) == "extend" and partitioner.due(source, 80_000) == "build"
    assert partitioner.charge(1.0, source=source, count=21_251, dim=8, start=start) is not None
    partitioner.wait()
    assert partitioner.charge(1.0, source=source, count=9_999, dim=8, start=start) is None  # too few to pay


def test_a_build_started_before_a_reset_is_discarded(monkeypatch):
    monkeypatch.setattr(partition_module, "BUILD_SECONDS_PER_FLOAT", 0.0)
    x = clustered(10_000, 4)
    source, release = object(), threading.Event()

    def start():
        release.wait()
        return build(lambda positions: x[positions], 10_000, 4, "l2", source)

    partitioner = Partitioner()
    assert partitioner.charge(0.0, source=source, count=10_000, dim=4, start=start) is not None
    partitioner.reset()  # the index was replaced while it was built
    release.set()
    partitioner.wait()
    assert partitioner.current is None


@pytest.fixture
def no_exact(monkeypatch):
    """Filters never planned in memory: on a test's low-dimensional collection the matches' exact scan
    costs less than a walk or the partition, and the test is about those."""
    monkeypatch.setattr(planner, "SUBSET_CACHE_BYTES", 0)
    planner.plan_filtered.cache_clear()  # (plans are cached by their inputs, not by the cost model)
    yield
    planner.plan_filtered.cache_clear()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_filtered_searches_go_through_the_partition_and_keep_up_with_writes(home, no_exact, metric):
    n, dim = 12_000, 32
    x = clustered(n, dim, seed=5)
    group = np.arange(n) % 10
    col = ls.create("parted", encoder="precomputed", dim=dim, metric=metric, index="hnsw", home=home)
    add_in_small_writes(col, x, [{"g": int(g)} for g in group])
    col.backend.index.partitioner.wait()  # (the writes' background build and extension)
    assert col.backend.index.partitioner.current.assigned == n
    rng = np.random.default_rng(6)
    queries = x[rng.integers(0, n, 20)] + rng.normal(size=(20, dim)).astype(np.float32)
    col.backend.subindexes.limit = 0  # (a repeated filter's own graph would soon answer instead)

    def plan(where):
        return col.search(queries[0], k=10, where=where, explain=True)[0].details["plan"]

    assert plan("g = 3").startswith("partition, ")
    assert plan("g < 6").startswith("index efSearch")  # 60%: the walk passes few excluded nodes
    allowed = np.flatnonzero(group == 3)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    base = unit if metric == "cosine" else x
    kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    probe = queries / np.linalg.norm(queries, axis=1, keepdims=True) if metric == "cosine" else queries
    truth = faiss.knn(probe, base[allowed], 10, metric=kind)[1]
    found = [col.search(q, k=10, where="g = 3") for q in queries]
    recall = np.mean([len({int(h.id) for h in r} & set(allowed[t].tolist())) / 10 for r, t in zip(found, truth)])
    assert recall >= 0.95
    for q, hits in zip(probe, found):
        assert len(hits) == 10 and all(h.metadata["g"] == 3 for h in hits)
        for h in hits:  # scores as an unfiltered search gives them
            own = base[int(h.id)]
            expected = -np.linalg.norm(own - q) if metric == "l2" else float(own @ q)
            assert h.score == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # Written since the partition (too few to extend it): new items are searched (the tail), deleted
    # ones never answer.
    new = clustered(50, dim, seed=7)
    col.add([f"new{i}" for i in range(50)], vectors=new, metadata=[{"g": 3 if i % 2 else 4} for i in range(50)])
    col.delete([str(int(allowed[truth[0][0]]))])
    col.backend.index.partitioner.wait()
    assert col.backend.index.partitioner.current.assigned == n
    assert plan("g = 3").startswith("partition, ")
    for i in range(50):
        hits = col.search(new[i], k=3, where="g = 3")
        assert all(h.metadata["g"] == 3 for h in hits)
        assert (hits[0].id == f"new{i}") == bool(i % 2)
    assert str(int(allowed[truth[0][0]])) not in {h.id for h in col.search(queries[0], k=10, where="g = 3")}
    # An index rebuilt by compact is partitioned with it (a rebuild otherwise drops the partition: its
    # next write or its filtered walks make another), and the partition is saved with its checkpoint.
    old_partition = col.backend.index.partitioner.current
    steps: list[tuple[int, int]] = []
    col.compact(progress=lambda done, total: steps.append((done, total)))
    current = col.backend.index.partitioner.current
    assert current is not None and current is not old_partition
    assert current.assigned == n + 50 - 1  # (less the deleted one)
    # Its progress: the index's vectors rebuilt, then again from 0 as they are assigned to lists.
    restart = next(i for i in range(1, len(steps)) if steps[i][0] < steps[i - 1][0])
    assert steps[restart - 1] == steps[-1] == (n + 49, n + 49) and steps[restart] == (0, n + 49)
    assert all(a[0] <= b[0] for part in (steps[:restart], steps[restart:]) for a, b in zip(part, part[1:]))
    assert col.info()["filter_partition_lists"] == current.lists
    assert plan("g = 3").startswith("partition, ")
    assert len(col.search(queries[0], k=10, where="g = 3")) == 10
    col.close()
    col = ls.open("parted", home=home)
    assert plan("g = 3").startswith("partition, ")
    col.close()


@pytest.mark.parametrize("index", ["flat", "sq8"])
def test_compact_builds_no_partition_where_searches_could_not_use_one(home, index):
    x = random_vectors(MIN_VECTORS, 8, seed=9)
    col = ls.create("whole", encoder="precomputed", dim=8, metric="l2", index=index, home=home)
    col.add([str(i) for i in range(len(x))], vectors=x, metadata=[{"g": i % 10} for i in range(len(x))])
    col.compact()
    assert col.backend.index.partitioner.current is None and col.info()["filter_partition_lists"] == 0
    assert len(col.search(x[0], k=5, where="g = 1")) == 5
    col.close()


def test_filtered_walks_build_the_partition_by_themselves(home, no_exact, monkeypatch):
    monkeypatch.setattr(partition_module, "BUILD_SECONDS_PER_FLOAT", 1e-12)  # the first walk pays for it
    x = clustered(10_000, 8, seed=8)
    col = ls.create("walked", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(10_000)], vectors=x, metadata=[{"g": i % 10} for i in range(10_000)])
    col = reopened_without_partition(col, home)
    col.backend.subindexes.limit = 0
    index = col.backend.index
    col.search(x[0], k=5, where="g < 6")  # a walk a partition would not beat: counts for nothing
    assert index.partitioner._build is None and index.partition_shape == (0, 1.0)
    col.search(x[0], k=5, where="g = 1")
    index.partitioner.wait()
    assert index.partition_shape[0] == list_count(10_000)
    assert col.search(x[1], k=5, where="g = 1", explain=True)[0].details["plan"].startswith("partition, ")
    col.close()


def test_a_partition_that_failed_its_check_leaves_the_filters_to_the_walk(home, no_exact, monkeypatch):
    monkeypatch.setattr(partition_module, "CHECK_RECALL", 1.01)  # no probe scale can pass
    x = clustered(10_000, 8, seed=13)
    col = ls.create("unchecked", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    add_in_small_writes(col, x, [{"g": i % 10} for i in range(10_000)])
    col.backend.subindexes.limit = 0
    index = col.backend.index
    index.partitioner.wait()  # (built by the writes, in the background)
    assert index.partitioner.current is not None and index.partitioner.current.probe_scale is None
    assert index.partition_shape == (0, 1.0)
    assert col.search(x[1], k=5, where="g = 1", explain=True)[0].details["plan"].startswith("index efSearch")
    assert index.charge_filtered(1e9) is None  # and its walks build no other, nor its writes
    add_in_small_writes(col, clustered(5_000, 8, seed=16), step=1_000, first=10_000)
    index.partitioner.wait()
    assert index.partitioner.current is not None and index.partitioner.current.assigned == 10_000
    col.close()


def test_a_build_whose_index_was_replaced_ends_quietly(home, caplog, monkeypatch):
    monkeypatch.setattr(partition_module, "BUILD_SECONDS_PER_FLOAT", 0.0)
    x = clustered(10_000, 4, seed=14)
    col = ls.create("replaced", encoder="precomputed", dim=4, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(10_000)], vectors=x)
    index = col.backend.index
    stale = index.index
    col.compact()  # the index the build was started for is gone
    assert col.backend.index.index is not stale
    with pytest.raises(partition_module.IndexReplaced):
        col.backend.index._new_partition(stale)
    partitioner = Partitioner()
    partitioner.charge(0.0, source=stale, count=10_000, dim=4, start=lambda: col.backend.index._new_partition(stale))
    partitioner.wait()
    assert partitioner.current is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    col.close()


def test_a_saved_partition_keeps_what_its_centroids_were_trained_on(tmp_path):
    from latentsearch.index.partition import read_partition, write_partition

    x = clustered(3_600, 8, seed=28)
    source = object()
    part = extend(build(lambda positions: x[positions], 3_000, 8, "l2", source), lambda positions: x[positions], 3_600)
    path = tmp_path / "partition.npz"
    with path.open("wb") as handle:
        write_partition(handle, part, "sha")
    read = read_partition(path, "sha", source, "l2")
    assert (read.trained, read.assigned) == (3_000, 3_600) and np.array_equal(read.order, part.order)
    assert read.trained_skew == part.trained_skew != part.skew
    # Saved by the version before extensions (no "trained"): its centroids were trained on all of it.
    with np.load(path) as saved:
        older = {key: saved[key] for key in saved.files if key != "trained"}
    with path.open("wb") as handle:
        np.savez(handle, **{key: value for key, value in older.items() if key != "trained_skew"})
    older = read_partition(path, "sha", source, "l2")
    assert older.trained == 3_600 and older.trained_skew == older.skew


def test_the_partition_is_saved_with_its_checkpoint_and_taken_up_on_open(home, no_exact):
    from latentsearch.index.faiss_index import PARTITION_FILE

    x = clustered(12_000, 16, seed=15)
    names = [str(i) for i in range(12_000)]
    col = ls.create("kept", encoder="precomputed", dim=16, metric="l2", index="hnsw", home=home)
    col.add(names, vectors=x, metadata=[{"g": i % 10} for i in range(12_000)])  # (a bulk write: partitioned)
    col.backend.subindexes.limit = 0
    before = [[(h.id, h.score) for h in col.search(q, k=10, where="g = 2")] for q in x[:20]]
    shape = col.backend.index.partition_shape
    col.close()  # the index was checkpointed by the add: the partition is saved beside it now
    assert (home / "kept" / PARTITION_FILE).exists()

    col = ls.open("kept", home=home)
    col.backend.subindexes.limit = 0
    assert col.backend.index.partition_shape == shape  # taken up, no walk paid for it again
    assert col.search(x[0], k=10, where="g = 2", explain=True)[0].details["plan"].startswith("partition, ")
    assert [[(h.id, h.score) for h in col.search(q, k=10, where="g = 2")] for q in x[:20]] == before
    # Written to: saved again with the new checkpoint, the new vectors its tail.
    col.add(["new"], vectors=x[2:3] + 0.01, metadata=[{"g": 2}])  # beside item 2 (in g 2)
    col.close()
    col = ls.open("kept", home=home)
    assert col.backend.index.partition_shape == shape
    assert [h.id for h in col.search(x[2], k=2, where="g = 2")] == ["2", "new"]
    col.close()

    # A partition saved for another index file (a rebuilt one) is not taken up; nor is a broken file.
    saved = (home / "kept" / PARTITION_FILE).read_bytes()
    col = ls.open("kept", home=home)
    col.compact()
    col.close()
    (home / "kept" / PARTITION_FILE).write_bytes(saved)
    col = ls.open("kept", home=home)
    assert col.backend.index.partition_shape == (0, 1.0)
    col.close()
    (home / "kept" / PARTITION_FILE).write_bytes(saved[:100])
    col = ls.open("kept", home=home)
    assert col.backend.index.partition_shape == (0, 1.0)
    assert len(col.search(x[0], k=10, where="g = 2")) == 10
    col.close()


def test_a_bulk_write_builds_the_partition_with_the_index(home, no_exact, monkeypatch):
    from latentsearch.index import faiss_index

    x = clustered(BULK_VECTORS + 3_100, 8, seed=21)
    meta = [{"g": i % 10} for i in range(len(x))]
    col = ls.create("bulk", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(BULK_VECTORS)], vectors=x[:BULK_VECTORS], metadata=meta[:BULK_VECTORS])
    col.backend.subindexes.limit = 0
    index = col.backend.index
    first = index.partitioner.current
    assert first is not None and first.assigned == BULK_VECTORS
    assert index.partition_shape[0] == list_count(BULK_VECTORS)  # used from the first filtered search
    assert col.search(x[0], k=5, where="g = 1", explain=True)[0].details["plan"].startswith("partition, ")
    # Later bulk writes: up to a sixteenth more in its tail, it stays as it is; past that, the tail is
    # assigned to its lists; from four times the vectors its centroids were trained on, built anew.
    monkeypatch.setattr(faiss_index, "BULK_VECTORS", 100)
    col.add([str(i) for i in range(BULK_VECTORS, BULK_VECTORS + 100)], vectors=x[BULK_VECTORS:][:100])
    assert index.partitioner.current is first  # 100 in the tail
    col.add([str(i) for i in range(BULK_VECTORS + 100, len(x))], vectors=x[BULK_VECTORS + 100 :])
    extended = index.partitioner.current
    assert extended.assigned == len(x) and extended.centroids is first.centroids and extended.trained == BULK_VECTORS
    assert_lists_of_nearest_centroids(extended, x)
    more = clustered(4 * BULK_VECTORS - len(x), 8, seed=26)
    col.add([f"m{i}" for i in range(len(more))], vectors=more)
    rebuilt = index.partitioner.current
    assert rebuilt.centroids is not first.centroids and rebuilt.trained == rebuilt.assigned == 4 * BULK_VECTORS
    assert rebuilt.lists == list_count(4 * BULK_VECTORS)
    col.close()


def test_bulk_writes_build_no_partition_after_one_that_failed_its_check(home, monkeypatch):
    monkeypatch.setattr(partition_module, "CHECK_RECALL", 1.01)  # no probe scale can pass
    x = clustered(2 * BULK_VECTORS, 8, seed=25)
    col = ls.create("scattered", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(BULK_VECTORS)], vectors=x[:BULK_VECTORS])
    failed = col.backend.index.partitioner.current
    assert failed is not None and failed.probe_scale is None
    col.add([str(i) for i in range(BULK_VECTORS, len(x))], vectors=x[BULK_VECTORS:])  # the tail: all of it
    assert col.backend.index.partitioner.current is failed  # the data is the same kind: not built again
    col.close()


def test_a_bulk_write_whose_partition_fails_has_landed_all_the_same(home, caplog, monkeypatch):
    from latentsearch.index import faiss_index

    def fail(*args, **kwargs):
        raise MemoryError("no room for the partition")

    monkeypatch.setattr(faiss_index, "build_partition", fail)
    x = clustered(BULK_VECTORS, 8, seed=22)
    col = ls.create("failed", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(BULK_VECTORS)], vectors=x, metadata=[{"g": i % 10} for i in range(BULK_VECTORS)])
    assert col.count() == BULK_VECTORS and col.backend.index.partition_shape == (0, 1.0)
    assert "building the filter partition of failed failed (no room for the partition)" in caplog.text
    index = col.backend.index
    assert index.partitioner.due(index.index, index.ntotal) is None  # (each later write would try and log)
    hits = col.search(x[3], k=5, where="g = 3")
    assert hits[0].id == "3" and all(h.metadata["g"] == 3 for h in hits)
    col.close()


def test_small_writes_keep_the_partition_in_the_background(home, no_exact):
    x = clustered(MIN_VECTORS + 1_000, 8, seed=27)
    meta = [{"g": i % 10} for i in range(len(x))]
    col = ls.create("grown", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.backend.subindexes.limit = 0
    partitioner = col.backend.index.partitioner
    add_in_small_writes(col, x[: MIN_VECTORS - 1], meta[: MIN_VECTORS - 1], step=2_000)
    partitioner.wait()
    assert partitioner.current is None  # too few
    col.add([str(MIN_VECTORS - 1)], vectors=x[MIN_VECTORS - 1 :][:1], metadata=meta[MIN_VECTORS - 1 :][:1])
    partitioner.wait()
    built = partitioner.current
    assert built is not None and built.assigned == built.trained == MIN_VECTORS  # the write that reached it
    assert col.search(x[0], k=5, where="g = 1", explain=True)[0].details["plan"].startswith("partition, ")
    add_in_small_writes(col, x[MIN_VECTORS:], meta[MIN_VECTORS:], step=500, first=MIN_VECTORS)
    partitioner.wait()
    extended = partitioner.current  # (500 in its tail, then 1,000: past a sixteenth)
    assert extended.centroids is built.centroids and extended.assigned == len(x)
    assert_lists_of_nearest_centroids(extended, x)
    hits = col.search(x[-1], k=5, where=f"g = {(len(x) - 1) % 10}", explain=True)  # (the last item's group)
    assert hits[0].details["plan"].startswith("partition, ") and hits[0].id == str(len(x) - 1)
    col.close()


@pytest.mark.parametrize("drifted", [True, False])
def test_lists_made_uneven_by_data_unlike_their_centroids_are_built_anew(home, drifted):
    first = clustered(MIN_VECTORS, 8, seed=29)
    later = clustered(MIN_VECTORS, 8, seed=30 if drifted else 29) + (40 if drifted else 0)  # (far off, or alike)
    col = ls.create("drift", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    partitioner = col.backend.index.partitioner
    add_in_small_writes(col, first, step=2_000)
    partitioner.wait()
    built = partitioner.current
    assert built.trained == MIN_VECTORS and built.skew == built.trained_skew < 2
    add_in_small_writes(col, later[:-1], step=1_000, first=MIN_VECTORS)
    partitioner.wait()
    extended = partitioner.current  # (still fewer than twice the vectors its centroids know)
    assert extended.centroids is built.centroids and extended.assigned > 1.9 * MIN_VECTORS
    assert (extended.skew > partition_module.DRIFT_SKEW * built.trained_skew) == drifted
    col.add([str(2 * MIN_VECTORS - 1)], vectors=later[-1:])
    partitioner.wait()
    current = partitioner.current
    assert (current.trained == 2 * MIN_VECTORS and current.centroids is not built.centroids) == drifted
    assert current.skew < partition_module.DRIFT_SKEW * current.trained_skew
    col.close()


def test_closing_right_after_a_small_write_saves_the_partition_it_kept(home, monkeypatch):
    from latentsearch.index import faiss_index

    x = clustered(MIN_VECTORS + 1_000, 8, seed=31)
    col = ls.create("closed", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(MIN_VECTORS)], vectors=x[:MIN_VECTORS])  # (a bulk write: partitioned)
    release, extend_now = threading.Event(), faiss_index.extend_partition

    def held_extend(*args):  # the write's background extension, still running when the collection closes
        release.wait()
        return extend_now(*args)

    def wait_releasing(self, timeout=None):  # (close's wait for it lets it finish)
        release.set()
        return wait_now(self, timeout)

    wait_now = Partitioner.wait
    monkeypatch.setattr(faiss_index, "extend_partition", held_extend)
    monkeypatch.setattr(Partitioner, "wait", wait_releasing)
    try:
        add_in_small_writes(col, x[MIN_VECTORS:], step=1_000, first=MIN_VECTORS)  # (past a sixteenth: extended)
        col.close()
    finally:
        release.set()
    col = ls.open("closed", home=home)
    assert col.backend.index.partitioner.current.assigned == len(x)
    col.close()


def test_a_background_build_that_fails_is_one_warning_and_not_tried_again_by_each_write(home, caplog, monkeypatch):
    from latentsearch.index import faiss_index

    def fail(*args, **kwargs):
        raise MemoryError("no room for the partition")

    monkeypatch.setattr(faiss_index, "build_partition", fail)
    x = clustered(MIN_VECTORS + 2_000, 8, seed=32)
    col = ls.create("unbuilt", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    partitioner = col.backend.index.partitioner
    add_in_small_writes(col, x[:MIN_VECTORS], step=2_500)  # (the last reaches 10,000: a build in the background)
    partitioner.wait()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "building the filter partition failed (no room for the partition): filtered searches walk the graph"
    ]
    assert partitioner.current is None and partitioner.failed
    add_in_small_writes(col, x[MIN_VECTORS:], step=1_000, first=MIN_VECTORS)
    assert partitioner._build is None and len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert col.count() == len(x) and col.search(x[5], k=1)[0].id == "5"  # (the writes landed)
    col.close()


def test_a_reader_keeps_the_partition_through_another_connections_writes(home):
    x = clustered(MIN_VECTORS + 1_000, 8, seed=33)
    reader = ls.create("shared", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    reader.add([str(i) for i in range(MIN_VECTORS)], vectors=x[:MIN_VECTORS])  # (a bulk write: partitioned)
    built = reader.backend.index.partitioner.current
    writer = ls.open("shared", home=home)  # another connection, as another process's writer would be
    writer.add([str(i) for i in range(MIN_VECTORS, len(x))], vectors=x[MIN_VECTORS:])
    writer.close()
    assert reader.search(x[-1], k=1)[0].id == str(len(x) - 1)  # caught up with the write: its tail
    reader.backend.index.partitioner.wait()
    extended = reader.backend.index.partitioner.current
    assert extended.centroids is built.centroids and extended.assigned == len(x)
    reader.close()


def test_a_job_asked_for_while_one_runs_runs_again_after_it():
    release, runs = threading.Event(), []

    def job():
        runs.append(len(runs))
        release.wait()

    partitioner = Partitioner()
    thread = partitioner.start(job)
    assert thread is not None
    assert partitioner.start(job) is None and partitioner.start(job) is None  # (asked twice: runs once more)
    release.set()
    thread.join()
    assert runs == [0, 1] and partitioner._build is None


@pytest.mark.parametrize(("n", "partitioned"), [(BULK_VECTORS, True), (BULK_VECTORS - 1, False)])
def test_a_file_ingested_in_small_writes_is_partitioned_at_its_end(home, n, partitioned):
    from latentsearch.io.ingest import DEFAULT_CHUNK, Records, ingest

    x = clustered(n, 8, seed=23)
    records = Records([str(i) for i in range(n)], vectors=x, metadata=[{"g": i % 10} for i in range(n)])
    col = ls.create("file", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    assert ingest(col, records) == n and n > DEFAULT_CHUNK  # (in writes of DEFAULT_CHUNK: none a bulk one)
    current = col.backend.index.partitioner.current
    assert (current is not None and current.assigned == n) == partitioned
    col.close()


def test_a_background_build_finishing_after_a_bulk_writes_is_dropped():
    x = clustered(20_000, 8, seed=24)
    source, release = object(), threading.Event()
    partitioner = Partitioner()

    def start():  # the walks' build, of the index as it stood before the bulk write
        release.wait()
        return build(lambda positions: x[positions], 10_000, 8, "l2", source)

    thread = partitioner.charge(1e9, source=source, count=10_000, dim=8, start=start)
    bulk = partitioner.current = build(lambda positions: x[positions], 20_000, 8, "l2", source)
    release.set()
    thread.join()
    assert partitioner.current is bulk and partitioner.due(source, 20_000) is None
