"""Warming collections up: open their indexes and load the models they use before the first query
(a server at start-up, a notebook before a demo), so that the first search is as fast as the rest."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from latentsearch.errors import LatentSearchError

if TYPE_CHECKING:
    from latentsearch.collection import Collection


@dataclass(frozen=True)
class Warmed:
    """One encoder warmed up: the collections that use it, the seconds it took, or why it failed."""

    encoder: str
    collections: list[str]
    seconds: float
    error: str | None = None

    @property
    def has_model(self) -> bool:
        """False for ``precomputed`` collections: only their indexes were opened, no model loaded."""
        return self.encoder != "precomputed"


def warm_up(collections: Iterable[Collection]) -> list[Warmed]:
    """Open every collection's index and load each encoder's model once, in first-seen order.

    Each model loads in the background while its collections' indexes open. A failure (a missing model
    file, a damaged index) is reported in that encoder's :class:`Warmed` and the others go on; the
    failing collection raises it again on its first request.
    """
    by_encoder: dict[str, list[Collection]] = {}
    for col in collections:
        by_encoder.setdefault(col.encoder_name, []).append(col)
    warmed = []
    for encoder, cols in by_encoder.items():
        start, error = time.perf_counter(), None
        try:
            for col in cols:
                col.load_encoder(background=True)  # the model loads while the index opens
                col.info()  # opens (or catches up) the index: the first search need not
                col.load_encoder()
        except LatentSearchError as exc:
            error = str(exc)
        warmed.append(Warmed(encoder, [col.name for col in cols], time.perf_counter() - start, error))
    return warmed
