"""Projections, maps, clusters and interpolation."""

import json
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.analysis.latent import CACHE_DIR, slerp
from latentsearch.analysis.plots import MAP_TEXT_CHARS, PNG_SIZE, map_payload, write_map
from latentsearch.cli import app

from .browser import browser
from .conftest import random_vectors


@pytest.mark.parametrize("method", ["pca", "tsne", pytest.param("umap", marks=pytest.mark.slow)])  # umap: ~25 s
@pytest.mark.parametrize("dim", [2, 3])
def test_projections(topics, method, dim):
    projection = topics.project(method, dim=dim)
    assert projection.coords.shape == (20, dim)
    assert sorted(projection.ids) == sorted(it.id for it in topics.items())
    assert 0.5 < projection.trustworthiness <= 1.0
    assert np.isfinite(projection.coords).all()


def test_map_payload_pairs_each_point_with_its_item(topics):
    topics.add(["long"], ["word " * 100], vectors=topics.get(["cooking-0"], with_vectors=True)[0].vector[None])
    projection = topics.project("pca")
    payload = map_payload(topics, projection)
    assert payload["ids"] == projection.ids and payload["coords"] == projection.coords.tolist()
    assert payload["method"] == "pca" and payload["trustworthiness"] == projection.trustworthiness
    items = {item.id: item for item in topics.get(projection.ids)}
    assert payload["texts"] == [items[i].text[:MAP_TEXT_CHARS] for i in projection.ids]
    assert payload["metadata"] == [items[i].metadata for i in projection.ids]
    assert len(payload["texts"][projection.ids.index("long")]) == MAP_TEXT_CHARS  # cut for a hover label
    json.dumps(payload)  # ready to send as is
    assert map_payload(topics, projection, text_chars=5)["texts"][0] == items[projection.ids[0]].text[:5]


def test_projection_keeps_topics_apart(topics):
    projection = topics.project("pca")
    topic_of = {it.id: it.metadata["topic"] for it in topics.items()}
    coords = {i: c for i, c in zip(projection.ids, projection.coords)}
    centres = {t: np.mean([coords[i] for i in coords if topic_of[i] == t], axis=0) for t in set(topic_of.values())}
    # Each item is closer to its own topic's centre than to the furthest other topic's centre.
    for item_id, point in coords.items():
        own = np.linalg.norm(point - centres[topic_of[item_id]])
        assert own < max(np.linalg.norm(point - c) for t, c in centres.items() if t != topic_of[item_id])


def test_projection_cache_is_invalidated_by_changes(home):
    col = ls.create("p", encoder="precomputed", dim=8, home=home)
    col.add([f"v{i}" for i in range(50)], vectors=random_vectors(50, 8))
    first = col.project("umap")
    assert len(list((col.path / CACHE_DIR).glob("*.npz"))) == 1
    again = col.project("umap")
    assert np.array_equal(first.coords, again.coords) and again.ids == first.ids
    col.add(["new"], vectors=random_vectors(1, 8, 9))
    changed = col.project("umap")
    assert "new" in changed.ids and len(changed.ids) == 51
    col.delete(["v3"])
    assert "v3" not in col.project("umap").ids
    col.close()


def test_metadata_updates_keep_unfiltered_projections(home, monkeypatch):
    import latentsearch.analysis.latent as latent

    col = ls.create("p", encoder="precomputed", dim=8, home=home)
    col.add([f"v{i}" for i in range(30)], vectors=random_vectors(30, 8), metadata=[{"g": i % 2} for i in range(30)])
    whole, evens = col.project("pca"), col.project("pca", where={"g": 0})
    col.clusters(3)  # writes cluster labels into the metadata
    col.update_metadata({"v1": {"g": 0}})
    projected = []
    monkeypatch.setattr(latent, "_run", lambda *args: projected.append(args) or np.zeros((len(args[1]), 2)))
    assert col.project("pca").ids == whole.ids and not projected  # the vectors did not change
    assert "v1" in col.project("pca", where={"g": 0}).ids and len(projected) == 1  # the filter's matches did
    assert len(evens.ids) == 15
    col.close()


