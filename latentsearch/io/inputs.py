"""What a user points at (files, texts, a query) turned into what the Collection methods take, the
same way for every interface: which reader a collection's input needs, how ``check`` inputs are
meant for an image collection, and whether a call will need the collection's model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentsearch.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np

    from latentsearch.collection import Collection
    from latentsearch.io.ingest import Records

IMAGE_MODALITIES = ("image", "joint")  # collections whose added files are read as images


def load_vectors(path: str | os.PathLike[str], what: str = "vectors") -> np.ndarray:
    """The array in a ``.npy`` file (never unpickled), or an
    :class:`~latentsearch.errors.InvalidInputError` naming the file and ``what`` it was meant to hold."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc}") from None


def read_for(
    collection: Collection,
    source: str | os.PathLike[str],
    *,
    text_field: str = "text",
    id_field: str = "id",
    vector_field: str | None = None,
    metadata_fields: Sequence[str] | None = None,
    ids_file: str | os.PathLike[str] | None = None,
) -> Records:
    """Read ``source`` for adding to ``collection`` (see :func:`latentsearch.io.ingest.read_input`):
    image files for an image (or joint text-image) collection unless its vectors are given in
    ``vector_field``, texts or vectors otherwise. A folder's files that are not readable images (or
    documents) are listed in ``Records.skipped``."""
    from latentsearch.io.ingest import read_input

    return read_input(
        source,
        text_field=text_field,
        id_field=id_field,
        vector_field=vector_field,
        metadata_fields=metadata_fields,
        ids_file=ids_file,
        images=collection.manifest.get("modality") in IMAGE_MODALITIES and vector_field is None,
    )


def check_inputs(
    collection: Collection,
    *,
    texts: Sequence[str] | None = None,
    vectors: str | os.PathLike[str] | np.ndarray | None = None,
) -> list[str] | list[Path] | np.ndarray:
    """What ``collection.check`` takes for these inputs: the ``texts`` (for an image collection they
    name image files, so they become paths), or the ``vectors`` (an array, or a ``.npy`` file read by
    :func:`load_vectors`). Exactly one of the two is given."""
    if bool(texts) == (vectors is not None):
        raise InvalidInputError("give texts (image files for an image collection) to check, or vectors")
    if vectors is not None:
        return load_vectors(vectors) if isinstance(vectors, (str, os.PathLike)) else vectors
    assert texts is not None  # for the type checker: bool(texts) is true here
    if collection.manifest.get("modality") == "image":
        return [Path(t) for t in texts]
    return list(texts)


def check_encodes(inputs: Any) -> bool:
    """True when checking ``inputs`` (from :func:`check_inputs`) runs the collection's model: any
    inputs but vectors."""
    import numpy as np

    return not isinstance(inputs, np.ndarray)
