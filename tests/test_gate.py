"""Searches and changes of one index in one process: the gate between them, and a collection searched
from one thread while another writes to it (which crashed the process before the gate)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from latentsearch.index.gate import ReadWriteGate

WAIT = 30.0  # seconds: a bound on waiting for another thread, never a timing that decides the outcome


def wait_until(condition, what: str) -> None:
    """Wait (bounded) for another thread to reach a state it signals by ``condition``."""
    event = threading.Event()
    for _ in range(int(WAIT / 0.001)):
        if condition():
            return
        event.wait(0.001)
    raise AssertionError(f"timed out waiting for {what}")


def test_readers_share_the_gate() -> None:
    gate = ReadWriteGate()
    gate.enter_read()
    gate.enter_read()  # a second reader enters while the first is inside
    assert gate.readers == 2
    gate.leave_read()
    gate.leave_read()
    assert gate.readers == 0


def test_a_writer_waits_for_the_readers_inside_and_holds_off_new_ones() -> None:
    gate = ReadWriteGate()
    log: list[str] = []
    gate.enter_read()

    def writer() -> None:
        with gate.writing():
            log.append("write")

    def late_reader() -> None:
        with gate.reading():
            log.append("late read")

    w = threading.Thread(target=writer)
    w.start()
    wait_until(lambda: gate.writer_waiting_or_writing, "the writer to ask for the gate")
    r = threading.Thread(target=late_reader)
    r.start()
    # Neither gets in while the first reader is inside; the late reader queues behind the writer.
    w.join(0.05)  # (a chance to get in, were the gate open)
    assert w.is_alive() and r.is_alive() and log == []
    gate.leave_read()
    w.join(WAIT)
    r.join(WAIT)
    assert log == ["write", "late read"]
    assert gate.readers == 0 and not gate.writer_waiting_or_writing


def test_writers_take_turns_and_an_exception_frees_the_gate() -> None:
    gate = ReadWriteGate()
    with pytest.raises(RuntimeError), gate.writing():
        raise RuntimeError("boom")
    with gate.writing():  # not left held
        pass
    gate.enter_read()  # nor does it keep readers out
    gate.leave_read()


def test_a_reader_that_raises_leaves() -> None:
    gate = ReadWriteGate()
    with pytest.raises(ValueError), gate.reading():
        raise ValueError("bad query")
    assert gate.readers == 0
    with gate.writing():
        pass


SEARCH_WHILE_WRITING = textwrap.dedent(
    """
    import sys, tempfile, threading
    from pathlib import Path
    import numpy as np
    import latentsearch as ls

    rng = np.random.default_rng(0)
    col = ls.create("w", encoder="precomputed", dim=32, metric="l2", index=sys.argv[1], home=Path(tempfile.mkdtemp()))
    col.add([f"a{i}" for i in range(1000)], vectors=rng.random((1000, 32), dtype=np.float32))
    done, problems, searches = threading.Event(), [], [0]
    query = rng.random(32, dtype=np.float32)

    kinds = [  # ids only (the hot path), full hits (read from SQLite), an item's neighbours (the engine)
        lambda: col.search(query, k=10, include=[]),
        lambda: col.search(query, k=10),
        lambda: col.search(like="a0", k=10),
    ]

    def search() -> None:
        while not done.is_set():
            try:
                hits = kinds[searches[0] % 3]()
                searches[0] += 1
                if len(hits) != 10 or any(not isinstance(h.id, str) for h in hits):
                    problems.append(f"{len(hits)} hits: {[h.id for h in hits]}")
            except Exception as exc:  # noqa: BLE001
                problems.append(repr(exc))

    thread = threading.Thread(target=search)
    thread.start()
    for b in range(25):  # each add grows the index's vectors (and graph): FAISS moves them
        col.add([f"b{b}-{i}" for i in range(1000)], vectors=rng.random((1000, 32), dtype=np.float32))
        col.delete([f"b{b}-{i}" for i in range(0, 1000, 7)])
    done.set()
    thread.join()
    print(searches[0], len(problems), problems[:3])
    """
)


@pytest.mark.parametrize("index", ["hnsw", "flat"])
def test_searching_while_another_thread_writes(index: str, tmp_path) -> None:
    """One thread searches in a loop while another adds and deletes: no crash (in a child process:
    before the gate it died of a segmentation fault within a few adds), every answer complete."""
    script = tmp_path / "search_while_writing.py"
    script.write_text(SEARCH_WHILE_WRITING)
    run = subprocess.run([sys.executable, str(script), index], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    searches, problems, examples = run.stdout.split(maxsplit=2)
    assert int(searches) > 0
    assert int(problems) == 0, examples


def test_a_search_held_off_by_a_block_of_an_add_goes_before_the_next_block(tmp_path, monkeypatch) -> None:
    """An add writes its vectors block by block, each under the gate: a search a block held off goes
    in before the next block (a released lock is not handed to its waiters, so without the handoff
    the writer took the gate back at once and a search could wait for the whole add)."""
    import contextlib

    import numpy as np

    import latentsearch as ls
    from latentsearch.index import faiss_index

    monkeypatch.setattr(faiss_index, "ADD_BLOCK", 100)
    rng = np.random.default_rng(3)
    col = ls.create("blocks", encoder="precomputed", dim=8, metric="l2", index="flat", home=tmp_path)
    col.add([f"a{i}" for i in range(50)], vectors=rng.random((50, 8), dtype=np.float32))
    index = col.backend.index
    waiting_at_block, in_block, release = [], threading.Event(), threading.Event()

    class HoldingGate(ReadWriteGate):
        @contextlib.contextmanager
        def writing(self):
            waiting_at_block.append(self._waiting)  # who still waits as the writer asks again
            with super().writing():
                if len(waiting_at_block) == 1:  # the first block waits for the test
                    in_block.set()
                    assert release.wait(60)
                yield

    index._gate = gate = HoldingGate()
    added = rng.random((300, 8), dtype=np.float32)
    writer = threading.Thread(target=lambda: col.add([f"b{i}" for i in range(300)], vectors=added))
    writer.start()
    assert in_block.wait(60)
    found = []
    reader = threading.Thread(target=lambda: found.append(len(col.search(rng.random(8, dtype=np.float32), k=3))))
    reader.start()
    while gate._waiting == 0:  # the search waits for the block (a state, not a time)
        assert reader.is_alive()
        reader.join(0.001)
    release.set()
    writer.join(60)
    reader.join(60)
    assert found == [3]
    assert len(waiting_at_block) >= 3 and waiting_at_block[1] == 0  # it went in before the second block
    assert col.count() == 350
    col.close()
