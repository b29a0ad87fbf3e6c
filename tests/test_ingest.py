"""Ingest feeds the index while SQLite writes: what that must never change."""

from __future__ import annotations

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.backends import local

from .conftest import random_vectors


def rowid_of(col, item_id: str) -> int:
    return col.backend.store.rowids_of([item_id])[item_id]


@pytest.mark.parametrize("index", ["hnsw", "flat"])
def test_a_write_that_fails_after_the_index_began_leaves_no_trace(home, monkeypatch, index):
    vectors = random_vectors(60, 8, seed=5)
    col = ls.create("c", encoder="precomputed", dim=8, metric="l2", index=index, home=home)
    col.add([f"a{i}" for i in range(30)], vectors=vectors[:30])
    started = local._IndexFeeder.start

    def start_then_fail(self, *args):  # the transaction fails once the index has its vectors
        started(self, *args)
        self.join()
        assert self.index.ntotal == 60  # the failed batch did reach the index
        raise RuntimeError("the write failed")

    monkeypatch.setattr(local._IndexFeeder, "start", start_then_fail)
    with pytest.raises(RuntimeError, match="the write failed"):
        col.add([f"b{i}" for i in range(30)], vectors=vectors[30:])
    monkeypatch.undo()
    assert col.count() == 30 and col.backend.index.ntotal == 30  # reloaded: SQLite's 30
    assert col.search(vectors[40], k=1)[0].id.startswith("a")
    # The rowids the failed batch took are given again: the index must serve the new items there.
    col.add([f"c{i}" for i in range(30)], vectors=vectors[30:])
    assert [col.search(v, k=1)[0].id for v in vectors[30:]] == [f"c{i}" for i in range(30)]
    col.close()
    reopened = ls.open("c", home=home)
    assert reopened.count() == 60 and reopened.search(vectors[45], k=1)[0].id == "c15"
    reopened.close()


def test_a_deleted_rowid_is_never_given_again(home):
    """HNSW tombstones are rowids: a new item must never take a deleted item's rowid."""
    vectors = random_vectors(3, 8, seed=6)
    col = ls.create("c", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add(["a", "b"], vectors=vectors[:2])
    last = rowid_of(col, "b")
    col.delete(["b"])
    col.add(["c"], vectors=vectors[2:])
    assert rowid_of(col, "c") > last
    assert col.search(vectors[2], k=1)[0].id == "c"
    col.upsert(["a"], vectors=vectors[1:2])
    assert rowid_of(col, "a") > rowid_of(col, "c")
    assert col.search(vectors[1], k=1)[0].id == "a" and col.count() == 2
    col.close()


def test_many_batches_keep_ids_vectors_and_index_in_step(home):
    vectors = random_vectors(500, 8, seed=7)
    col = ls.create("c", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    for start in range(0, 500, 100):
        col.add([str(i) for i in range(start, start + 100)], vectors=vectors[start : start + 100])
    got = col.get(["0", "250", "499"], with_vectors=True)
    assert [np.array_equal(item.vector, vectors[int(item.id)]) for item in got] == [True] * 3
    assert col.backend.index.ntotal == 500
    assert all(col.search(vectors[i], k=1)[0].id == str(i) for i in range(0, 500, 37))
    col.close()
