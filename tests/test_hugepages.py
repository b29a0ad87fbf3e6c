"""An index's vectors and graph moved onto transparent huge pages: the bytes never change, the pages
do (where the kernel gives huge pages to advised memory, as Linux does by default)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import latentsearch as ls
from latentsearch.index import hugepages
from latentsearch.index.hugepages import HUGE_PAGE, place


def huge_pages_for_advised_memory_only() -> bool:
    try:
        return "[madvise]" in hugepages.THP_SETTING.read_text()
    except OSError:
        return False


ROOT = Path(__file__).resolve().parent.parent


# The chunk place() copies at a time: one huge page, a few, and its own (larger than these buffers).
CHUNKS = st.sampled_from([HUGE_PAGE, 3 * HUGE_PAGE, hugepages.COPY_CHUNK])


@contextlib.contextmanager
def copying_chunks_of(chunk: int) -> Iterator[None]:
    kept, hugepages.COPY_CHUNK = hugepages.COPY_CHUNK, chunk
    try:
        yield
    finally:
        hugepages.COPY_CHUNK = kept


needs_thp = pytest.mark.skipif(
    not hugepages.available(), reason="no transparent huge pages for advised memory on this kernel"
)


def huge_bytes_in(address: int, size: int) -> int:
    """AnonHugePages of the mappings that overlap ``[address, address + size)`` (/proc/self/smaps; an
    advice splits a mapping where it starts and ends)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low < address + size and address < high
            elif inside and head == "AnonHugePages:":
                total += int(line.split()[1]) * 1024
    return total


@needs_thp
@settings(max_examples=25, deadline=None)
@example(start=12_345, length=7 * HUGE_PAGE, seed=1, chunk=HUGE_PAGE)  # many pages, a chunk each
@given(
    start=st.integers(0, 3 * HUGE_PAGE),
    length=st.integers(0, 5 * HUGE_PAGE),
    seed=st.integers(0, 2**16),
    chunk=CHUNKS,
)
def test_place_keeps_every_byte(start: int, length: int, seed: int, chunk: int) -> None:
    buffer = np.random.default_rng(seed).integers(0, 256, size=9 * HUGE_PAGE, dtype=np.uint8)
    before = buffer.copy()
    address = buffer.ctypes.data
    with copying_chunks_of(chunk):
        upto = place(address, start, start + length)
    assert np.array_equal(buffer, before)
    # Placed up to the last whole huge page inside the range, or not at all.
    end_page = (address + start + length) // HUGE_PAGE * HUGE_PAGE
    first_page = -(-(address + start) // HUGE_PAGE) * HUGE_PAGE
    assert upto == (end_page - address if end_page > first_page else start)


@needs_thp
@settings(max_examples=25, deadline=None)
@example(zeros_from=5 * HUGE_PAGE + 7, seed=1, chunk=HUGE_PAGE)  # several pages to keep, a chunk each
@given(zeros_from=st.integers(0, 6 * HUGE_PAGE), seed=st.integers(0, 2**16), chunk=CHUNKS)
def test_place_copies_only_what_is_not_zeros(zeros_from: int, seed: int, chunk: int) -> None:
    """``zeros_from``: the bytes after it are zeros and come back zeros without a copy; those before it
    are kept."""
    buffer = np.zeros(7 * HUGE_PAGE, dtype=np.uint8)
    buffer[:zeros_from] = np.random.default_rng(seed).integers(1, 256, size=zeros_from, dtype=np.uint8)
    before = buffer.copy()
    with copying_chunks_of(chunk):
        place(buffer.ctypes.data, 0, buffer.nbytes, zeros_from=zeros_from)
    assert np.array_equal(buffer, before)


@needs_thp
def test_placed_memory_is_on_huge_pages() -> None:
    # Memory NumPy did not advise (it advises arrays of 4 MiB and more): a ctypes buffer.
    size = 6 * HUGE_PAGE
    raw = (ctypes.c_ubyte * size)()
    buffer = np.ctypeslib.as_array(raw)
    buffer[:] = np.arange(size, dtype=np.uint64).astype(np.uint8)
    placed_to = place(ctypes.addressof(raw), 0, size)
    assert placed_to >= 4 * HUGE_PAGE  # (at least four whole pages fit, wherever the buffer starts)
    assert huge_bytes_in(ctypes.addressof(raw), size) >= 4 * HUGE_PAGE
    assert np.array_equal(buffer, np.arange(size, dtype=np.uint64).astype(np.uint8))


@needs_thp
def test_an_index_is_placed_step_by_step_keeping_every_byte() -> None:
    """place_step, as the background placement of an opened index calls it: each step moves at most
    its budget, the steps together move the vectors and the links but their two ends, and no byte
    changes."""
    rng = np.random.default_rng(4)
    vectors = rng.random((20_000, 64), dtype=np.float32)  # 5 MB of floats, and 5 MB of level-0 links
    index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(64, 32))
    index.add_with_ids(vectors, np.arange(20_000, dtype=np.int64) * 3)
    regions = hugepages.regions(index)
    sizes = {name: vector.byte_size() for name, vector in regions.items()}
    placed: dict = {}
    steps, done = 0, False
    while not done:
        before = {name: p.upto for name, p in placed.items()}
        placed, done = hugepages.place_step(index, placed, 2 * HUGE_PAGE)
        moved = sum(p.upto - before.get(name, 0) for name, p in placed.items())
        assert done or 0 < moved <= 2 * HUGE_PAGE + HUGE_PAGE  # (the first step skips up to a page's head)
        steps += 1
    assert steps >= sum(sizes.values()) // (2 * HUGE_PAGE) - 2
    for name, size in sizes.items():
        assert placed[name].upto >= size - 2 * HUGE_PAGE
        address = hugepages._vector_address(regions[name])
        assert huge_bytes_in(address, size) >= size - 2 * HUGE_PAGE
    assert sizes.keys() == {"vectors", "links"}
    assert np.array_equal(index.reconstruct_batch(np.arange(20_000, dtype=np.int64) * 3), vectors)


