"""Drawing a collection's latent space to a file: project it, optionally trace the interpolation path
between two items, and write the map as interactive HTML or a PNG."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from latentsearch.analysis.latent import DEFAULT_SAMPLE, Step, similarity
from latentsearch.analysis.plots import DEFAULT_MAX_COLORS, MAP_SAMPLE, check_max_colors, write_map
from latentsearch.errors import InvalidInputError

if TYPE_CHECKING:
    from latentsearch.analysis.latent import Projection
    from latentsearch.collection import Collection

MAP_SUFFIXES = (".html", ".htm", ".png")


@dataclass
class DrawnMap:
    """The file written (``path``) and the ``projection`` it shows."""

    path: Path
    projection: Projection


def draw_map(
    collection: Collection,
    out: str | os.PathLike[str],
    *,
    method: str = "umap",
    dim: int = 2,
    color_by: str | None = None,
    max_colors: int = DEFAULT_MAX_COLORS,
    where: str | dict | None = None,
    sample: int | None = None,
    seed: int = 0,
    path: tuple[str, str] | None = None,
    steps: int = 8,
    stage: Callable[[str], None] | None = None,
) -> DrawnMap:
    """Project ``collection`` (the items matching ``where``, at most ``sample`` of them) with
    ``method`` (pca, tsne or umap) to ``dim`` dimensions and write the map to ``out``: ``.html``
    (interactive, offline, WebGL above 5,000 points) or ``.png``, coloured by the metadata field
    ``color_by``: its ``max_colors`` (1 to 24) most frequent values get a colour each, the rest are
    one grey "other" group (a numeric field with many values gets a colour scale). ``sample``
    defaults to the projection's own cap (t-SNE 10,000, UMAP 50,000), and to 100,000
    (:data:`~latentsearch.analysis.plots.MAP_SAMPLE`) for PCA, a size a map stays responsive at.
    ``path`` (two ids) draws the interpolation path between them in ``steps`` steps.
    ``stage(message)`` is called as the work moves on ("projecting", then "drawing").
    """
    if Path(out).suffix.lower() not in MAP_SUFFIXES:
        raise InvalidInputError(f"cannot write a map to {out}: use a .html or .png file name")
    max_colors = check_max_colors(max_colors)  # before the projection, which can take minutes
    if sample is None and DEFAULT_SAMPLE.get(method) is None and collection.count() > MAP_SAMPLE:
        # PCA has no cap of its own. A smaller collection keeps sample=None: the projection cached by
        # project("pca") is the same map, and it is reused.
        sample = MAP_SAMPLE

    route = None
    if path is not None:
        if len(path) != 2:
            raise InvalidInputError(f"a map's path runs between two ids, got {len(path)}")
        route = walk(collection, path[0], path[1], steps=steps, where=where)
    projection = collection.project(method, dim=dim, where=where, sample=sample, seed=seed, stage=stage)
    if stage is not None:
        stage("drawing")
    written = write_map(collection, projection, out, color_by=color_by, path=route, max_colors=max_colors)
    return DrawnMap(written, projection)


def walk(collection: Collection, start: str, end: str, *, steps: int, where: str | dict | None) -> list[Step]:
    """The path a map draws: the start, the interpolation's steps (never an end), then the end, each
    end scored against itself and the other as the steps are."""
    inner = collection.interpolate(start, end, steps=steps, where=where)
    first, last = collection.get([start, end], with_vectors=True)
    metric = collection.metric
    cross = float(similarity(metric, first.vector[None, :], last.vector)[0])
    own = [float(similarity(metric, item.vector[None, :], item.vector)[0]) for item in (first, last)]
    return [
        Step(0.0, start, own[0], first.text, own[0], cross, False),
        *inner,
        Step(1.0, end, own[1], last.text, cross, own[1], False),
    ]
