"""The map a viewer sees now (the web page's): the collection's UMAP projection when one is cached,
else a PCA one, fast enough to make on request, while UMAP (much slower, numba compiles it on the
first run of a process) is computed apart, e.g. by the server in the background."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from latentsearch.analysis.latent import Projection
    from latentsearch.collection import Collection

PREFERRED = "umap"  # keeps neighbourhoods far better than PCA (trustworthiness), but takes seconds to minutes
FALLBACK = "pca"
FALLBACK_SAMPLE = 5_000  # items in the PCA map: enough to see the shape, small enough to draw at once


@dataclass
class MapView:
    """The map to show: its ``projection``, and whether it is the ``preferred`` method's (``ready``).
    When it is not, the preferred projection is the one ``collection.project(preferred)`` makes (the
    default sample and seed, as ``latentsearch map COL --method umap`` does): compute that to get it."""

    projection: Projection
    preferred: str
    ready: bool


def map_view(collection: Collection, *, sample: int = FALLBACK_SAMPLE, seed: int = 0) -> MapView:
    """The cached UMAP map of ``collection`` if there is one, else a PCA map of at most ``sample``
    items (drawn with ``seed``), which is computed now (and cached)."""
    preferred = collection.cached_projection(PREFERRED)
    if preferred is not None:
        return MapView(preferred, PREFERRED, True)
    return MapView(collection.project(FALLBACK, sample=sample, seed=seed), PREFERRED, False)
