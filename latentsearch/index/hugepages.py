"""An index's vectors and graph on transparent huge pages (Linux).

A graph walk reads vectors scattered over the whole index: with 4 KiB pages nearly every distance it
computes also misses the processor's TLB (60,000 784-d vectors span 46,000 pages; a core's TLB holds
a few thousand), and with 2 MiB pages the same vectors span 94. Measured on this project's benchmark
index, HNSW searches took 10-18% less time on huge pages, with the same graph and the same answers.

Linux's default transparent-huge-page mode (``madvise``) gives huge pages only to memory a program has
advised for them. NumPy advises its own large arrays (the filter planner's matrices); FAISS's vectors
and graph live in ``std::vector`` storage that nobody advises. :func:`place` moves a range of such
memory onto huge pages: it advises the range's whole 2 MiB pages (``MADV_HUGEPAGE``) and, a chunk at
a time, copies them out, drops their 4 KiB pages (``MADV_DONTNEED``: private memory reads as zeros
after it) and copies the bytes back, which fault in as huge pages. It runs only where nothing else
reads the memory meanwhile (an index being built, or under the search gate's write hold: an opened
index is placed a step at a time in the background, :func:`place_step`, so that opening does not wait
for it).
Where the kernel has no transparent huge pages, gives them to all memory anyway (``always``), or the
environment sets ``LATENTSEARCH_HUGE_PAGES=0``, it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

HUGE_PAGE = 2 << 20
COPY_CHUNK = 32 * HUGE_PAGE  # what place() holds a copy of at once
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.cache
def _madvise() -> Any | None:
    """libc's ``madvise`` where the kernel gives huge pages to advised memory only, else None."""
    if not sys.platform.startswith("linux") or os.environ.get("LATENTSEARCH_HUGE_PAGES", "1") == "0":
        return None
    try:
        if "[madvise]" not in THP_SETTING.read_text():
            return None
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def available() -> bool:
    """Whether :func:`place` can move memory onto huge pages here."""
    return _madvise() is not None


def place(address: int, start: int, end: int, *, zeros_from: int | None = None) -> int:
    """Move the bytes ``[start, end)`` of the memory at ``address`` onto huge pages, keeping them: the
    whole 2 MiB pages inside the range (the bytes around them stay where they are). ``zeros_from``:
    the offset from which the range holds only zeros, which need no copy. Returns the offset up to
    which the range is placed (``start`` when nothing was: too short, or not possible here). No other
    thread may read or write the range meanwhile."""
    madvise = _madvise()
    low = -(-(address + start) // HUGE_PAGE) * HUGE_PAGE
    high = (address + end) // HUGE_PAGE * HUGE_PAGE
    if madvise is None or high <= low:
        return start
    size = high - low
    pages = np.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(low))
    keep = size if zeros_from is None else min(size, max(0, address + zeros_from - low))
    if madvise(low, size, MADV_HUGEPAGE) != 0:
        return start
    # A chunk at a time, so that the copy held meanwhile is one chunk, not the index: the first write
    # to a dropped, advised 2 MiB page faults in a huge page whatever the rest of the range holds.
    for at in range(0, size, COPY_CHUNK):
        kept = pages[at : min(keep, at + COPY_CHUNK)].copy() if at < keep else None
        madvise(low + at, min(COPY_CHUNK, size - at), MADV_DONTNEED)  # (refused, it changes nothing)
        if kept is not None:
            pages[at : at + len(kept)] = kept
    return high - address


@dataclass
class Placed:
    """How much of one FAISS vector is on huge pages: its address then, the offset placed up to, and
    the bytes :func:`reserve` made room for there (0: none)."""

    address: int
    upto: int
    capacity: int = 0


def _vector_address(vector: Any) -> int:
    return int(faiss.rev_swig_ptr(vector.data(), 1).ctypes.data) if vector.size() else 0


