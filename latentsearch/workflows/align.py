"""Align an image collection with a text encoder: learn a projection from captioned images (see
:mod:`latentsearch.encoders.align`) and build a collection of the projected vectors, so one
collection answers text queries over images."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from latentsearch.encoders.align import AlignedEncoder, save_alignment, train_alignment
from latentsearch.errors import InvalidInputError

if TYPE_CHECKING:
    from latentsearch.collection import Collection


def align_collection(
    source: Collection,
    *,
    caption_field: str | None = None,
    captions: dict[str, str] | None = None,
    out: str | os.PathLike[str],
    into: str,
    text_encoder: str = "minilm",
    epochs: int = 30,
    seed: int = 0,
    home: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[Collection, list[float]]:
    """Train an alignment from an image collection's items and their captions, save it to ``out``,
    and create collection ``into`` (encoder ``align:out``) holding every item's projected vector.

    Captions come from a metadata field (``caption_field``, e.g. a class name) or a dict id -> caption;
    items without a caption are used for nothing but still added to ``into``.
    """
    from latentsearch.connection import connect
    from latentsearch.encoders import get_encoder

    if source.manifest.get("modality") != "image":
        raise InvalidInputError(f"collection {source.name!r} does not hold images encoded by an image encoder")
    if (caption_field is None) == (captions is None):
        raise InvalidInputError("give the captions as a metadata field (caption_field) or a dict (captions)")
    items = source.items()
    ids = [it.id for it in items]
    vectors = source.vectors_of(ids)
    if caption_field is not None:
        found = {it.id: it.metadata.get(caption_field) for it in items}
        captions = {i: str(c) for i, c in found.items() if c is not None and str(c).strip()}
        if not captions:
            raise InvalidInputError(
                f"no item of {source.name!r} has metadata field {caption_field!r} to use as caption"
            )
    paired = [i for i, item_id in enumerate(ids) if item_id in captions]
    if len(paired) < 2:
        raise InvalidInputError("alignment needs at least 2 captioned images")
    texts = [captions[ids[i]] for i in paired]
    encoder = get_encoder(text_encoder)
    distinct = sorted(set(texts))
    text_vectors = dict(zip(distinct, encoder.encode(distinct)))
    weight, bias, losses = train_alignment(
        vectors[paired], np.stack([text_vectors[t] for t in texts]), epochs=epochs, seed=seed, progress=progress
    )
    folder = save_alignment(
        out,
        weight,
        bias,
        {"image_encoder": source.encoder_name, "text_encoder": text_encoder, "pairs": len(paired), "losses": losses},
    )
    aligned = AlignedEncoder(folder)
    target = connect(home).create(into, encoder=f"align:{folder.resolve()}", index=source.manifest["index"])
    items, thumbs = source.get(ids), source.thumbnails(ids)
    target.add(
        ids,
        vectors=aligned.project(vectors),
        uris=[item.uri for item in items],
        metadata=[item.metadata for item in items],
        thumbnails=[thumbs.get(i) for i in ids],
    )
    return target, losses
