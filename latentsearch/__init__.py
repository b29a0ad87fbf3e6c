"""latentsearch: an embedded latent-space engine over SQLite + FAISS.

    import latentsearch as ls
    db = ls.connect("./indexes")                   # a data directory (and a Ray address, if sharded)
    col = db.create("notes", encoder="minilm")     # or ls.create("notes"), over a default connection
    col.add(ids=["a"], texts=["reset your password from the login page"], metadata=[{"lang": "en"}])
    hits = col.search("forgot my password", k=5, where={"lang": "en"})

Heavy modules (FAISS, torch) load on first use, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from latentsearch.errors import (
    CollectionNotFoundError,
    ConflictError,
    CorruptCollectionError,
    EncoderMismatchError,
    FilterError,
    InvalidInputError,
    ItemNotFoundError,
    LatentSearchError,
    LockTimeoutError,
    NotFoundError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from latentsearch.collection import Collection
    from latentsearch.connection import Connection, connect, create, drop, list_collections
    from latentsearch.connection import open_collection as open  # noqa: A004
    from latentsearch.records import Hit, Hits, Item
    from latentsearch.search.request import SearchRequest
    from latentsearch.workflows.interactions import fit_interactions

_LAZY = {
    "Collection": ("collection", "Collection"),
    "Connection": ("connection", "Connection"),
    "connect": ("connection", "connect"),
    "SearchRequest": ("search.request", "SearchRequest"),
    "create": ("connection", "create"),
    "open": ("connection", "open_collection"),
    "list_collections": ("connection", "list_collections"),
    "drop": ("connection", "drop"),
    "fit_interactions": ("workflows.interactions", "fit_interactions"),
    "Hit": ("records", "Hit"),
    "Hits": ("records", "Hits"),
    "Item": ("records", "Item"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'latentsearch' has no attribute {name!r}")


__all__ = [
    "Collection",
    "Connection",
    "CollectionNotFoundError",
    "ConflictError",
    "CorruptCollectionError",
    "EncoderMismatchError",
    "FilterError",
    "Hit",
    "Hits",
    "InvalidInputError",
    "Item",
    "SearchRequest",
    "ItemNotFoundError",
    "LatentSearchError",
    "LockTimeoutError",
    "NotFoundError",
    "connect",
    "create",
    "drop",
    "fit_interactions",
    "list_collections",
    "open",
]
