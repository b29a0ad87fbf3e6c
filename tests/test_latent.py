"""Projections, maps, clusters and interpolation."""

import json
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.analysis.latent import CACHE_DIR, class_tfidf_words, slerp
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


@pytest.mark.slow  # (over 15 s: run by .ci/run's second step)
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


def test_labels_leave_out_words_the_whole_collection_shares():
    topics = {
        "games": "a chess game for players with puzzle levels",
        "audio": "an audio mixer for music with midi sound",
        "mail": "an email client reading imap mail messages",
    }
    texts, labels = [], []
    for c, words in enumerate(topics.values()):
        for i in range(10):  # every item also says "package", "files", "library": common to all clusters
            texts.append(f"This package provides the library files of {words} (version {i}).")
            labels.append(c)
    labels = np.array(labels)
    shared = {"package", "provides", "library", "files", "version"}
    plain = class_tfidf_words(texts, labels, top=20, distinct_ratio=0)  # BERTopic's c-TF-IDF alone
    assert all(shared <= set(words) for words in plain.values())
    found = class_tfidf_words(texts, labels, top=20)
    for c, topic in enumerate(topics):
        assert found[c] and not shared & set(found[c]) and set(found[c]) <= set(topics[topic].split())
    assert class_tfidf_words(["one two", "three four"], np.array([-1, -1])) == {}  # noise only: no labels


def test_bigram_labels_do_not_repeat_their_words():
    texts = ["noto sans font for japanese"] * 6 + ["email client imap mail"] * 6
    labels = np.array([0] * 6 + [1] * 6)
    words = class_tfidf_words(texts, labels, top=4, bigrams=True)[0]
    assert any(" " in w for w in words)
    flat = [part for w in words for part in w.split()]
    assert len(flat) == len(set(flat))  # "noto sans" and "noto" are not both there


def test_auto_clusters_reduce_before_density_so_noise_is_a_minority(home):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 64)) * 3
    blobs = np.concatenate([rng.normal(c, 0.6, size=(100, 64)) for c in centres] + [rng.normal(size=(20, 64)) * 6])
    truth = np.repeat(np.arange(5), [100, 100, 100, 100, 20])
    col = ls.create("auto", encoder="precomputed", dim=64, metric="l2", home=home)
    col.add([f"b{i}" for i in range(len(blobs))], vectors=blobs.astype(np.float32))
    found = col.clusters("auto", write=False)
    noise = sum(c.size for c in found if c.cluster == -1)
    assert noise < 0.15 * len(blobs)
    assert sorted(c.size for c in found if c.cluster != -1)[-4:] >= [95, 95, 95, 95]
    members = {c.cluster: {int(e["id"][1:]) for e in c.examples} for c in found}
    assert all(len({truth[i] for i in m}) == 1 for c, m in members.items() if c != -1)  # one blob each
    col.close()


def test_clusters_are_a_layer_that_filters_and_maps_use_and_a_new_run_replaces(topics, tmp_path):
    found = topics.clusters(4, seed=0)
    assert topics.layers["clusters"]["fields"] == ["cluster", "cluster_label"]
    assert topics.layers["clusters"]["method"] == "kmeans" and topics.layer_fields == {"cluster", "cluster_label"}
    first = found[0]
    members = topics.search_batch(topics.vectors_of(["cooking-0"]), k=20, where=f"cluster = {first.cluster}")[0]
    assert len(members) == first.size and {h.metadata["cluster_label"] for h in members} == {first.label}
    # A second run on English items only: the others lose the first run's clusters.
    topics.clusters(2, where={"lang": "en"}, seed=0)
    for item in topics.items():
        assert ("cluster" in item.metadata) == (item.metadata["lang"] == "en"), item.id
    topics.close()
    runner = CliRunner()
    hidden = runner.invoke(app, ["search", "topics", "bread dough", "-k", "3"])
    assert hidden.exit_code == 0, hidden.output
    assert "cluster" not in hidden.stdout and '"topic"' in hidden.stdout  # user fields stay, the layer does not
    shown = runner.invoke(app, ["search", "topics", "bread dough", "-k", "3", "--layers"])
    assert "cluster_label" in shown.stdout
    english = runner.invoke(app, ["search", "topics", "bread", "--where", 'lang = "en"', "--json"])
    assert "cluster" in json.loads(english.stdout)[0]["metadata"]  # data keeps the layer; only tables hide it
    out = runner.invoke(
        app, ["map", "topics", "--method", "pca", "--color-by", "cluster", "--out", str(tmp_path / "m.png")]
    )
    assert out.exit_code == 0, out.output
    kept = runner.invoke(app, ["clusters", "topics", "-n", "3", "--no-write"])
    assert kept.exit_code == 0 and "Kept as the clusters layer" not in kept.stdout
    assert ls.connect(topics.path.parent).open("topics").layers["clusters"]["clusters"] == 2  # --no-write kept it