def test_filter_and_seeded_sample(topics):
    english = topics.project("pca", where={"lang": "en"})
    assert len(english.ids) == 12 and english.sampled_from == 12
    sample = topics.project("pca", sample=10, seed=1)
    assert len(sample.ids) == 10 and sample.sampled_from == 20
    assert topics.project("pca", sample=10, seed=1).ids == sample.ids
    assert topics.project("pca", sample=10, seed=2).ids != sample.ids


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.project("mds"), "unknown projection"),
        (lambda c: c.project("pca", dim=4), "dim must be 2 or 3"),
        (lambda c: c.project("tsne", where={"topic": "none"}), "needs at least 6 items"),
        (lambda c: c.project("pca", sample=0), "sample must be"),
        (lambda c: c.project("tsne", params={"bogus": 1}), "bad tsne parameters"),
        (lambda c: c.clusters(50), "cannot make 50 clusters of 20 items"),
        (lambda c: c.clusters(0), "n must be"),
        (lambda c: c.interpolate("cooking-0", "ghost"), "unknown id 'ghost'"),
        (lambda c: c.interpolate("cooking-0", "cooking-1", steps=1), "steps must be"),
        (lambda c: write_map(c, c.project("pca"), "map.svg"), "use a .html"),
        (lambda c: write_map(c, c.project("pca"), "m.png", color_by="colour"), "no item has metadata field 'colour'"),
    ],
)
def test_bad_input(topics, call, message):
    with pytest.raises(ls.LatentSearchError, match=message):
        call(topics)


def test_clusters_are_labelled_by_their_topic(topics):
    found = topics.clusters(4)
    assert sorted(c.size for c in found) == [5, 5, 5, 5]
    topic_of = {it.id: it.metadata["topic"] for it in topics.items()}
    expected_words = {
        "cooking": {"bread", "dough", "sauce", "soup", "cake", "eggs", "oven", "garlic", "basil", "vegetables"},
        "astronomy": {"galaxy", "telescope", "star", "planet", "comet", "sun", "astronomers", "supernova", "moons"},
        "programming": {"function", "class", "program", "method", "debugger", "compile", "exception", "hash"},
        "finance": {"bank", "rates", "interest", "portfolio", "bond", "bonds", "mortgage", "earnings", "inflation"},
    }
    labelled = set()
    for c in found:
        topics_in = {topic_of[e["id"]] for e in c.examples}
        assert len(topics_in) == 1  # examples of a cluster share a topic
        topic = topics_in.pop()
        assert expected_words[topic] & set(c.words), (topic, c.words)
        labelled.add(topic)
    assert labelled == set(expected_words)
    # Written back: every item has its cluster, and items of one topic share it.
    items = topics.items()
    by_topic = {}
    for it in items:
        by_topic.setdefault(it.metadata["topic"], set()).add(it.metadata["cluster"])
        assert it.metadata["cluster_label"]
    assert all(len(clusters) == 1 for clusters in by_topic.values())


def test_hdbscan_auto_clusters_and_noise(home):
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(loc, 0.05, size=(30, 4)) for loc in (0.0, 3.0, -3.0)] + [[[9, 9, 9, 9]]])
    col = ls.create("blobs", encoder="precomputed", dim=4, metric="l2", home=home)
    col.add([f"b{i}" for i in range(len(blobs))], vectors=blobs)
    found = col.clusters("auto")
    assert sorted(c.size for c in found if c.cluster != -1) == [30, 30, 30]
    assert col.get(["b90"])[0].metadata["cluster"] == -1
    col.close()


