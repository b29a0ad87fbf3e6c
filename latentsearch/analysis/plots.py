"""Pictures of the latent space: a self-contained interactive HTML page (plotly, no CDN) and a static
PNG (matplotlib) of a projection, coloured by a metadata field, with an optional interpolation path.

A categorical field colours its ``max_colors`` most frequent values from one palette of distinct
colours (plotly's Dark24) and draws the rest as one grey "other" group, so a field with 50 values
never repeats colours; the legend lists the groups by frequency with their counts."""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentsearch.errors import InvalidInputError
from latentsearch.limits import MAX_COLORS, check_int

if TYPE_CHECKING:
    from latentsearch.analysis.latent import Projection, Step
    from latentsearch.collection import Collection
    from latentsearch.records import Item

SVG_LIMIT = 5_000  # maps with more points are drawn with WebGL (scattergl): SVG slows down past a few thousand
MAP_SAMPLE = 100_000  # draw_map's default cap on a map's points: a WebGL map this size stays responsive
DEFAULT_MAX_COLORS = 20  # categorical values coloured by default; the rest are "other"
OTHER_COLOUR = "#a9a9a9"  # grey, unlike every colour of the palette
OTHER = "other"
NUMERIC_VALUES = 12  # a numeric field with more distinct values gets a colour scale, not a legend
CATEGORICAL_FIELDS = ("cluster",)  # numbers that name groups (cluster ids): their order means nothing
LABEL_CHARS = 30  # of a value in a legend entry, so the legend stays a narrow column
THUMBNAIL_LIMIT = 5_000  # maps with more points leave out the hover thumbnails (~4 KB each)
THUMBNAIL_SCRIPT = """
const panel = document.createElement('img');
panel.id = 'latentsearch-thumbnail';
panel.style.cssText = 'position:fixed;bottom:12px;right:12px;max-width:192px;border:1px solid #888;display:none;';
document.body.appendChild(panel);
const plot = document.getElementById('{plot_id}');
plot.on('plotly_hover', e => {
  const uri = e.points[0].customdata && e.points[0].customdata[3];
  if (uri) { panel.src = uri; panel.style.display = 'block'; }
});
plot.on('plotly_unhover', () => { panel.style.display = 'none'; });
"""
# The page around plotly's div: no margins or scroll bars, so the plot takes the whole window.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>html, body {{ margin: 0; padding: 0; width: 100%; height: 100%; overflow: hidden; }}</style>
</head>
<body>
{plot}
</body>
</html>
"""
PNG_SIZE = (1000, 750)  # pixels
MAP_TEXT_CHARS = 200  # of each item's text in a map payload: enough for a hover label
LARGE_MAP_TEXT_CHARS = 80  # of each item's text and metadata in the hover labels of a WebGL map


@dataclass(frozen=True)
class ColourGroup:
    """One legend entry of a map coloured by a categorical field: its ``label`` (the value and its
    count, e.g. ``games (412)``, or ``other (1,234 in 31 values)``), the field's ``values`` drawn in it
    (one; the rest for "other"), its ``colour`` and its points (``mask``, one bool per point)."""

    label: str
    values: tuple[str, ...]
    colour: str
    mask: np.ndarray

    @property
    def count(self) -> int:
        """Points in the group."""
        return int(self.mask.sum())

    @property
    def other(self) -> bool:
        """Whether this is the grey group of the values left without a colour of their own."""
        return self.colour == OTHER_COLOUR


def check_max_colors(max_colors: Any) -> int:
    """``max_colors`` if it is a whole number from 1 to the palette's size, else a one-line error."""
    return check_int("max_colors", max_colors, 1, MAX_COLORS)


def palette() -> list[str]:
    """The map's categorical colours, most distinct first: plotly's Dark24 (24 colours)."""
    import plotly.colors

    return list(plotly.colors.qualitative.Dark24[:MAX_COLORS])


def colour_groups(values: Sequence[Any], max_colors: int = DEFAULT_MAX_COLORS) -> list[ColourGroup]:
    """Group points by their value of a categorical field (``None`` is ``(none)``): the ``max_colors``
    most frequent values (ties by value) get a colour each, in that order, and the rest, if any, one
    grey "other" group at the end."""
    max_colors = check_max_colors(max_colors)
    labels = np.array(["(none)" if v is None else str(v) for v in values], dtype=object)
    ranked = sorted(Counter(labels.tolist()).items(), key=lambda pair: (-pair[1], pair[0]))
    coloured, rest = ranked[:max_colors], ranked[max_colors:]
    groups = [
        ColourGroup(f"{_cut(value)} ({count:,})", (value,), colour, labels == value)
        for (value, count), colour in zip(coloured, palette())
    ]
    if rest:
        others = tuple(value for value, _ in rest)
        count = sum(n for _, n in rest)
        noun = "value" if len(rest) == 1 else "values"
        label = f"{OTHER} ({count:,} in {len(rest):,} {noun})"
        groups.append(ColourGroup(label, others, OTHER_COLOUR, np.isin(labels, np.array(others, dtype=object))))
    return groups