def regions(index: Any) -> dict[str, Any]:
    """The FAISS vectors worth placing in ``index`` (an id map over HNSW-over-flat or flat): the float
    vectors, and an HNSW graph's links. Other kinds: none; nor a vector that is a view of memory FAISS
    does not own (a memory-mapped file's: dropping its pages would drop its data)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSWFlat):
        found = {"vectors": faiss.downcast_index(inner.storage).codes, "links": inner.hnsw.neighbors}
    elif isinstance(inner, faiss.IndexFlat):
        found = {"vectors": inner.codes}
    else:
        return {}
    return {name: vector for name, vector in found.items() if vector.is_owned}


def reserve(vector: Any, nbytes: int, placed: Placed | None) -> Placed | None:
    """Make room in ``vector`` (a FAISS ``MaybeOwnedVector``) for ``nbytes`` on huge pages before it
    grows to them, so that what is added faults straight into huge pages instead of being copied onto
    them afterwards: the vector is grown to ``nbytes`` (past its capacity ``std::vector`` moves it,
    with its bytes, to room for twice its size; only ``nbytes`` are touched, as FAISS's own growth
    would), its new part is placed as the zeros it is, what had not been placed yet is copied, and it
    is shrunk back to its size, keeping the room. Returns the new record (``placed`` when there is
    room already or nothing can be placed)."""
    address, size = _vector_address(vector), vector.byte_size()
    if not available() or (placed is not None and placed.address == address and placed.capacity >= nbytes):
        return placed
    vector.resize(nbytes)
    address = _vector_address(vector)
    start = placed.upto if placed is not None and placed.address == address else 0  # (not moved: placed up to)
    upto = place(address, min(start, size), nbytes, zeros_from=size)
    vector.resize(size)
    return Placed(address, max(upto, start), nbytes)


def reserve_vectors(index: Any, added: int, placed: dict[str, Placed]) -> dict[str, Placed]:
    """:func:`reserve` in ``index``'s float vectors for ``added`` more (before a write adds them)."""
    vectors = regions(index).get("vectors")
    if vectors is None:
        return placed
    grown = reserve(vectors, vectors.byte_size() + added * index.d * 4, placed.get("vectors"))
    return placed if grown is None else {**placed, "vectors": grown}


def place_index(index: Any, placed: dict[str, Placed] | None = None) -> dict[str, Placed]:
    """Place what ``index``'s :func:`regions` hold beyond what ``placed`` (from an earlier call on the
    same index) says is placed: all of a vector that has moved since (a growing vector is copied to
    new memory), else its new tail. Returns the new record."""
    placed = dict(placed or {})
    if not available():
        return placed
    for name, vector in regions(index).items():
        address, size = _vector_address(vector), vector.byte_size()
        before = placed.get(name)
        if before is not None and before.address == address:
            placed[name] = Placed(address, max(before.upto, place(address, before.upto, size)), before.capacity)
        else:  # (moved: a vector that grew past its room is copied to new memory)
            placed[name] = Placed(address, place(address, 0, size) if address else 0)
    return placed


def place_step(index: Any, placed: dict[str, Placed], budget: int) -> tuple[dict[str, Placed], bool]:
    """Place the next at most ``budget`` bytes (two huge pages or more) of ``index``'s :func:`regions`
    past what ``placed`` records (a vector that moved since starts again from its beginning). Returns
    the new record, and whether nothing was left to place. Each step is short, so that a thread placing
    an open index holds searches off for one step at a time."""
    if not available():
        return placed, True
    for name, vector in regions(index).items():
        address, size = _vector_address(vector), vector.byte_size()
        before = placed.get(name)
        if before is None or before.address != address:
            before = Placed(address, 0)
        upto = place(address, before.upto, min(size, before.upto + budget)) if address else before.upto
        if upto > before.upto:
            return {**placed, name: Placed(address, upto, before.capacity)}, False
    return placed, True
