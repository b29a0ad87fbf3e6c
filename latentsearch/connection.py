"""A connection to a data directory (and, for sharded collections, a Ray cluster): the one place that
creates, opens, lists and drops collections.

    import latentsearch as ls
    db = ls.connect("./indexes")                  # or ls.connect(ray_address="auto")
    notes = db.create("notes")                    # one folder: SQLite + FAISS
    logs = db.create("logs", shards=4)            # the same Collection class, over Ray actors
    db.list(), db.open("notes"), db.drop("logs")

``ls.create/open/list_collections/drop`` are shortcuts over a connection made for the call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentsearch import collection as collections
from latentsearch import paths
from latentsearch.collection import Collection
from latentsearch.errors import LatentSearchError


class Connection:
    """A data directory and, optionally, the Ray cluster its sharded collections run on.

    ``home``: the data directory (default ``$LATENTSEARCH_HOME``, else ``./indexes``), resolved once
    here. ``ray_address``: the cluster for sharded collections (default: ``$RAY_ADDRESS``, else a Ray
    started for this process when one is first needed). Nothing is opened until a collection is.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, ray_address: str | None = None) -> None:
        self.home: Path = paths.resolve_home(home)
        self.ray_address = ray_address

    def __repr__(self) -> str:
        return f"Connection(home={str(self.home)!r}, ray_address={self.ray_address!r})"

    def create(
        self,
        name: str,
        *,
        encoder: str = "minilm",
        index: str = "auto",
        metric: str = "cosine",
        dim: int | None = None,
        shards: int | None = None,
        exist_ok: bool = False,
    ) -> Collection:
        """Create a collection (or open it with ``exist_ok`` if it exists with the same settings).

        ``encoder`` is ``minilm``, ``st:PATH``, ``ae:PATH``, ``efficientnet-lite0`` or ``precomputed``
        (then ``dim`` is required); ``index`` is ``auto``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq``,
        ``sq8`` or ``faiss:FACTORY``; ``metric`` is ``cosine``, ``ip`` or ``l2``. ``shards`` splits the
        collection over that many Ray actors (the connection's cluster).
        """
        return collections.create(
            name,
            encoder=encoder,
            index=index,
            metric=metric,
            dim=dim,
            home=self.home,
            exist_ok=exist_ok,
            shards=shards,
            ray_address=self.ray_address,
        )

    def open(self, name: str, *, encoder: str | None = None) -> Collection:
        """Open an existing collection; ``encoder``, if given, must match the one it was built with."""
        return collections.open_collection(name, home=self.home, encoder=encoder, ray_address=self.ray_address)

    def list(self) -> list[str]:
        """Names of the collections in the data directory, sorted."""
        return collections.list_collections(home=self.home)

    def drop(self, name: str) -> None:
        """Delete a collection and its files."""
        collections.drop(name, home=self.home)

    def exists(self, name: str) -> bool:
        """True when a collection of that name is in the data directory."""
        return name in self.list()

    def describe(self, name: str, *, opener: Callable[[str], Any] | None = None) -> dict[str, Any]:
        """One line about a collection for listings (name, count, encoder, dim, modality, shards), or
        its ``problem`` when it cannot be opened. ``opener`` returns an already open collection."""
        try:
            return collections.summarize(name, home=self.home, opener=opener)
        except LatentSearchError as exc:
            return {"name": name, "problem": str(exc)}


def connect(home: str | os.PathLike[str] | None = None, *, ray_address: str | None = None) -> Connection:
    """A :class:`Connection` to the data directory ``home`` (and Ray cluster ``ray_address``)."""
    return Connection(home, ray_address=ray_address)
