"""Lean index files: HNSW and flat indexes keep no copy of the vectors on disk (SQLite holds them)."""

from __future__ import annotations

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.index.faiss_index import INDEX_FILE, LEAN_MAGIC, VectorIndex

from .conftest import random_vectors

N, DIM = 2000, 384  # the graph (about 280 bytes a vector) is far below the floats (1,536)


def answers(col, queries):
    return [[(h.id, round(h.score, 5)) for h in col.search(q, k=10, include=[])] for q in queries]


@pytest.mark.parametrize("index", ["hnsw", "flat"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_lean_index_keeps_no_vectors_and_answers_the_same_after_reopening(home, index, metric):
    vectors = random_vectors(N, DIM, seed=1)
    col = ls.create("c", encoder="precomputed", dim=DIM, metric=metric, index=index, home=home)
    col.add([str(i) for i in range(N)], vectors=vectors)
    col.delete(["3", "4"])  # HNSW: tombstones, whose vectors SQLite no longer has
    queries = random_vectors(20, DIM, seed=2)
    before = answers(col, queries)
    col.close()
    path = home / "c" / INDEX_FILE
    assert path.read_bytes().startswith(LEAN_MAGIC)
    assert path.stat().st_size < 0.25 * N * DIM * 4  # the graph and the id map, not the floats
    col = ls.open("c", home=home)
    assert answers(col, queries) == before
    held = col.backend.index
    assert held.ntotal == (N if index == "hnsw" else N - 2)
    if index == "hnsw":  # the tombstones' vectors came back from the file: the graph walks as before
        dead = np.array(sorted(held.tombstones), dtype=np.int64)
        expected = (
            vectors[[3, 4]] if metric == "l2" else vectors[[3, 4]] / np.linalg.norm(vectors[[3, 4]], axis=1)[:, None]
        )
        np.testing.assert_allclose(held.index.reconstruct_batch(dead), expected, rtol=1e-6)
    assert col.search(vectors[10], k=1)[0].id == "10"
    col.close()


def test_items_deleted_behind_the_checkpoint_are_tombstoned_on_reopen(home):
    vectors = random_vectors(N, DIM, seed=3)
    col = ls.create("c", encoder="precomputed", dim=DIM, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(N)], vectors=vectors)
    col.close()
    writer = ls.open("c", home=home)
    writer.backend.store.delete([str(i) for i in range(50)])  # SQLite only: index.faiss stays as it was
    writer.backend.store.close()
    col = ls.open("c", home=home)
    assert col.count() == N - 50
    found = {h.id for q in vectors[:60] for h in col.search(q, k=5, include=[])}
    assert not found & {str(i) for i in range(50)}
    assert [col.search(vectors[i], k=1)[0].id for i in range(50, 60)] == [str(i) for i in range(50, 60)]
    assert len(col.backend.index.tombstones) == 50
    col.close()


def test_an_index_file_written_with_its_vectors_is_still_read_and_then_saved_lean(home, monkeypatch):
    vectors = random_vectors(N, DIM, seed=4)
    monkeypatch.setattr(VectorIndex, "_lean_inner", lambda self: None)  # as FAISS writes it, floats included
    col = ls.create("c", encoder="precomputed", dim=DIM, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(N)], vectors=vectors)
    col.close()
    path = home / "c" / INDEX_FILE
    fat = path.stat().st_size
    assert fat > N * DIM * 4 and not path.read_bytes().startswith(LEAN_MAGIC)
    monkeypatch.undo()
    col = ls.open("c", home=home)
    assert col.search(vectors[7], k=1)[0].id == "7"
    col.add(["new"], vectors=random_vectors(1, DIM, seed=5))
    col.close()
    assert path.read_bytes().startswith(LEAN_MAGIC) and path.stat().st_size < fat / 4
    col = ls.open("c", home=home)
    assert col.count() == N + 1 and col.search(vectors[7], k=1)[0].id == "7"
    col.close()


def test_many_passage_vectors_are_read_by_one_scan_in_id_order_with_the_lookups_answer(home, monkeypatch):
    from latentsearch.errors import ItemNotFoundError
    from latentsearch.storage import store as store_module

    vectors = random_vectors(N, DIM, seed=6)
    col = ls.create("c", encoder="precomputed", dim=DIM, metric="l2", index="flat", home=home)
    col.add([str(i) for i in range(N)], vectors=vectors)
    store = col.backend.store
    rowids = store.rowids_of([str(i) for i in range(N)])
    gone = rowids["5"] << store_module.PASSAGE_BITS
    col.delete(["5"])
    order = np.random.default_rng(0).permutation([i for i in range(N) if i != 5])
    wanted = np.array([rowids[str(i)] << store_module.PASSAGE_BITS for i in order])
    scans = []
    scan = store_module.Store._passage_vectors_by_scan
    monkeypatch.setattr(
        store_module.Store, "_passage_vectors_by_scan", lambda *a, **kw: scans.append(1) or scan(*a, **kw)
    )
    monkeypatch.setattr(store_module, "SCAN_MIN", 10**9)
    looked_up = store.passage_vectors(wanted, DIM)
    monkeypatch.setattr(store_module, "SCAN_MIN", 10)
    scanned = store.passage_vectors(wanted, DIM)
    assert len(scans) == 1  # the second read scanned, the first looked ids up
    np.testing.assert_array_equal(scanned, looked_up)
    np.testing.assert_array_equal(scanned, vectors[order])
    with_gone = store.passage_vectors(np.append(wanted, gone), DIM, missing_ok=True)  # a deleted row: zeros
    assert len(scans) == 2 and not with_gone[-1].any()
    np.testing.assert_array_equal(with_gone[:-1], vectors[order])
    with pytest.raises(ItemNotFoundError):
        store.passage_vectors(np.append(wanted, gone), DIM)
    assert len(scans) == 3
    spread = np.argsort(wanted)[::180]  # 12 ids spread over 2,000 rows: looked up, not scanned
    np.testing.assert_array_equal(store.passage_vectors(wanted[spread], DIM), vectors[order[spread]])
    assert len(scans) == 3
    col.close()
    col = ls.open("c", home=home)  # the lean flat index's open reads every vector by the scan
    assert col.search(vectors[order[0]], k=1)[0].id == str(order[0]) and len(scans) == 4
    col.close()
