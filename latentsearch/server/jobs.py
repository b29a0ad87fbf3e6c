"""Background jobs: a long add or projection runs in a thread while the client polls its progress by
job id."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from latentsearch.errors import LatentSearchError, NotFoundError

if TYPE_CHECKING:
    from latentsearch.server.models import MapJobBody


class Progress:
    """What a job's work reports as it goes: counts (``progress(done, of)``) or a stage message."""

    def __init__(self, update: Callable[..., None], total: int) -> None:
        self._update, self._total = update, total

    def __call__(self, done: int, of: int) -> None:
        """``done`` passages encoded of ``of``: the job's ``done`` items in proportion, and both counts."""
        # The add counts passages as it encodes them (more than the items for long texts): the job
        # shows both, items done in proportion.
        self._update(done=self._total * done // max(of, 1), passages=done, passages_total=of)

    def stage(self, message: str) -> None:
        """The job's current step, e.g. ``projecting 2,000 items with umap`` (its ``stage``)."""
        self._update(stage=message)


class Jobs:
    """Background work: progress and outcome by job id."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}
        self._running: dict[str, str] = {}  # key -> id of the job doing that work now
        self._lock = threading.Lock()

    def start(self, work: Callable[[Progress], Any], total: int, *, key: str | None = None) -> str:
        """Run ``work(progress)`` in a thread; returns the job id. ``progress`` (a :class:`Progress`)
        updates the job's ``done`` (of ``total`` items), ``passages``, ``passages_total`` and ``stage``.
        A job started with the ``key`` of one still running is that job: the same work never runs
        twice at once (two clicks on "compute UMAP")."""
        with self._lock:
            if key is not None and key in self._running:
                return self._running[key]
            job_id = uuid.uuid4().hex
            self._jobs[job_id] = {"id": job_id, "state": "running", "done": 0, "total": total, "error": None}
            if key is not None:
                self._running[key] = job_id

        def update(**fields: Any) -> None:
            with self._lock:
                self._jobs[job_id].update(fields)

        def run() -> None:
            try:
                work(Progress(update, total))
                state, error = "done", None
            except LatentSearchError as exc:
                state, error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - reported to the client, never lost silently
                state, error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            with self._lock:
                self._jobs[job_id].update(state=state, error=error)
                if state == "done":  # all of it: a stage message would say it is still at work
                    self._jobs[job_id]["done"] = total
                    self._jobs[job_id].pop("stage", None)
                if key is not None:
                    self._running.pop(key, None)

        threading.Thread(target=run, name=f"latentsearch-job-{job_id[:8]}", daemon=True).start()
        return job_id

    def running(self, key: str) -> str | None:
        """The id of the job started with ``key`` if it is still running."""
        with self._lock:
            return self._running.get(key)

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's state (running, done or failed), progress and error; unknown ids raise NotFoundError."""
        with self._lock:
            if job_id not in self._jobs:
                raise NotFoundError(f"unknown job {job_id!r}")
            return dict(self._jobs[job_id])


def map_job_key(name: str, body: MapJobBody) -> str:
    """The key of the job computing the projection ``body`` of collection ``name``."""
    return f"map:{name}:{body.method}:{body.dim}:{body.sample}:{body.seed}"
