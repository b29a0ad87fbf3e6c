"""What a notebook shows: readable hits, HTML tables of results, a map's plotly figure inline."""

from __future__ import annotations

import latentsearch as ls

from .conftest import random_vectors


def test_hits_read_as_one_line_and_as_an_html_table(topics):
    hits = topics.search("telescope and galaxies", k=3)
    assert isinstance(hits, ls.Hits) and isinstance(hits, list) and len(hits) == 3
    line = repr(hits[0])
    assert line.startswith(f"Hit(id={hits[0].id!r}, score=") and "\n" not in line and len(line) < 260
    assert "metadata={'topic': 'astronomy'" in line
    table = hits._repr_html_()
    assert table.count("<td><code>") == 3 and f"<code>{hits[0].id}</code>" in table and "astronomy" in table
    assert isinstance(topics.search_batch([random_vectors(1, 384)[0]], k=2)[0], ls.Hits)
    assert isinstance(topics.recommend([hits[0].id], k=2), ls.Hits)
    assert ls.Hits([])._repr_html_() == "<p><i>no results</i></p>"


def test_the_html_table_escapes_what_items_hold(home):
    col = ls.create("c", encoder="precomputed", dim=4, home=home)
    col.add(["<b>x</b>"], ["<script>alert(1)</script>"], vectors=random_vectors(1, 4), metadata=[{"<i>": "&"}])
    table = col.search(random_vectors(1, 4)[0], k=1)._repr_html_()
    assert "<script>" not in table and "&lt;script&gt;" in table and "&lt;b&gt;x&lt;/b&gt;" in table
    assert "&amp;" in table and "<i>" not in table
    vector_hit = col.search(random_vectors(1, 4)[0], k=1, include=["vector"])[0]
    assert repr(vector_hit).endswith("vector=<4 floats>)")


def test_a_projection_gives_its_map_as_a_plotly_figure(topics, tmp_path):
    projection = topics.project(method="pca")
    figure = projection.figure(topics, color_by="topic")
    names = ["astronomy (5)", "cooking (5)", "finance (5)", "programming (5)"]
    assert sorted(trace.name for trace in figure.data) == names
    assert sum(len(trace.x) for trace in figure.data) == 20
    hover = {row[0] for trace in figure.data for row in trace.customdata}
    assert {"cooking-0", "finance-4"} <= hover
    assert "trustworthiness" in figure.layout.title.text
    two = projection.figure(topics, color_by="topic", max_colors=2)  # the rest is one grey group
    assert sorted(trace.name for trace in two.data)[-1].startswith("other (10 in 2 values)")
    from latentsearch.analysis.plots import write_map

    page = write_map(topics, projection, tmp_path / "map.html", color_by="topic").read_text()
    assert all(f'"name":"{name}"' in page for name in names)
