"""Adding items given as rows (one mapping per item, as JSON bodies carry them) and image files given
as streams (uploads), rather than as the columns :meth:`Collection.add` takes."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from latentsearch.errors import InvalidInputError, LatentSearchError

if TYPE_CHECKING:
    from latentsearch.collection import Collection

UPLOADS_DIR = "uploads"  # inside the collection's folder: where added image files are kept


def add_items(
    collection: Collection,
    items: Sequence[Mapping[str, Any]],
    *,
    upsert: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Add (or with ``upsert`` replace) items given as rows: ``{"id", "text", "uri", "vector",
    "metadata"}``, every key but ``id`` optional. Either every row has a vector or none has; texts and
    uris may be missing from some rows. Returns the number of items written (:meth:`Collection.add`)."""
    for number, item in enumerate(items):
        if item.get("id") is None:
            raise InvalidInputError(f'item {number} has no id: give each item an "id"')
    vectors = [item.get("vector") for item in items]
    if any(v is not None for v in vectors) and any(v is None for v in vectors):
        raise InvalidInputError("give a vector for every item in the batch, or for none")
    texts = [item.get("text") for item in items]
    uris = [item.get("uri") for item in items]
    write = collection.upsert if upsert else collection.add
    return write(
        [item["id"] for item in items],
        texts if any(t is not None for t in texts) else None,
        vectors=vectors if vectors and vectors[0] is not None else None,
        metadata=[item.get("metadata") or {} for item in items],
        uris=uris if any(uris) else None,
        progress=progress,
    )


def add_image_files(
    collection: Collection, files: Sequence[tuple[str, IO[bytes]]], *, upsert: bool = False
) -> tuple[int, list[str]]:
    """Add images given as ``(file name, binary stream)`` pairs, each copied into the collection's
    ``uploads`` folder and encoded from there; an item's id is its file's base name. Returns the number of items
    written and their ids.

    Only the base name of a file name is used, so no name can write outside the collection; if the add
    fails, the copies are removed and the collection is unchanged.
    """
    folder = Path(collection.path) / UPLOADS_DIR
    folder.mkdir(exist_ok=True)
    ids, uris = [], []
    try:
        for filename, stream in files:
            base = Path(filename or "upload").name or "upload"
            target = folder / f"{uuid.uuid4().hex[:8]}-{base}"
            uris.append(str(target))
            with open(target, "wb") as handle:
                shutil.copyfileobj(stream, handle)
            ids.append(base)
        added = (collection.upsert if upsert else collection.add)(ids, uris=uris)
    except (LatentSearchError, OSError):
        for uri in uris:
            Path(uri).unlink(missing_ok=True)
        raise
    return added, ids