@needs_thp
@pytest.mark.parametrize("index", ["hnsw", "flat"])
def test_an_index_stays_exact_on_huge_pages_as_it_grows_and_reopens(index: str, home) -> None:
    """Vectors added in many writes (the FAISS vectors grow and move, and are placed again each time)
    are the vectors given, the answers are those of the same index unplaced, and so after a reopen."""
    rng = np.random.default_rng(3)
    dim = 256
    vectors = rng.random((6_000, dim), dtype=np.float32)  # 6 MiB of floats: three huge pages and more
    ids = [f"v{i}" for i in range(len(vectors))]
    col = ls.create("big", encoder="precomputed", dim=dim, metric="l2", index=index, home=home)
    for at in range(0, len(vectors), 1_500):
        col.add(ids[at : at + 1_500], vectors=vectors[at : at + 1_500])
    queries = rng.random((20, dim), dtype=np.float32)
    placed = col.backend.index._placed
    assert placed["vectors"].upto >= vectors.nbytes - 2 * HUGE_PAGE  # (all but the two ends)

    def answers(c: ls.Collection) -> list[list[str]]:
        return [[h.id for h in c.search(q, k=10, include=[])] for q in queries]

    def held(c: ls.Collection) -> np.ndarray:
        vi = c.backend.index
        return vi.stored_vectors(vi.held_rowids())

    found = answers(col)
    assert np.array_equal(np.sort(held(col), axis=0), np.sort(vectors, axis=0))
    col.close()

    reopened = ls.open("big", home=home)
    assert answers(reopened) == found  # (searched while the opened index is placed in the background)
    reopened.backend.index.wait_placed()
    assert reopened.backend.index._placed["vectors"].upto >= vectors.nbytes - 2 * HUGE_PAGE  # (all but the two ends)
    assert answers(reopened) == found
    reopened.close()
    # Written to while the opened index is placed in the background: the write places what it touches.
    reopened = ls.open("big", home=home)
    more = rng.random((500, dim), dtype=np.float32)
    reopened.add([f"w{i}" for i in range(500)], vectors=more)
    reopened.backend.index.wait_placed()
    assert np.array_equal(np.sort(held(reopened), axis=0), np.sort(np.vstack([vectors, more]), axis=0))
    reopened.delete([f"w{i}" for i in range(500)])  # (HNSW keeps them as tombstones until the compaction)
    reopened.compact()  # rebuilt from SQLite: into room made on huge pages first
    assert reopened.backend.index._placed["vectors"].upto >= vectors.nbytes - 2 * HUGE_PAGE  # (all but the two ends)
    assert np.array_equal(np.sort(held(reopened), axis=0), np.sort(vectors, axis=0))
    rebuilt = answers(reopened)
    if index == "flat":
        assert rebuilt == found
    else:  # a graph built anew in one pass is not the one grown in four: as good, not the same
        _, truth = faiss.knn(queries, vectors, 10)

        def recall(found_ids: list[list[str]]) -> float:
            return float(np.mean([len({ids[j] for j in t} & set(f)) / 10 for f, t in zip(found_ids, truth)]))

        assert recall(rebuilt) >= recall(found) - 0.05
    reopened.close()


