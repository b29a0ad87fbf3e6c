"""Pictures of the latent space: a self-contained interactive HTML page (plotly, no CDN) and a static
PNG (matplotlib) of a projection, coloured by a metadata field, with an optional interpolation path."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentsearch.errors import InvalidInputError

if TYPE_CHECKING:
    from latentsearch.analysis.latent import Projection, Step
    from latentsearch.collection import Collection

SVG_LIMIT = 5_000  # above this, points are drawn with WebGL
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
PNG_SIZE = (1000, 750)  # pixels
MAP_TEXT_CHARS = 200  # of each item's text in a map payload: enough for a hover label


def _colour_values(collection: Collection, projection: Projection, color_by: str | None) -> list[Any] | None:
    if color_by is None:
        return None
    metadata = [item.metadata for item in collection.get(projection.ids)]
    values = [meta.get(color_by) for meta in metadata]
    if all(v is None for v in values):
        fields = sorted({key for meta in metadata for key in meta})
        hint = " (run `latentsearch clusters` first)" if color_by == "cluster" else ""
        hint = " (run `latentsearch outliers --write` first)" if color_by == "outlier_score" else hint
        raise InvalidInputError(f"no item has metadata field {color_by!r}{hint}; fields: {', '.join(fields) or 'none'}")
    return values


def _is_numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present) and len(set(present)) > 12


def _hover(collection: Collection, ids: list[str]) -> list[list[str]]:
    """Per item: id, text, metadata (hover label) and its thumbnail as a data URI ("" without one)."""
    import base64

    thumbs = collection.thumbnails(ids)
    out = []
    for item in collection.get(ids):
        text = " ".join((item.text or item.uri or "").split())
        text = text if len(text) <= 240 else text[:239] + "…"
        # key: value pairs, not JSON: plotly shows double quotes in hover labels as &quot;
        meta = ", ".join(
            f"{k}: {v if isinstance(v, (str, int, float)) else json.dumps(v)}" for k, v in item.metadata.items()
        )
        meta = meta if len(meta) <= 180 else meta[:179] + "…"
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


def map_html(
    collection: Collection,
    projection: Projection,
    out: str | Path,
    *,
    color_by: str | None = None,
    path: list[Step] | None = None,
    title: str | None = None,
) -> Path:
    """Write an interactive map: hover shows each item's id, text and metadata. Works offline."""
    fig = map_figure(collection, projection, color_by=color_by, path=path, title=title)
    out = Path(out)
    # plotly.js inline: no CDN, works offline. Hover labels cannot hold images, so image items show their
    # thumbnail (customdata[3]) in a small panel beside the plot while hovered.
    rows = [row for trace in fig.data if trace.customdata is not None for row in trace.customdata]
    script = THUMBNAIL_SCRIPT if any(row[3] for row in rows) else ""
    fig.write_html(
        out,
        include_plotlyjs=True,
        full_html=True,
        default_width="100%",
        config={"responsive": True},
        post_script=script,
    )
    return out


def map_figure(
    collection: Collection,
    projection: Projection,
    *,
    color_by: str | None = None,
    path: list[Step] | None = None,
    title: str | None = None,
) -> Any:
    """The interactive map as a plotly Figure (what :func:`map_html` writes; a notebook shows it inline):
    hover shows each item's id, text and metadata."""
    import plotly.graph_objects as go

    values = _colour_values(collection, projection, color_by)
    hover = np.array(_hover(collection, projection.ids), dtype=object)
    coords = projection.coords
    three_d = projection.dim == 3
    template = "<b>%{customdata[0]}</b><br>%{customdata[1]}<br><i>%{customdata[2]}</i><extra></extra>"

    def trace(mask: np.ndarray, name: str, marker: dict[str, Any]) -> Any:
        xyz = {"x": coords[mask, 0], "y": coords[mask, 1]}
        common = {"mode": "markers", "name": name, "customdata": hover[mask], "hovertemplate": template}
        if three_d:
            return go.Scatter3d(z=coords[mask, 2], marker={"size": 3, **marker}, **xyz, **common)
        kind = go.Scatter if mask.sum() <= SVG_LIMIT else go.Scattergl
        return kind(marker={"size": 7, **marker}, **xyz, **common)

    fig = go.Figure()
    everything = np.ones(len(coords), dtype=bool)
    if values is None:
        fig.add_trace(trace(everything, "items", {}))
    elif _is_numeric(values):
        colour = np.array([np.nan if v is None else float(v) for v in values])
        marker = {"color": colour, "colorscale": "Viridis", "colorbar": {"title": color_by}, "showscale": True}
        fig.add_trace(trace(everything, color_by or "", marker))
    else:
        labels = np.array(["(none)" if v is None else str(v) for v in values], dtype=object)
        for label in sorted(set(labels.tolist())):
            fig.add_trace(trace(labels == label, label, {}))
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
    heading = title or (
        f"{collection.name}: {projection.method.upper()} of {len(coords):,} items"
        f" (trustworthiness {projection.trustworthiness:.3f})"
    )
    fig.update_layout(title=heading, legend_title_text=color_by or "", template="plotly_white", height=800)
    return fig


def map_png(
    collection: Collection,
    projection: Projection,
    out: str | Path,
    *,
    color_by: str | None = None,
    path: list[Step] | None = None,
    title: str | None = None,
) -> Path:
    """Write a static picture of the map (2-D, or the first two axes of a 3-D projection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = _colour_values(collection, projection, color_by)
    coords = projection.coords
    dpi = 100
    fig, ax = plt.subplots(figsize=(PNG_SIZE[0] / dpi, PNG_SIZE[1] / dpi), dpi=dpi)
    size = max(2, min(30, 6000 / max(len(coords), 1)))
    if values is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, alpha=0.7)
    elif _is_numeric(values):
        colour = np.array([np.nan if v is None else float(v) for v in values])
        points = ax.scatter(coords[:, 0], coords[:, 1], c=colour, s=size, cmap="viridis", alpha=0.8)
        fig.colorbar(points, ax=ax, label=color_by)
    else:
        labels = np.array(["(none)" if v is None else str(v) for v in values], dtype=object)
        for label in sorted(set(labels.tolist())):
            mask = labels == label
            ax.scatter(coords[mask, 0], coords[mask, 1], s=size, alpha=0.7, label=label[:30])
        if len(set(labels.tolist())) <= 20:
            ax.legend(title=color_by, fontsize=8, loc="best")
    positions = _path_positions(projection, path)
    if positions is not None:
        ax.plot(positions[:, 0], positions[:, 1], "k-o", linewidth=2, markersize=5, label="interpolation")
    ax.set_title(
        title or f"{collection.name}: {projection.method.upper()} (trustworthiness {projection.trustworthiness:.3f})"
    )
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


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
