"""Where a collection's items live: one folder (``local``: SQLite + FAISS) or shards on Ray
(``sharded``). Both implement :class:`~latentsearch.backends.base.Backend`; the functions here pick
one by what a folder holds, so nothing above this package asks which kind it has.

The backends load lazily: importing this package imports neither FAISS nor Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentsearch.storage.store import DB_FILE, Store

if TYPE_CHECKING:
    from latentsearch.backends.base import Backend

SHARDED_FILE = "sharded.json"  # the marker of a sharded collection's folder


def holds_collection(folder: Path) -> bool:
    """True when ``folder`` holds a collection of either kind."""
    return (folder / DB_FILE).is_file() or (folder / SHARDED_FILE).is_file()


def holds_local_collection(folder: Path) -> bool:
    """True when ``folder`` holds a one-folder (not sharded) collection."""
    return (folder / DB_FILE).is_file() and not (folder / SHARDED_FILE).is_file()


def open_backend(folder: Path, *, ray_address: str | None = None) -> Backend:
    """The backend of the collection in ``folder`` (sharded ones join Ray at ``ray_address``)."""
    if (folder / SHARDED_FILE).is_file():
        from latentsearch.backends.sharded import ShardedBackend

        return ShardedBackend(folder, address=ray_address)
    from latentsearch.backends.local import LocalBackend

    return LocalBackend(folder)


def create_backend(
    folder: Path, manifest: dict[str, Any], *, shards: int | None = None, ray_address: str | None = None
) -> None:
    """Write an empty collection with this manifest into ``folder``: one store, or ``shards`` of them
    (after checking that the Ray cluster answers, so an unreachable one creates nothing)."""
    if shards is None:
        from latentsearch.backends.local import LocalBackend

        LocalBackend.create(folder, manifest)
        return
    from latentsearch.backends.sharded import ShardedBackend, connect_ray

    connect_ray(ray_address)
    ShardedBackend.create(folder, manifest, shards=shards)


def describe_offline(folder: Path) -> dict[str, Any]:
    """Count, encoder, dimension and modality (shards, for a sharded one) of a collection, read from
    its files without starting Ray or loading an index."""
    if (folder / SHARDED_FILE).is_file():
        from latentsearch.backends.sharded import describe_offline as sharded

        return sharded(folder)
    store = Store(folder)
    try:
        manifest = store.read_manifest()
        return {
            "count": store.count(),
            "encoder": manifest["encoder"],
            "dim": manifest["dim"],
            "modality": manifest.get("modality"),
        }
    finally:
        store.close()
