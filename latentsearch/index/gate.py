"""Many searches of an index at once, or one change to it, never both.

FAISS's indexes answer concurrent searches safely but not a search during a change: an add that grows
the index reallocates its vectors and graph, and a walk in flight then reads freed memory (a
segmentation fault, seen with one thread searching while another added). The server shares one
collection between its request threads, and a search catches the index up with other processes'
writes, so changes and searches of one index meet in one process.

:class:`ReadWriteGate` lets any number of readers in at once and a writer alone; a writer that asks
waits for the readers inside to leave, and readers that arrive meanwhile wait behind it, so a steady
stream of searches cannot hold a write off. The readers' way in and out is two acquisitions of one
plain lock (about 0.4 µs a search), not a :class:`threading.Condition`, whose Python-level methods
cost twice as much.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

WAIT_POLL = 0.0002  # seconds between looks at the readers still to go in (let_waiting_readers_in)


class ReadWriteGate:
    """A readers-writer lock that prefers a waiting writer. Not reentrant: a writer must not read
    through the gate, nor a reader write."""

    __slots__ = ("_mutex", "_turn", "_drained", "_readers", "_writing", "_waiting")

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the two fields below
        self._turn = threading.Lock()  # a writer's, from its request to its end: readers queue on it
        self._drained = threading.Lock()  # held by a waiting writer; the last reader out frees it
        self._readers = 0
        self._writing = False
        self._waiting = 0  # readers held off by a writer (counted on the slow path only)

    def enter_read(self) -> None:
        """Wait while a writer waits or writes, then count this reader in."""
        mutex = self._mutex
        mutex.acquire()
        while self._writing:
            self._waiting += 1
            mutex.release()
            with self._turn:  # the writer's end
                pass
            mutex.acquire()
            self._waiting -= 1
        self._readers += 1
        mutex.release()

    def leave_read(self) -> None:
        """Count this reader out; the last one out lets a waiting writer in."""
        mutex = self._mutex
        mutex.acquire()
        self._readers -= 1
        wake = self._writing and not self._readers
        mutex.release()
        if wake:
            self._drained.release()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """:meth:`enter_read` ... :meth:`leave_read` (for paths where a generator's frames are cheap
        beside their work; the hot path calls the two itself)."""
        self.enter_read()
        try:
            yield
        finally:
            self.leave_read()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the gate alone: new readers wait, and readers inside are waited for."""
        self._turn.acquire()
        self._drained.acquire()  # free here (writers take turns): held, so that it can be waited on
        try:
            with self._mutex:
                self._writing = True
                busy = self._readers > 0
            if busy:
                self._drained.acquire()  # freed by the last reader out
            yield
        finally:
            with self._mutex:
                self._writing = False
            self._drained.release()
            self._turn.release()

    def let_waiting_readers_in(self) -> None:
        """Return once the readers a writer held off have gone in (a writer about to write again calls
        it: a released lock is not handed to the threads waiting for it, so a writer taking the gate
        back at once, again and again, would hold them off to the end)."""
        while self._waiting and not self._writing:
            time.sleep(WAIT_POLL)

    @property
    def readers(self) -> int:
        """How many readers are inside now."""
        return self._readers

    @property
    def writer_waiting_or_writing(self) -> bool:
        """Whether a writer has asked for the gate and not yet left it."""
        return self._writing
