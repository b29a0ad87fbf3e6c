"""The server's open collections: one shared object per name, over one connection to the data
directory (models and indexes load once per process; sharded collections keep their actors)."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import latentsearch as ls
from latentsearch import paths
from latentsearch.errors import LatentSearchError
from latentsearch.workflows.warmup import warm_up

if TYPE_CHECKING:
    from latentsearch.collection import Collection

# uvicorn's own logger for general messages: its lines show beside "Application startup complete".
log = logging.getLogger("uvicorn.error")


class Registry:
    """Open collections, one shared object per name (models and indexes load once per process).
    Sharded collections join the Ray cluster at ``ray_address`` (else a local Ray)."""

    def __init__(self, home: str | Path, ray_address: str | None = None) -> None:
        self.db = ls.connect(home, ray_address=ray_address)
        self.home: Path = self.db.home
        self.ray_address = ray_address
        self._open: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Collection:
        """The open collection ``name`` (opened on first use; reopened if it was dropped meanwhile)."""
        paths.validate_name(name)
        with self._lock:
            col = self._open.get(name)
            if col is not None and not self.db.exists(name):
                self._open.pop(name, None)  # dropped by someone else (the CLI, Python)
                with contextlib.suppress(Exception):  # its files are gone: release what it holds
                    col.close()
                col = None
            if col is None:
                col = self._open[name] = self.db.open(name)
            return col

    def create(self, name: str, **options: Any) -> Collection:
        """Create a collection (``options`` as for :meth:`latentsearch.Connection.create`) and open it here."""
        self.db.create(name, **options).close()
        return self.get(name)

    def drop(self, name: str) -> None:
        """Close the collection if open here, then delete it."""
        paths.validate_name(name)
        self.forget(name)
        self.db.drop(name)

    def describe_all(self) -> list[dict[str, Any]]:
        """The listing row of every collection, from the collections open here (opening the others)."""
        return [self.db.describe(name, opener=self.get) for name in self.db.list()]

    def load_encoders(self) -> None:
        """Open every collection, load its index and the models they use (each model once), so that
        the first request is as fast as the rest; logs one line per model with the time it took."""
        cols = []
        for name in self.db.list():
            try:
                cols.append(self.get(name))
            except LatentSearchError as exc:  # a damaged collection is reported by its own requests
                log.warning("not preloading the model of %s: %s", name, exc)
        for warmed in warm_up(cols):
            if warmed.error is not None:
                log.warning("cannot preload encoder %s: %s", warmed.encoder, warmed.error)
            elif warmed.has_model:  # no model: its indexes opened silently
                names = ", ".join(warmed.collections)
                log.info("loaded encoder %s for %s in %.2fs", warmed.encoder, names, warmed.seconds)

    def forget(self, name: str) -> None:
        """Close and forget the collection ``name`` if it is open here."""
        with self._lock:
            col = self._open.pop(name, None)
        if col is not None:
            col.close()

    def close(self) -> None:
        """Close every open collection (their indexes are checkpointed)."""
        with self._lock:
            open_now, self._open = list(self._open.values()), {}
        for col in open_now:
            col.close()
