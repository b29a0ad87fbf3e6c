"""The library's entry points for what the CLI used to do by itself: reading inputs for a collection,
the demo, drawing a map, and training an autoencoder on a folder of images."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.io.inputs import check_encodes, check_inputs, load_vectors, read_for

from .conftest import random_vectors

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stand_in(modality: str | None) -> SimpleNamespace:
    """What the input helpers read of a collection: its manifest's modality."""
    return SimpleNamespace(manifest={"modality": modality})


# ------------------------------------------------------------------------------------------ inputs


def test_load_vectors_reads_npy_and_names_a_bad_file(tmp_path):
    np.save(tmp_path / "v.npy", random_vectors(3, 4))
    assert load_vectors(tmp_path / "v.npy").shape == (3, 4)
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ls.InvalidInputError, match=r"cannot read query vector .*pickled\.npy"):
        load_vectors(tmp_path / "pickled.npy", "query vector")  # never unpickled
    with pytest.raises(ls.InvalidInputError, match="cannot read vectors .*nowhere.npy"):
        load_vectors(tmp_path / "nowhere.npy")


def test_check_inputs_are_image_paths_for_an_image_collection(tmp_path):
    assert check_inputs(stand_in("image"), texts=["a.png", "b/c.jpg"]) == [Path("a.png"), Path("b/c.jpg")]
    assert check_inputs(stand_in("text"), texts=["a.png", "hello"]) == ["a.png", "hello"]
    array = random_vectors(2, 4)
    assert check_inputs(stand_in("image"), vectors=array) is array
    np.save(tmp_path / "v.npy", array)
    np.testing.assert_array_equal(check_inputs(stand_in("text"), vectors=tmp_path / "v.npy"), array)
    for neither_or_both in ({}, {"texts": ["x"], "vectors": array}, {"texts": []}):
        with pytest.raises(ls.InvalidInputError, match="give texts"):
            check_inputs(stand_in("text"), **neither_or_both)
    assert check_encodes(["a text"]) and check_encodes([Path("a.png")]) and not check_encodes(array)


def test_check_inputs_with_a_real_collection(home):
    col = ls.connect(home).create("v", encoder="precomputed", dim=4)
    col.add(["a", "b", "c"], vectors=random_vectors(3, 4))
    inputs = check_inputs(col, vectors=random_vectors(1, 4, seed=1))
    assert len(col.check(inputs, k=1)) == 1
    col.close()


def test_read_for_picks_the_reader_by_the_collection_modality(tmp_path):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "red.png")
    (folder / "note.txt").write_text("a note about red squares")
    images = read_for(stand_in("image"), folder)
    assert images.ids == ["red.png"] and [Path(f).name for f, _ in images.skipped] == ["note.txt"]
    assert read_for(stand_in("joint"), folder).ids == ["red.png"]
    texts = read_for(stand_in("text"), folder)
    assert texts.ids == ["note.txt"] and texts.texts == ["a note about red squares"]
    (tmp_path / "v.jsonl").write_text(json.dumps({"id": "x", "vec": [1, 2, 3, 4]}) + "\n")
    given = read_for(stand_in("image"), tmp_path / "v.jsonl", vector_field="vec")  # vectors: no image reading
    assert given.ids == ["x"] and given.vectors.shape == (1, 4)


def test_search_encodes_only_when_the_model_runs():
    request = ls.SearchRequest
    assert request(query="bread").needs_encoder
    assert request(query="bread", mode="hybrid").needs_encoder
    assert not request(query="bread", mode="lexical").needs_encoder
    assert request(query=Path("cat.png")).needs_encoder
    assert not request(vector=[0.0, 1.0]).needs_encoder
    assert not request(like="a").needs_encoder


# -------------------------------------------------------------------------------------------- demo