def test_cli_clusters_auto_says_what_share_is_noise(home):
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(loc, 0.05, size=(30, 4)) for loc in (0.0, 3.0, -3.0)] + [[[9, 9, 9, 9]]])
    col = ls.create("blobs", encoder="precomputed", dim=4, metric="l2", home=home)
    col.add([f"b{i}" for i in range(len(blobs))], vectors=blobs)
    col.close()
    result = CliRunner().invoke(app, ["clusters", "blobs", "-n", "auto"])
    assert result.exit_code == 0, result.output
    assert "noise (in no cluster, -1): 1 items (1%)" in " ".join(result.stdout.split())


def test_hdbscan_auto_clusters_and_noise(home):
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(loc, 0.05, size=(30, 4)) for loc in (0.0, 3.0, -3.0)] + [[[9, 9, 9, 9]]])
    col = ls.create("blobs", encoder="precomputed", dim=4, metric="l2", home=home)
    col.add([f"b{i}" for i in range(len(blobs))], vectors=blobs)
    found = col.clusters("auto")
    assert sorted(c.size for c in found if c.cluster != -1) == [30, 30, 30]
    assert col.get(["b90"])[0].metadata["cluster"] == -1
    col.close()


CHAIN_DOCS = {  # nutrition lies between baking and medicine
    "baking": [
        "Knead the bread dough and let it rise before baking.",
        "Bake the sponge cake at 180 degrees for thirty minutes.",
        "Whisk butter and sugar until pale, then fold in the flour.",
        "A sourdough loaf needs a lively starter and a hot oven.",
        "Pipe the icing onto the cupcakes once they have cooled.",
    ],
    "nutrition": [
        "Whole grains provide fibre that keeps digestion regular.",
        "A balanced diet limits added sugar and saturated fat.",
        "Vitamin C from fruit supports the immune system.",
        "Protein needs rise for people who exercise a lot.",
        "Too many calories from sweets lead to weight gain.",
    ],
    "medicine": [
        "The patient was prescribed antibiotics for the infection.",
        "Doctors diagnosed type 2 diabetes from the blood test.",
        "The surgeon repaired the damaged heart valve.",
        "Vaccination prevents the spread of measles.",
        "High blood pressure is treated with medication and rest.",
    ],
}


@pytest.fixture
def chain(home):
    """Three topics on the real encoder, the middle one between the others in meaning."""
    col = ls.create("chain", home=home)
    ids = [f"{topic}-{i}" for topic, docs in CHAIN_DOCS.items() for i in range(len(docs))]
    col.add(ids, [doc for docs in CHAIN_DOCS.values() for doc in docs])
    yield col
    col.close()


@pytest.mark.parametrize(("start", "end"), [("baking-0", "medicine-1"), ("baking-1", "medicine-0")])
def test_a_walk_between_distant_topics_passes_through_the_topic_between(chain, start, end):
    path = chain.interpolate(start, end, steps=8)
    assert [s.t for s in path] == pytest.approx(np.linspace(0, 1, 8))
    assert not {start, end} & {s.id for s in path}  # each step shows an item that is neither end
    assert all(s.between for s in path) and {s.id.split("-")[0] for s in path} == {"nutrition"}
    a, b = chain.vectors_of([start, end])
    for step in path:
        v = chain.vectors_of([step.id])[0]
        assert (step.to_start, step.to_end) == pytest.approx((float(v @ a), float(v @ b)), abs=1e-5)


def test_a_walk_between_neighbours_says_nothing_lies_between(chain):
    path = chain.interpolate("baking-0", "baking-3", steps=5)
    assert len(path) == 5 and not any(s.between for s in path)
    assert all(s.id not in ("baking-0", "baking-3") for s in path)
    result = CliRunner().invoke(app, ["interpolate", "chain", "baking-0", "baking-3", "--home", str(chain.path.parent)])
    assert result.exit_code == 0, result.output
    assert "nothing lies between 'baking-0' and 'baking-3'" in " ".join(result.stdout.split())


def test_a_walk_within_a_filter_uses_only_its_items(chain):
    chain.update_metadata({f"nutrition-{i}": {"skip": True} for i in range(5)})
    path = chain.interpolate("baking-0", "medicine-1", steps=6, where={"skip": {"$ne": True}})
    assert path and not any(s.id.startswith("nutrition") for s in path)


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
    assert len(steps) == 8 and {"to_start", "to_end", "between"} <= set(steps[0])
    assert not {"cooking-0", "astronomy-0"} & {s["id"] for s in steps}
    bad = runner.invoke(app, ["map", "topics", "--out", str(tmp_path / "m.gif")])
    assert bad.exit_code == 1 and "use a .html or .png" in bad.stderr
    bad = runner.invoke(app, ["clusters", "topics", "-n", "many"])
    assert bad.exit_code == 1 and "'auto'" in bad.stderr


def test_a_map_draws_the_walk_from_one_end_through_the_route_to_the_other(chain):
    from latentsearch.workflows.maps import walk

    drawn = walk(chain, "baking-0", "medicine-1", steps=6, where=None)
    assert [s.id for s in (drawn[0], drawn[-1])] == ["baking-0", "medicine-1"] and len(drawn) == 8
    assert drawn[1:-1] == chain.interpolate("baking-0", "medicine-1", steps=6)
    assert drawn[0].to_start == pytest.approx(1.0) and drawn[0].to_end == pytest.approx(drawn[-1].to_start)