OFF_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
import latentsearch as ls
from latentsearch.index import hugepages
from tests.test_hugepages import huge_bytes_in

col = ls.create("small", encoder="precomputed", dim=256, metric="l2", index="hnsw", home=Path(sys.argv[1]))
col.add([f"v{i}" for i in range(8_000)], vectors=np.ones((8_000, 256), np.float32))
vectors = hugepages.regions(col.backend.index.index)["vectors"]
size = vectors.byte_size()
print(hugepages.available(), size, huge_bytes_in(hugepages._vector_address(vectors), size))
"""


@pytest.mark.parametrize("setting", ["0", "1"])
def test_turned_off_by_the_environment(setting: str, tmp_path) -> None:
    """LATENTSEARCH_HUGE_PAGES=0: nothing placed (in a fresh process, whose heap no earlier placement
    has touched); the same script without it places the vectors."""
    env = {**os.environ, "LATENTSEARCH_HUGE_PAGES": setting}
    run = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    available, size, huge = run.stdout.split()
    assert int(size) == 8_000 * 256 * 4
    if setting == "0":
        assert available == "False"
        if huge_pages_for_advised_memory_only():  # (else the kernel may give them unasked)
            assert int(huge) == 0
    elif hugepages.available():
        assert available == "True" and int(huge) >= 2 * HUGE_PAGE


@needs_thp
def test_a_search_held_off_by_a_step_of_the_move_goes_before_the_next(home, monkeypatch) -> None:
    """The background move of an opened index lets the searches one of its steps held off in before
    it takes the gate again (a released lock is not handed to its waiters: without this, the move took
    the gate back at once, step after step, and a search mostly waited for all of it)."""
    import threading

    from latentsearch.index import faiss_index

    steps, in_step, release, opened = [], threading.Event(), threading.Event(), {}
    real_step = faiss_index.place_step

    def step(index, placed, budget):  # the first step waits for the test; each records who still waits
        steps.append(opened["gate"]._waiting if "gate" in opened else None)
        if len(steps) == 1:
            in_step.set()
            assert release.wait(60)
        return real_step(index, placed, budget)

    monkeypatch.setattr(faiss_index, "place_step", step)
    monkeypatch.setattr(faiss_index, "PLACE_STEP", 2 * HUGE_PAGE)
    vectors = np.random.default_rng(5).random((20_000, 256), dtype=np.float32)  # 20 MB: several steps
    col = ls.create("moved", encoder="precomputed", dim=256, metric="l2", index="flat", home=home)
    col.add([str(i) for i in range(len(vectors))], vectors=vectors)
    col.close()
    col = ls.open("moved", home=home)
    index = col.backend.index  # (opened: the move starts)
    opened["gate"] = index._gate
    assert in_step.wait(60)
    found = []
    reader = threading.Thread(target=lambda: found.append(col.search(vectors[7], k=1)[0].id))
    reader.start()
    while index._gate._waiting == 0:  # the search waits for the step (a state, not a time)
        assert reader.is_alive()
        reader.join(0.001)
    release.set()
    reader.join(60)
    index.wait_placed()
    assert found == ["7"]
    assert len(steps) >= 3 and steps[1] == 0  # the held-off search went in before the second step
    assert index._placed["vectors"].upto >= vectors.nbytes - 2 * HUGE_PAGE
    assert col.search(vectors[9], k=1, include=[])[0].id == "9"
    col.close()
