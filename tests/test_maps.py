"""Maps that read well with many categories: palette and "other", legends that fit, a plot that fills
the window, WebGL and sampling for large maps."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.analysis import plots
from latentsearch.analysis.latent import CACHE_DIR
from latentsearch.analysis.plots import (
    LARGE_MAP_TEXT_CHARS,
    OTHER_COLOUR,
    PNG_SIZE,
    colour_groups,
    map_figure,
    palette,
    write_map,
)
from latentsearch.errors import InvalidInputError
from latentsearch.limits import MAX_COLORS
from latentsearch.workflows.maps import draw_map

from .browser import browser
from .conftest import random_vectors

# 50 values v00..v49, five of each count from 10 down to 1: the top 20 are v00..v19 (counts 10 to 7),
# the other 30 values hold 105 items.
COUNTS = {f"v{k:02d}": 1 + (49 - k) // 5 for k in range(50)}
TOP = [f"v{k:02d}" for k in range(20)]
REST = [f"v{k:02d}" for k in range(20, 50)]


def shuffled_values(seed: int = 0) -> list[str]:
    values = [value for value, count in COUNTS.items() for _ in range(count)]
    np.random.default_rng(seed).shuffle(values)
    return values


@pytest.fixture
def many(home):
    """275 items whose ``field`` takes the 50 values of COUNTS, with a float ``score`` and ``cluster`` ids."""
    values = shuffled_values()
    col = ls.create("many", encoder="precomputed", dim=8, home=home)
    col.add(
        [f"i{i}" for i in range(len(values))],
        [f"item {i} " + "words " * 40 for i in range(len(values))],
        vectors=random_vectors(len(values), 8),
        metadata=[{"field": v, "score": i / 7, "cluster": i % 30} for i, v in enumerate(values)],
    )
    yield col
    col.close()


def test_the_palette_is_plotlys_dark24_and_other_is_apart():
    import plotly.colors

    assert palette() == plotly.colors.qualitative.Dark24 and len(palette()) == MAX_COLORS
    assert len(set(palette())) == MAX_COLORS and OTHER_COLOUR not in palette()


def test_fifty_values_get_twenty_colours_and_one_other_group():
    values = shuffled_values()
    groups = colour_groups(values)
    assert len(groups) == 21
    coloured, other = groups[:20], groups[20]
    # the most frequent first, ties by value; each a colour of its own, in the palette's order
    assert [g.values for g in coloured] == [(v,) for v in TOP]
    assert [g.label for g in coloured[:6]] == [f"v0{k} (10)" for k in range(5)] + ["v05 (9)"]
    assert [g.colour for g in coloured] == palette()[:20]
    assert all(g.count == COUNTS[g.values[0]] for g in coloured)
    assert other.other and other.colour == OTHER_COLOUR and not any(g.other for g in coloured)
    assert sorted(other.values) == REST and other.count == 105
    assert other.label == "other (105 in 30 values)"
    # every point in exactly one group, the right one
    assert (np.sum([g.mask for g in groups], axis=0) == 1).all()
    assert {values[i] for i in np.flatnonzero(other.mask)} == set(REST)
    assert [values[i] for i in np.flatnonzero(coloured[3].mask)] == ["v03"] * 10


def test_the_number_of_colours_is_configurable():
    values = shuffled_values()
    five = colour_groups(values, 5)
    assert [g.label for g in five] == [f"v0{k} (10)" for k in range(5)] + ["other (225 in 45 values)"]
    everything = colour_groups(values, MAX_COLORS)
    assert len(everything) == MAX_COLORS + 1 and everything[-1].label == "other (81 in 26 values)"
    few = colour_groups(["a", "b", "b", None, 1_234], 20)  # no "other" when every value has a colour
    assert [g.label for g in few] == ["b (2)", "(none) (1)", "1234 (1)", "a (1)"]
    one_left = colour_groups(["a", "a", "b"], 1)
    assert one_left[-1].label == "other (1 in 1 value)"
    long = colour_groups(["x" * 100] * 1_500)
    assert long[0].label == "x" * 29 + "… (1,500)"  # the legend stays a narrow column


@pytest.mark.parametrize("bad", [0, MAX_COLORS + 1, -3, 2.5, "5", True, None], ids=lambda v: f"max_colors={v!r}")
def test_bad_max_colors_are_refused_in_one_line(many, tmp_path, bad):
    projection = many.project("pca")
    stages = []
    for attempt in (
        lambda: colour_groups(["a"], bad),
        lambda: map_figure(many, projection, color_by="field", max_colors=bad),
        lambda: write_map(many, projection, tmp_path / "m.png", color_by="field", max_colors=bad),
        lambda: draw_map(
            many, tmp_path / "d.html", method="pca", color_by="field", max_colors=bad, stage=stages.append
        ),
    ):
        with pytest.raises(InvalidInputError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith("max_colors must be ") and f"to {MAX_COLORS}" in message and "\n" not in message
    assert stages == []  # refused before projecting
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "d.html").exists()


def test_a_map_of_fifty_values_draws_twenty_colours_and_other(many):
    figure = map_figure(many, many.project("pca"), color_by="field")
    assert len(figure.data) == 21 and {trace.type for trace in figure.data} == {"scatter"}
    by_rank = sorted(figure.data, key=lambda trace: trace.legendrank)
    assert [t.name for t in by_rank] == [f"{v} ({COUNTS[v]})" for v in TOP] + ["other (105 in 30 values)"]
    assert [t.marker.color for t in by_rank] == palette()[:20] + [OTHER_COLOUR]
    assert figure.data[0].name.startswith("other")  # drawn first: under the coloured points
    assert all(len(t.x) == COUNTS[t.name.split()[0]] for t in by_rank[:20]) and len(by_rank[20].x) == 105
    field_of = {item.id: item.metadata["field"] for item in many.items()}
    assert {field_of[row[0]] for row in figure.data[0].customdata} == set(REST)  # the right members
    assert len(map_figure(many, many.project("pca"), color_by="field", max_colors=3).data) == 4
    assert figure.layout.height is None and figure.layout.autosize  # sized by its window, not fixed


def test_numbers_keep_a_colour_scale_and_cluster_ids_are_categories(many):
    projection = many.project("pca")
    scale = map_figure(many, projection, color_by="score")
    assert len(scale.data) == 1 and scale.data[0].marker.showscale and len(scale.data[0].marker.color) == 275
    # the colour bar takes the right: the legend (a path's entry) goes in a row below, not over it
    assert scale.data[0].showlegend is False and scale.layout.legend.orientation == "h"
    clusters = map_figure(many, projection, color_by="cluster")  # 30 integers, but they name groups
    assert len(clusters.data) == 21 and clusters.data[0].name.startswith("other (")


def test_large_maps_use_webgl_with_short_labels(many, tmp_path, monkeypatch):
    projection = many.project("pca")
    monkeypatch.setattr(plots, "SVG_LIMIT", 1_000)
    small = map_figure(many, projection, color_by="field")
    assert {trace.type for trace in small.data} == {"scatter"}
    monkeypatch.setattr(plots, "SVG_LIMIT", 100)  # the map's 275 points are now "large"
    large = map_figure(many, projection, color_by="field")
    # every trace, even one of 7 points: the map's size decides, or many small SVG traces add up
    assert {trace.type for trace in large.data} == {"scattergl"}
    texts = [row[1] for trace in large.data for row in trace.customdata]
    assert max(len(text) for text in texts) <= LARGE_MAP_TEXT_CHARS + 10  # + the <br> of wrapping
    assert max(len(text) for trace in small.data for text in (row[1] for row in trace.customdata)) > 200
    page = write_map(many, projection, tmp_path / "large.html", color_by="field").read_text()
    # the traces plotly.js is given (the page's template has a sample of every trace type after them)
    data = json.loads(re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{"template"', page, re.S).group(1))
    assert [trace["type"] for trace in data] == ["scattergl"] * 21


def test_draw_map_samples_above_the_map_size(many, tmp_path, monkeypatch):
    import latentsearch.workflows.maps as maps

    monkeypatch.setattr(maps, "MAP_SAMPLE", 100)
    drawn = draw_map(many, tmp_path / "m.png", method="pca", color_by="field")
    assert len(drawn.projection.ids) == 100 and drawn.projection.sampled_from == 275
    assert len(draw_map(many, tmp_path / "m.png", method="pca", sample=200).projection.ids) == 200
    monkeypatch.setattr(maps, "MAP_SAMPLE", 1_000)  # a smaller collection: the map project("pca") caches
    many.project("pca")
    cached = set((many.path / CACHE_DIR).glob("*.npz"))
    assert len(draw_map(many, tmp_path / "m.png", method="pca").projection.ids) == 275
    assert set((many.path / CACHE_DIR).glob("*.npz")) == cached


def test_the_png_legend_fits_beside_the_plot(many, tmp_path):
    import matplotlib.pyplot as plt

    path = many.interpolate("i0", "i1", steps=3)
    fig = plots._png_figure(many, many.project("pca"), color_by="field", path=path, title=None, max_colors=20)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        labels = [text.get_text() for text in legend.get_texts()]
        assert labels == [f"{v} ({COUNTS[v]})" for v in TOP] + ["other (105 in 30 values)", "interpolation"]
        box, page, plot = legend.get_window_extent(), fig.bbox, ax.get_window_extent()
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
        assert box.x0 >= plot.x1  # beside the points, never over them
        assert plot.width > 0.7 * page.width and plot.height > 0.85 * page.height
    finally:
        plt.close(fig)
    out = write_map(many, many.project("pca"), tmp_path / "m.png", color_by="field")
    from .test_latent import png_size

    assert png_size(out) == PNG_SIZE


def test_the_html_map_fills_the_window_and_its_legend_fits(many, tmp_path):
    path = many.interpolate("i0", "i1", steps=3)
    out = write_map(many, many.project("pca"), tmp_path / "map.html", color_by="field", path=path)
    measure = """
        const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        const scrollbar = document.querySelector('.legend .scrollbar');
        return {
            width: innerWidth, height: innerHeight,
            page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
            graph: box(document.querySelector('.js-plotly-plot .main-svg')),
            plot: box(document.querySelector('.nsewdrag')),
            legend: box(document.querySelector('.legend')),
            entries: [...document.querySelectorAll('.legend .traces')].map(box),
            texts: [...document.querySelectorAll('.legendtext')].map(e => e.textContent),
            scrolls: scrollbar ? scrollbar.getBoundingClientRect().height > 0 : false,
        };"""
    driver = browser()  # 1200 x 900
    try:
        driver.get(out.as_uri())
        seen = driver.execute_script(measure)
        width, height = seen["width"], seen["height"]
        assert seen["page"] == [width, height]  # nothing to scroll
        left, top, right, bottom = seen["graph"]
        assert right - left >= 0.9 * width and bottom - top >= 0.9 * height  # the plot takes the window
        left, top, right, bottom = seen["plot"]
        assert right - left >= 0.75 * width and bottom - top >= 0.85 * height  # and the legend takes little
        for left, top, right, bottom in (seen["graph"], seen["plot"]):  # all of it in sight
            assert left >= 0 and top >= 0 and right <= width and bottom <= height
        assert seen["texts"] == [f"{v} ({COUNTS[v]})" for v in TOP] + ["other (105 in 30 values)", "interpolation"]
        assert not seen["scrolls"]
        for left, top, right, bottom in [seen["legend"], *seen["entries"]]:  # every entry visible, unscrolled
            assert left >= 0 and top >= 0 and right <= width and bottom <= height
        assert seen["legend"][0] >= seen["plot"][2]  # beside the points, not over them
        driver.set_window_size(800, 700)  # responsive: follows the window
        driver.execute_script("window.dispatchEvent(new Event('resize'))")
        deadline = time.monotonic() + 10
        while (seen := driver.execute_script(measure))["graph"][2] > seen["width"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen["graph"][2] - seen["graph"][0] >= 0.9 * seen["width"] and seen["graph"][2] <= seen["width"]
    finally:
        driver.quit()
