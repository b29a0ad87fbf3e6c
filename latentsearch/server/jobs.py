"""Background jobs: a long add runs in a thread while the client polls its progress by job id."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from latentsearch.errors import LatentSearchError, NotFoundError


class Jobs:
    """Background adds: progress and outcome by job id."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self, work: Callable[[Callable[[int, int], None]], int], total: int) -> str:
        """Run ``work(progress)`` in a thread; returns the job id. ``progress(done, total)`` (passages
        encoded, of how many) updates the job's ``done`` (of ``total`` items), ``passages`` and
        ``passages_total``."""
        job_id = uuid.uuid4().hex
        self._jobs[job_id] = {"id": job_id, "state": "running", "done": 0, "total": total, "error": None}

        def progress(done: int, of: int) -> None:
            # The add counts passages as it encodes them (more than the items for long texts): the job
            # shows both, items done in proportion.
            with self._lock:
                self._jobs[job_id].update(done=total * done // max(of, 1), passages=done, passages_total=of)

        def run() -> None:
            try:
                work(progress)
                state, error = "done", None
            except LatentSearchError as exc:
                state, error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - reported to the client, never lost silently
                state, error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            with self._lock:
                self._jobs[job_id].update(state=state, error=error)

        threading.Thread(target=run, name=f"latentsearch-job-{job_id[:8]}", daemon=True).start()
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's state (running, done or failed), progress and error; unknown ids raise NotFoundError."""
        with self._lock:
            if job_id not in self._jobs:
                raise NotFoundError(f"unknown job {job_id!r}")
            return dict(self._jobs[job_id])
