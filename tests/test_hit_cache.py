"""Hits' rows kept in memory once read (Store.hit_rows): a repeated search reads no SQLite row, and
every write, by this connection, another one or another process, is seen by the next search."""

from __future__ import annotations

import subprocess
import sys

import pytest

import latentsearch as ls
from latentsearch.storage import store as store_module
from latentsearch.storage.store import Store

from .conftest import random_vectors
from .test_change_sequence import statements


@pytest.fixture
def texts(home):
    vectors = random_vectors(30, 8, seed=4)
    col = ls.create("cached", encoder="precomputed", dim=8, metric="cosine", index="hnsw", home=home)
    ids = [f"i{n}" for n in range(30)]
    col.add(ids, vectors=vectors, texts=[f"text {n}" for n in range(30)], metadata=[{"n": n} for n in range(30)])
    yield col, vectors
    col.close()


def fields(hits: ls.Hits) -> list[tuple]:
    return [(h.id, h.text, h.metadata, h.passage and (h.passage.start, h.passage.end, h.passage.text)) for h in hits]


def test_a_repeated_search_reads_no_row(texts):
    col, vectors = texts
    first = fields(col.search(vectors[3], k=5))
    run = statements(col.backend.store)
    assert fields(col.search(vectors[3], k=5)) == first
    assert run == []  # the sequence from the -shm header, the rows from memory
    col.search(vectors[3], k=5, include=["text", "metadata"])  # rows kept by item, not by passage
    run.clear()
    for include in (["metadata"], ["text"], ["passage"]):  # fewer fields: cut from the kept rows
        hits = col.search(vectors[3], k=5, include=include)
        assert fields(hits) == [
            (
                i,
                t if "text" in include else None,
                m if "metadata" in include else None,
                p if "passage" in include else None,
            )
            for i, t, m, p in first
        ]
    assert run == []
    col.search(vectors[3], k=5, include=["vector"])  # vectors are never kept
    assert any("json_each" in sql for sql in run)


def test_rows_read_with_fewer_fields_are_not_kept(texts):
    col, vectors = texts
    narrow = col.search(vectors[4], k=5, include=["metadata"])
    assert [h.text for h in narrow] == [None] * 5 and all(h.metadata for h in narrow)
    assert col.backend.store._hit_rows == {False: {}, True: {}}
    full = col.search(vectors[4], k=5)
    assert [h.metadata for h in full] == [h.metadata for h in narrow] and all(h.text for h in full)


def test_a_hit_s_metadata_is_its_own(texts):
    col, vectors = texts
    hit = col.search(vectors[3], k=1)[0]
    hit.metadata["n"] = -1
    assert col.search(vectors[3], k=1)[0].metadata == {"n": 3}


def test_every_write_is_seen_by_the_next_search(texts, home):
    col, vectors = texts
    assert col.search(vectors[3], k=1)[0].metadata == {"n": 3}
    col.update_metadata({"i3": {"n": 30}})  # this connection
    assert col.search(vectors[3], k=1)[0].metadata == {"n": 30}

    other = ls.open("cached", home=home)  # another connection
    other.update_metadata({"i3": {"n": 31}})
    other.upsert(["i3"], vectors=vectors[3:4], texts=["new text"], metadata=[{"n": 32}])
    other.close()
    hit = col.search(vectors[3], k=1)[0]
    assert (hit.id, hit.text, hit.metadata, hit.passage.text) == ("i3", "new text", {"n": 32}, "new text")

    code = (  # another process
        "import latentsearch as ls\n"
        f"col = ls.open('cached', home={str(home)!r})\n"
        "col.update_metadata({'i3': {'n': 33}})\n"
        "col.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert col.search(vectors[3], k=1)[0].metadata == {"n": 33}

    col.delete(["i3"])
    assert "i3" not in [h.id for h in col.search(vectors[3], k=30)]


def test_a_full_cache_starts_over_and_answers_the_same(texts, monkeypatch):
    col, vectors = texts
    expected = [fields(col.search(v, k=5)) for v in vectors]
    store = col.backend.store
    for limit, size in (("HIT_CACHE_ROWS", 7), ("HIT_CACHE_BYTES", 700)):
        monkeypatch.setattr(store_module, limit, size)
        store.write_manifest({"note": limit})  # a commit: the cache starts empty
        assert [fields(col.search(v, k=5)) for v in vectors] == expected
        kept = sum(len(rows) for rows in store._hit_rows.values())
        assert kept <= 7 if limit == "HIT_CACHE_ROWS" else store._hit_rows_bytes <= 700
        monkeypatch.undo()


def test_the_cache_follows_the_sequence_not_the_connection(home):
    vectors = random_vectors(10, 4, seed=5)
    col = ls.create("seqs", encoder="precomputed", dim=4, metric="l2", home=home)
    col.add([str(i) for i in range(10)], vectors=vectors, texts=[f"t{i}" for i in range(10)])
    store = col.backend.store
    assert store.hit_rows([1], frozenset({"text", "metadata"}), by_passage=False)[1][2] == "t0"
    other = Store(col.backend.path)
    with other.write() as (conn, _):  # a write with no API behind it: only the sequence tells
        conn.execute("UPDATE items SET text = 'changed' WHERE rowid = 1")
    other.close()
    assert store.hit_rows([1], frozenset({"text", "metadata"}), by_passage=False)[1][2] == "changed"
    col.close()


def test_kept_metadata_is_copied_flat_and_parsed_when_nested(home):
    vectors = random_vectors(4, 4, seed=8)
    col = ls.create("nested", encoder="precomputed", dim=4, metric="l2", home=home)
    metadata = [{"tags": ["a", "b"], "n": 1}, {"n": 2, "s": "x", "f": 1.5, "t": True, "z": None}, {}, {"d": {"e": 1}}]
    col.add(["0", "1", "2", "3"], vectors=vectors, metadata=metadata)
    for _ in range(2):  # read from SQLite, then from memory
        for vector, expected in zip(vectors, metadata):
            hit = col.search(vector, k=1)[0]
            assert hit.metadata == expected
            if hit.metadata:
                for value in hit.metadata.values():  # nested values are the hit's own too
                    if isinstance(value, (list, dict)):
                        value.clear()
                hit.metadata["added"] = 1
    assert [col.search(v, k=1)[0].metadata for v in vectors] == metadata
    col.close()
