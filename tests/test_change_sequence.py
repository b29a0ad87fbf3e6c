"""The change sequence read before every search: no SQLite statement while nothing was committed, and
every commit seen, by this connection, another one, or another process."""

from __future__ import annotations

import subprocess
import sys

import latentsearch as ls
from latentsearch.storage.store import Store

from .conftest import random_vectors


def statements(store: Store) -> list[str]:
    """The SQL statements the store's connection runs from now on."""
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    return seen


def test_the_sequence_is_read_from_sqlite_only_after_a_commit(home):
    vectors = random_vectors(40, 4, seed=1)
    col = ls.create("seq", encoder="precomputed", dim=4, metric="l2", home=home)
    col.add([str(i) for i in range(20)], vectors=vectors[:20])
    store = col.backend.store
    col.search(vectors[0], k=3, include=[])  # the first search loads counts and ids once
    before = store.seq
    run = statements(store)
    assert [store.seq for _ in range(5)] == [before] * 5
    col.search(vectors[0], k=3, include=[])
    assert run == []  # nothing committed: the WAL-index header answered, no statement ran

    col.add(["20"], vectors=vectors[20:21])  # this connection's own commit
    assert store.seq == before + 1
    other = Store(col.backend.path)  # another connection's commit
    with other.write() as (conn, seq):
        conn.execute("INSERT OR REPLACE INTO manifest VALUES ('note', '1')")
    other.close()
    run.clear()
    assert store.seq == seq == before + 2
    assert any("'seq'" in sql for sql in run)
    col.close()


def test_another_process_s_write_is_seen_by_the_next_search(home):
    vectors = random_vectors(40, 4, seed=2)
    col = ls.create("shared", encoder="precomputed", dim=4, metric="l2", home=home)
    col.add([str(i) for i in range(20)], vectors=vectors[:20])
    assert col.search(vectors[30], k=1, include=[])[0].id != "far"
    code = (
        "import numpy as np, latentsearch as ls\n"
        f"col = ls.open('shared', home={str(home)!r})\n"
        f"col.add(['far'], vectors=np.array([{vectors[30].tolist()}], dtype=np.float32))\n"
        "col.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert [h.id for h in col.search(vectors[30], k=1, include=[])] == ["far"]
    assert col.count() == 21
    col.close()


def test_a_read_only_store_reads_the_sequence_each_time(home, monkeypatch):
    col = ls.create("ro", encoder="precomputed", dim=4, metric="l2", home=home)
    col.add(["a"], vectors=random_vectors(1, 4, seed=3))
    written = col.backend.store.seq
    col.close()
    monkeypatch.setattr("latentsearch.storage.store.folder_writable", lambda path: False)
    store = Store(home / "ro")
    assert store.read_only
    run = statements(store)
    assert store.seq == store.seq == written
    assert sum("'seq'" in sql for sql in run) == 2  # no -shm header is trusted without WAL
    store.close()