def test_run_demo_builds_the_collection_and_answers_its_queries(home):
    from latentsearch.workflows.demo import DEMO_QUERIES, demo_corpus, run_demo

    items = demo_corpus()
    assert len(items) > 500 and len({i["id"] for i in items}) == len(items)
    subset = [i for i in items if i["metadata"]["kind"] in ("function", "topic")][:120]
    db = ls.connect(home)
    entered, progress = [], []

    @contextlib.contextmanager
    def encoding(col):
        entered.append(col.name)
        yield lambda done, total: progress.append((done, total))

    run = run_demo(db, k=2, items=subset, encoding=encoding)
    assert entered == ["demo"] and progress[-1] == (len(subset), len(subset))
    assert run.items == len(subset) and run.path == home / "demo" and run.rate > 0
    assert [(s.query, s.where) for s in run.searches] == list(DEMO_QUERIES)
    assert all(len(s.hits) == 2 for s in run.searches)
    assert all(h.metadata["kind"] == "function" for h in run.searches[3].hits)  # where kind = "function"
    assert run.tuning is not None and run.tuning.queries["pseudo"] >= 100  # tuned before searching
    with db.open("demo") as col:
        assert col.search_fusion == run.tuning.chosen
    again = run_demo(db, k=1, items=subset[:10])  # replaces the demo collection of the run before
    assert again.items == 10 and all(len(s.hits) <= 1 for s in again.searches)
    assert again.tuning is None  # 10 texts are too few to tune: the default stays
    with db.open("demo") as col:
        assert col.count() == 10


# --------------------------------------------------------------------------------------------- map


def test_draw_map_writes_the_projection_and_the_path(home, tmp_path):
    from latentsearch.workflows.maps import draw_map

    col = ls.connect(home).create("v", encoder="precomputed", dim=8, index="flat")
    col.add([f"i{n}" for n in range(30)], vectors=random_vectors(30, 8))
    stages: list[str] = []
    drawn = draw_map(col, tmp_path / "m.png", method="pca", path=("i0", "i9"), steps=4, stage=stages.append)
    assert drawn.path.read_bytes()[:8] == PNG_SIGNATURE
    assert len(drawn.projection.ids) == 30 and stages[-1] == "drawing"
    with pytest.raises(ls.InvalidInputError, match="use a .html or .png"):
        draw_map(col, tmp_path / "m.gif", method="pca")
    assert not (tmp_path / "m.gif").exists()
    with pytest.raises(ls.ItemNotFoundError, match="unknown id .ghost."):
        draw_map(col, tmp_path / "g.png", method="pca", path=("i0", "ghost"))
    assert not (tmp_path / "g.png").exists()
    col.close()


def test_cached_projection_reads_the_cache_and_computes_nothing(home):
    from latentsearch.workflows.mapview import map_view

    col = ls.connect(home).create("v", encoder="precomputed", dim=8, index="flat")
    col.add([f"i{n}" for n in range(30)], vectors=random_vectors(30, 8))
    assert col.cached_projection("pca", sample=10) is None
    assert not (col.path / "projections").exists()  # nothing was computed, so nothing cached
    made = col.project("pca", sample=10)
    assert col.cached_projection("pca", sample=10).coords.tolist() == made.coords.tolist()
    assert col.cached_projection("pca", sample=10, seed=1) is None  # another projection
    with pytest.raises(ls.InvalidInputError, match="unknown projection"):
        col.cached_projection("mds")
    # No UMAP cached: the view is a PCA map, computed now, of at most `sample` items.
    view = map_view(col, sample=20)
    assert (view.projection.method, len(view.projection.ids), view.preferred, view.ready) == ("pca", 20, "umap", False)
    col.add(["late"], vectors=random_vectors(1, 8, seed=1))
    assert col.cached_projection("pca", sample=10) is None  # the vectors changed since
    col.close()


# ------------------------------------------------------------------------------------- autoencoder