def test_interpolation_walks_from_one_item_to_the_other(topics):
    path = topics.interpolate("cooking-0", "astronomy-0", steps=8)
    assert len(path) == 8
    assert path[0].id == "cooking-0" and path[-1].id == "astronomy-0"
    assert [s.t for s in path] == pytest.approx(np.linspace(0, 1, 8))
    topic_seq = [s.id.split("-")[0] for s in path]
    switch = topic_seq.index("astronomy")
    assert set(topic_seq[:switch]) == {"cooking"} or "cooking" not in topic_seq[switch:]
    assert "cooking" not in topic_seq[switch:]  # once across, the path does not go back


def test_slerp_stays_on_the_sphere():
    a, b = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    for t in np.linspace(0, 1, 7):
        assert np.linalg.norm(slerp(a, b, t)) == pytest.approx(1.0)
    assert np.allclose(slerp(a, b, 0.5), np.array([1, 1, 0]) / np.sqrt(2))


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_map_is_a_real_image(topics, tmp_path):
    out = write_map(topics, topics.project("pca"), tmp_path / "map.png", color_by="topic")
    assert png_size(out) == PNG_SIZE
    import matplotlib.image

    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (PNG_SIZE[1], PNG_SIZE[0])
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 20  # more than a blank canvas


def test_html_map_renders_points_and_hover_in_a_browser(topics, tmp_path):
    path = topics.interpolate("cooking-0", "finance-0", steps=5)
    out = write_map(topics, topics.project("umap"), tmp_path / "map.html", color_by="topic", path=path)
    page = out.read_text()
    import re

    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js is inline: self-contained, works offline
    assert "Plotly.newPlot" in page
    driver = browser()
    try:
        driver.get(out.as_uri())
        points = driver.execute_script("return document.querySelectorAll('.scatterlayer .trace path.point').length")
        assert points == 20 + len(path)  # the items, and the path's markers
        legend = driver.execute_script("return [...document.querySelectorAll('.legendtext')].map(e => e.textContent)")
        assert set(legend) == {"astronomy (5)", "cooking (5)", "finance (5)", "programming (5)", "interpolation"}
        hover = driver.execute_script(
            """const gd = document.querySelector('.js-plotly-plot');
            const trace = gd.data.findIndex(t => t.name === 'cooking (5)');
            const point = gd.data[trace].customdata.findIndex(c => c[0] === 'cooking-1');
            Plotly.Fx.hover(gd, [{curveNumber: trace, pointNumber: point}]);
            return document.querySelector('.hoverlayer .hovertext').textContent;"""
        )
        assert "cooking-1" in hover and "Knead the bread dough" in hover and "topic: cooking" in hover
    finally:
        driver.quit()


def test_cli_map_clusters_interpolate(topics, tmp_path):
    runner = CliRunner()
    topics.close()
    result = runner.invoke(app, ["map", "topics", "--method", "pca", "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    assert "trustworthiness" in result.stdout and png_size(tmp_path / "m.png") == PNG_SIZE
    result = runner.invoke(
        app,
        [
            "map",
            "topics",
            "--method",
            "tsne",
            "--color-by",
            "lang",
            "--out",
            str(tmp_path / "m.html"),
            "--path",
            "cooking-0,astronomy-0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.html").stat().st_size > 1_000_000
    found = json.loads(runner.invoke(app, ["clusters", "topics", "-n", "4", "--json"]).stdout)
    assert sorted(c["size"] for c in found) == [5, 5, 5, 5]
    colored = runner.invoke(
        app, ["map", "topics", "--method", "pca", "--color-by", "cluster", "--out", str(tmp_path / "c.png")]
    )
    assert colored.exit_code == 0, colored.output
    steps = json.loads(runner.invoke(app, ["interpolate", "topics", "cooking-0", "astronomy-0", "--json"]).stdout)
    assert steps[0]["id"] == "cooking-0" and steps[-1]["id"] == "astronomy-0"
    bad = runner.invoke(app, ["map", "topics", "--out", str(tmp_path / "m.gif")])
    assert bad.exit_code == 1 and "use a .html or .png" in bad.stderr
    bad = runner.invoke(app, ["clusters", "topics", "-n", "many"])
    assert bad.exit_code == 1 and "'auto'" in bad.stderr