def _cut(text: str, chars: int = LABEL_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _colour_values(items: list[Item], color_by: str | None) -> list[Any] | None:
    if color_by is None:
        return None
    metadata = [item.metadata for item in items]
    values = [meta.get(color_by) for meta in metadata]
    if all(v is None for v in values):
        fields = sorted({key for meta in metadata for key in meta})
        hint = " (run `latentsearch clusters` first)" if color_by == "cluster" else ""
        hint = " (run `latentsearch outliers --write` first)" if color_by == "outlier_score" else hint
        raise InvalidInputError(f"no item has metadata field {color_by!r}{hint}; fields: {', '.join(fields) or 'none'}")
    return values


def _is_numeric(values: list[Any], color_by: str | None) -> bool:
    """Whether ``values`` get a continuous colour scale: numbers only, with many distinct values."""
    if color_by in CATEGORICAL_FIELDS:
        return False
    present = [v for v in values if v is not None]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    return numbers and len(set(present)) > NUMERIC_VALUES


def _hover(collection: Collection, items: list[Item]) -> list[list[str]]:
    """Per item: id, text, metadata (hover label) and its thumbnail as a data URI ("" without one).
    A WebGL map (more than :data:`SVG_LIMIT` points) keeps shorter labels and no thumbnails: the
    page stays a few tens of megabytes at :data:`MAP_SAMPLE` points."""
    import base64

    large = len(items) > SVG_LIMIT
    chars = LARGE_MAP_TEXT_CHARS if large else MAP_TEXT_CHARS
    thumbs = collection.thumbnails([item.id for item in items]) if len(items) <= THUMBNAIL_LIMIT else {}
    out = []
    for item in items:
        text = _cut(" ".join((item.text or item.uri or "").split()), chars)
        # key: value pairs, not JSON: plotly shows double quotes in hover labels as &quot;
        meta = ", ".join(
            f"{k}: {v if isinstance(v, (str, int, float)) else json.dumps(v)}" for k, v in item.metadata.items()
        )
        meta = _cut(meta, chars)
        # plotly hover labels read a little HTML: escape tags, and break long lines to keep labels narrow.
        thumb = thumbs.get(item.id)
        uri = "data:image/jpeg;base64," + base64.b64encode(thumb).decode() if thumb else ""
        out.append([_label(item.id), _label(text), _label(meta), uri])
    return out


def _label(text: str, width: int = 70) -> str:
    """Text for a plotly hover label: tags escaped, wrapped at ``width`` characters."""
    import textwrap

    return "<br>".join(html.escape(line, quote=False) for line in textwrap.wrap(text, width) or [""])


def _path_positions(projection: Projection, path: list[Step] | None) -> np.ndarray | None:
    if not path:
        return None
    index = {item_id: i for i, item_id in enumerate(projection.ids)}
    missing = [s.id for s in path if s.id not in index]
    if missing:
        raise InvalidInputError(
            f"the path passes through {missing[0]!r}, which is not in the map (filtered or sampled out)"
        )
    return projection.coords[[index[s.id] for s in path]]


def _heading(collection: Collection, projection: Projection) -> str:
    return (
        f"{collection.name}: {projection.method.upper()} of {len(projection.ids):,} items"
        f" (trustworthiness {projection.trustworthiness:.3f})"
    )


def map_html(
    collection: Collection,
    projection: Projection,
    out: str | Path,
    *,
    color_by: str | None = None,
    path: list[Step] | None = None,
    title: str | None = None,
    max_colors: int = DEFAULT_MAX_COLORS,
) -> Path:
    """Write an interactive map that fills the browser window: hover shows each item's id, text and
    metadata. Works offline. ``max_colors``: see :func:`map_figure`."""
    fig = map_figure(collection, projection, color_by=color_by, path=path, title=title, max_colors=max_colors)
    out = Path(out)
    # plotly.js inline: no CDN, works offline. Hover labels cannot hold images, so image items show their
    # thumbnail (customdata[3]) in a small panel beside the plot while hovered.
    rows = [row for trace in fig.data if trace.customdata is not None for row in trace.customdata]
    script = THUMBNAIL_SCRIPT if any(row[3] for row in rows) else ""
    plot = fig.to_html(
        include_plotlyjs=True,
        full_html=False,
        default_width="100%",
        default_height="100vh",  # the window's height, whatever the page around it
        config={"responsive": True},  # follows the window as it is resized
        post_script=script,
    )
    page = PAGE.format(title=html.escape(title or _heading(collection, projection)), plot=plot)
    out.write_text(page, encoding="utf-8")
    return out


def map_figure(
    collection: Collection,
    projection: Projection,
    *,
    color_by: str | None = None,
    path: list[Step] | None = None,
    title: str | None = None,
    max_colors: int = DEFAULT_MAX_COLORS,
) -> Any:
    """The interactive map as a plotly Figure (what :func:`map_html` writes; a notebook shows it inline):
    hover shows each item's id, text and metadata. A categorical ``color_by`` colours its
    ``max_colors`` (1 to 24) most frequent values and draws the rest as one grey "other" group (see
    :func:`colour_groups`); a numeric field with many values gets a colour scale. Maps of more than
    :data:`SVG_LIMIT` points are drawn with WebGL."""
    import plotly.graph_objects as go

    max_colors = check_max_colors(max_colors)
    items = collection.get(projection.ids)
    values = _colour_values(items, color_by)
    hover = np.array(_hover(collection, items), dtype=object)
    coords = projection.coords
    three_d = projection.dim == 3
    # One kind for every trace, by the map's size: many small SVG traces would add up to a slow page.
    webgl = len(coords) > SVG_LIMIT
    template = "<b>%{customdata[0]}</b><br>%{customdata[1]}<br><i>%{customdata[2]}</i><extra></extra>"

    def trace(mask: np.ndarray, name: str, marker: dict[str, Any], **extra: Any) -> Any:
        xyz = {"x": coords[mask, 0], "y": coords[mask, 1]}
        common = {"mode": "markers", "name": name, "customdata": hover[mask], "hovertemplate": template, **extra}
        if three_d:
            return go.Scatter3d(z=coords[mask, 2], marker={"size": 3, **marker}, **xyz, **common)
        kind = go.Scattergl if webgl else go.Scatter
        return kind(marker={"size": 4 if webgl else 7, **marker}, **xyz, **common)

    fig = go.Figure()
    everything = np.ones(len(coords), dtype=bool)
    # A compact column at the right: 20 values, "other" and the path fit a window without scrolling.
    legend: dict[str, Any] = {"title": {"text": color_by or ""}, "x": 1.0, "xanchor": "left", "y": 1.0}
    if values is None:
        fig.add_trace(trace(everything, "items", {}))
    elif _is_numeric(values, color_by):
        colour = np.array([np.nan if v is None else float(v) for v in values])
        marker = {"color": colour, "colorscale": "Viridis", "colorbar": {"title": color_by}, "showscale": True}
        # The colour bar takes the right: the legend (the path, if any) goes in a row below the plot.
        fig.add_trace(trace(everything, color_by or "", marker, showlegend=False))
        legend = {"orientation": "h", "x": 0.0, "xanchor": "left", "y": 0.0}
    else:
        groups = colour_groups(values, max_colors)
        # "other" is drawn first (under the coloured points) but listed last: legendrank orders the legend.
        for rank, group in sorted(enumerate(groups, 1), key=lambda pair: not pair[1].other):
            opacity = 0.5 if group.other else 0.85
            name = html.escape(group.label, quote=False)  # legends read a little HTML too
            fig.add_trace(trace(group.mask, name, {"color": group.colour, "opacity": opacity}, legendrank=rank))
    positions = _path_positions(projection, path)
    if positions is not None:
        xyz = {"x": positions[:, 0], "y": positions[:, 1]}
        # Several steps can share their nearest item: label each item once, where the path reaches it.
        labels = [f"{s.t:.2f}: {_label(s.id)}" if i == 0 or s.id != path[i - 1].id else "" for i, s in enumerate(path)]
        line = {"mode": "lines+markers+text", "name": "interpolation", "text": labels, "hoverinfo": "text"}
        if three_d:
            fig.add_trace(go.Scatter3d(z=positions[:, 2], **xyz, **line))
        else:
            fig.add_trace(go.Scatter(**xyz, line={"width": 3, "color": "black"}, **line))
    fig.update_layout(
        title={"text": title or _heading(collection, projection), "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        autosize=True,  # no fixed size: the figure takes its container (the whole window in map_html)
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={
            **legend,
            "yanchor": "top",
            "itemsizing": "constant",  # legend symbols readable even when a large map's points are small
            "font": {"size": 11},
            "tracegroupgap": 0,
        },
    )
    if not three_d:  # projection axes have no units: their numbers only take room
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
    return fig


def map_png(
    collection: Collection,
    projection: Projection,
    out: str | Path,
    *,
    color_by: str | None = None,
    path: list[Step] | None = None,
    title: str | None = None,
    max_colors: int = DEFAULT_MAX_COLORS,
) -> Path:
    """Write a static picture of the map (2-D, or the first two axes of a 3-D projection), coloured as
    :func:`map_figure` colours it, with the legend in a column beside the plot."""
    import matplotlib.pyplot as plt

    fig = _png_figure(collection, projection, color_by=color_by, path=path, title=title, max_colors=max_colors)
    out = Path(out)
    fig.savefig(out, dpi=fig.dpi)
    plt.close(fig)
    return out


def _png_figure(
    collection: Collection,
    projection: Projection,
    *,
    color_by: str | None,
    path: list[Step] | None,
    title: str | None,
    max_colors: int,
) -> Any:
    """The matplotlib Figure :func:`map_png` saves (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_colors = check_max_colors(max_colors)
    values = _colour_values(collection.get(projection.ids), color_by)
    coords = projection.coords
    dpi = 100
    # constrained layout makes room for a legend outside the axes (tight_layout would let it be cut off)
    fig, ax = plt.subplots(figsize=(PNG_SIZE[0] / dpi, PNG_SIZE[1] / dpi), dpi=dpi, layout="constrained")
    size = max(2, min(30, 6000 / max(len(coords), 1)))
    legend, legend_title = False, None
    if values is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, alpha=0.7)
    elif _is_numeric(values, color_by):
        colour = np.array([np.nan if v is None else float(v) for v in values])
        points = ax.scatter(coords[:, 0], coords[:, 1], c=colour, s=size, cmap="viridis", alpha=0.8)
        fig.colorbar(points, ax=ax, label=color_by)
    else:
        groups = colour_groups(values, max_colors)
        for group in groups:
            mask = group.mask
            # "other" under the coloured points (lower zorder) but last in the legend
            zorder, alpha = (1, 0.5) if group.other else (2, 0.8)
            ax.scatter(
                coords[mask, 0], coords[mask, 1], s=size, c=group.colour, alpha=alpha, label=group.label, zorder=zorder
            )
        legend, legend_title = True, color_by
    positions = _path_positions(projection, path)
    if positions is not None:
        ax.plot(positions[:, 0], positions[:, 1], "k-o", linewidth=2, markersize=5, label="interpolation", zorder=3)
        legend = True
    if legend:
        # Outside the axes, at the top right: it never hides points, and 20 values plus "other" fit.
        shown = ax.legend(
            title=legend_title,
            fontsize=8,
            title_fontsize=9,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
        for handle in shown.legend_handles:  # the points of a large map are tiny: legend symbols are not
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([30])
                handle.set_alpha(1.0)
    ax.set_title(
        title or f"{collection.name}: {projection.method.upper()} (trustworthiness {projection.trustworthiness:.3f})"
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def map_payload(collection: Collection, projection: Projection, *, text_chars: int = MAP_TEXT_CHARS) -> dict[str, Any]:
    """A projection as JSON for a map drawn elsewhere (the web page's): the projection's own fields
    (``ids``, ``coords``, ``method``, ``trustworthiness``...) plus, per point, its item's ``texts`` (the
    text, else the image uri, cut to ``text_chars`` characters) and ``metadata``, in the same order."""
    items = collection.get(projection.ids)
    return {
        **projection.to_dict(),
        "texts": [(item.text or item.uri or "")[:text_chars] for item in items],
        "metadata": [item.metadata for item in items],
    }


def write_map(collection: Collection, projection: Projection, out: str | Path, **options: Any) -> Path:
    """Write a map as HTML or PNG, by the file's extension."""
    suffix = Path(out).suffix.lower()
    if suffix in (".html", ".htm"):
        return map_html(collection, projection, out, **options)
    if suffix == ".png":
        return map_png(collection, projection, out, **options)
    raise InvalidInputError(f"cannot write a map to {out}: use a .html (interactive) or .png (static) file name")