@pytest.fixture
def digit_folder(tmp_path) -> Path:
    """60 handwritten digits as PNG files, and a text file that is not an image."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path / "digits"
    folder.mkdir()
    for i, image in enumerate(load_digits().images[:60]):
        Image.fromarray((image * 15).astype(np.uint8)).save(folder / f"d{i:02d}.png")
    (folder / "readme.txt").write_text("not an image")
    return folder


def test_train_autoencoder_from_folder_saves_the_model_and_builds_a_collection(home, tmp_path, digit_folder):
    pytest.importorskip("torch")
    from latentsearch.workflows.autoencoder import train_autoencoder_from_folder

    epochs: list[tuple[int, int]] = []
    trained = train_autoencoder_from_folder(
        digit_folder,
        tmp_path / "model",
        latent_dim=4,
        variational=True,
        epochs=3,
        image_size=16,
        progress=lambda epoch, total: epochs.append((epoch, total)),
        into="digits",
        db=ls.connect(home),
    )
    assert epochs == [(1, 3), (2, 3), (3, 3)] and len(trained.losses) == 3
    assert trained.images == 60 and [Path(f).name for f, _ in trained.skipped] == ["readme.txt"]
    assert trained.pictures == ["loss.png", "reconstructions.png", "samples.png"]
    for picture in trained.pictures:
        assert (trained.folder / picture).read_bytes()[:8] == PNG_SIGNATURE
    assert json.loads((trained.folder / "config.json").read_text())["latent_dim"] == 4
    col = trained.collection
    assert col is not None and col.encoder_name == f"ae:{trained.folder.resolve()}"
    assert col.count() == 60 and col.dim == 4
    assert col.search(digit_folder / "d07.png", k=1)[0].id == "d07.png"
    col.close()


def test_train_autoencoder_from_a_missing_folder_changes_nothing(home, tmp_path):
    pytest.importorskip("torch")
    from latentsearch.workflows.autoencoder import train_autoencoder_from_folder

    with pytest.raises(ls.InvalidInputError, match="does not exist"):
        train_autoencoder_from_folder(tmp_path / "nowhere", tmp_path / "model", into="x", db=ls.connect(home))
    assert not (tmp_path / "model").exists() and ls.connect(home).list() == []


def test_autoencoder_pictures_from_a_saved_model(tmp_path, digit_folder):
    pytest.importorskip("torch")
    from latentsearch.workflows.autoencoder import (
        interpolation_strip,
        load_training_images,
        sample_grid,
        train_and_save,
    )

    training = load_training_images(digit_folder, latent_dim=4, image_size=16)
    assert training.array.shape == (60, 1, 16, 16) and len(training.kept) == 60
    trained = train_and_save(training, tmp_path / "model", epochs=2)
    assert trained.pictures == ["loss.png", "reconstructions.png"]  # no samples from a plain autoencoder
    # The verdict compares the model's error on its images with the mean image's, both measured here.
    from latentsearch.encoders.autoencoder import AutoencoderEncoder, mean_image_error

    errors = AutoencoderEncoder(trained.folder).reconstruction_error(training.array)
    assert trained.error == pytest.approx(float(errors.mean()), rel=1e-5)
    assert trained.baseline_error == pytest.approx(float(training.array.var(axis=0).mean()), rel=1e-4)
    assert trained.baseline_error == mean_image_error(training.array)
    strip = interpolation_strip(trained.folder, digit_folder / "d01.png", digit_folder / "d02.png", tmp_path / "s.png")
    grid = sample_grid(trained.folder, tmp_path / "g.png", n=4)
    assert strip.read_bytes()[:8] == PNG_SIGNATURE and grid.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ls.InvalidInputError):
        sample_grid(tmp_path, tmp_path / "x.png")  # not a model folder


def test_an_autoencoder_no_better_than_the_mean_image_says_so(tmp_path):
    from latentsearch.workflows.autoencoder import TrainedAutoencoder

    learned = TrainedAutoencoder(tmp_path, [0.09, 0.02], 500, error=0.01, baseline_error=0.05)
    assert learned.beats_baseline and learned.verdict().endswith("(5.0x better)")
    flat = TrainedAutoencoder(tmp_path, [0.06, 0.05, 0.05], 40, error=0.048, baseline_error=0.05)
    assert not flat.beats_baseline  # within 10% of the baseline: nothing learnt worth showing
    verdict = flat.verdict()
    assert verdict.startswith("warning:") and "--epochs, 3 now" in verdict and "40 now" in verdict
