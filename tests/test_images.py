"""Image collections: reading folders, the pretrained encoder, search by image, CLIP, alignment."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.encoders import get_encoder
from latentsearch.encoders.align import train_alignment
from latentsearch.io.ingest import read_input

from .tiny_clip import build_tiny_clip


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Patches of scikit-learn's two sample photos, digit images, a GIF, and two files that are not images."""
    from sklearn.datasets import load_digits, load_sample_images

    folder = tmp_path_factory.mktemp("images")
    (folder / "digits").mkdir()
    for name, photo in zip(("china", "flower"), load_sample_images().images):
        for i in range(3):
            Image.fromarray(photo[i * 90 : i * 90 + 200, i * 110 : i * 110 + 260]).save(folder / f"{name}{i}.jpg")
    digits = load_digits()
    for i in range(12):
        pixels = (digits.images[i] * 15).astype(np.uint8)
        Image.fromarray(pixels).resize((64, 64), Image.NEAREST).save(folder / "digits" / f"d{i}_{digits.target[i]}.png")
    Image.fromarray(load_sample_images().images[0][:120, :120]).save(folder / "anim.gif")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return folder


@pytest.fixture(scope="module")
def pictures(image_folder, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    col = ls.create("pictures", encoder="efficientnet-lite0", home=home)
    records = read_input(image_folder, images=True)
    from latentsearch.io.ingest import ingest

    ingest(col, records)
    yield col, records
    col.close()


def test_folder_is_read_and_bad_files_reported(pictures, image_folder):
    col, records = pictures
    assert col.count() == 6 + 12 + 1
    assert {why for _, why in records.skipped} >= {"not an image file type"}
    assert sorted(p.split("/")[-1] for p, _ in records.skipped) == ["broken.png", "notes.txt"]
    item = col.get(["digits/d3_3.png"])[0]
    assert item.kind == "image" and item.uri == str(image_folder / "digits" / "d3_3.png")
    thumbs = col.backend.store.thumbnails([col.backend.store.rowids_of(["china0.jpg"])["china0.jpg"]])
    thumb = Image.open(__import__("io").BytesIO(next(iter(thumbs.values()))))
    assert thumb.format == "JPEG" and max(thumb.size) <= 96


def test_pretrained_features_group_similar_images(pictures, image_folder):
    col, _ = pictures
    assert col.dim == 1280 and col.encoder_name == "efficientnet-lite0"
    hits = col.search(image_folder / "china1.jpg", k=3)
    assert hits[0].id == "china1.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert {h.id[:5] for h in hits[1:]} <= {"china", "anim."}  # the GIF is cut from the same photo
    digits = col.search(like="digits/d0_0.png", k=5)
    assert all(h.id.startswith("digits/") for h in digits)
    recommended = col.recommend([{"image": str(image_folder / "flower0.jpg")}], k=2)
    assert all(h.id.startswith("flower") for h in recommended)


def test_outliers_and_filters_on_images(pictures):
    col, _ = pictures
    flagged = col.outliers("knn", k=3, contamination=0.1)
    assert flagged and not flagged[0].id.startswith("digits/")  # a photo among mostly digits
    assert all(n["id"] for n in flagged[0].neighbors)


def test_image_errors(pictures, image_folder, tmp_path, topics):
    col, _ = pictures
    with pytest.raises(ls.InvalidInputError, match="cannot read image"):
        col.search(image_folder / "broken.png")
    with pytest.raises(ls.InvalidInputError, match="cannot encode text"):
        col.search("a red flower")
    with pytest.raises(ls.InvalidInputError, match="not images"):
        topics.search(image_folder / "china0.jpg")
    huge = tmp_path / "bomb.png"
    Image.new("1", (12_000, 6_000)).save(huge)  # 72 Mpixels in a few kB: refused before decoding
    with pytest.raises(ls.InvalidInputError, match="over the"):
        col.search(huge)
    with pytest.raises(ls.InvalidInputError, match="no readable images"):
        read_input(tmp_path, images=True)


def test_cli_images(pictures, image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTSEARCH_HOME", str(tmp_path / "h"))
    runner = CliRunner()
    assert runner.invoke(app, ["create", "pics", "--encoder", "efficientnet-lite0"]).exit_code == 0
    result = runner.invoke(app, ["add", "pics", str(image_folder / "digits")])
    assert result.exit_code == 0 and "added 12 items" in result.stdout
    result = runner.invoke(app, ["add", "pics", str(image_folder), "--upsert"])
    assert "skipped 2 files" in result.stderr and "broken.png" in result.stderr
    hits = json.loads(
        runner.invoke(app, ["search", "pics", "--image", str(image_folder / "flower2.jpg"), "-k", "1", "--json"]).stdout
    )
    assert hits[0]["id"] == "flower2.jpg"


def test_clip_style_model_searches_images_by_text(tmp_path, image_folder):
    model = build_tiny_clip(tmp_path / "tiny-clip")
    encoder = get_encoder(f"st:{model}")
    assert encoder.modality == "joint"
    col = ls.create("clip", encoder=f"st:{model}", home=tmp_path / "home")
    assert col.manifest["modality"] == "joint"
    files = sorted(image_folder.glob("*.jpg"))
    col.add([f.name for f in files], uris=[str(f) for f in files])
    # The collection's vectors are the model's own image embeddings, and a text query is ranked by
    # the model's text embedding: the code path CLIP models take (a random model has no meaning).
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model), device="cpu", local_files_only=True)
    images = reference.encode([Image.open(f).convert("RGB") for f in files], normalize_embeddings=True)
    stored = col.vectors_of([f.name for f in files])
    assert np.allclose(stored, images, atol=1e-5)
    query = reference.encode(["a photo of a red flower"], normalize_embeddings=True)[0]
    expected = [files[i].name for i in np.argsort(-(images @ query))[:3]]
    assert [h.id for h in col.search("a photo of a red flower", k=3)] == expected
    assert col.search(files[0], k=1)[0].id == files[0].name  # and images search images
    with pytest.raises(ls.InvalidInputError, match="text only"):
        get_encoder("minilm").encode([files[0]])
    col.close()


def test_alignment_makes_text_find_the_right_images(home):
    """Synthetic 'image' vectors per class; captions are class names encoded by MiniLM."""
    rng = np.random.default_rng(0)
    classes = ["a sneaker", "a handbag", "a pullover", "an ankle boot", "a dress"]
    centres = rng.normal(size=(len(classes), 64))
    labels = rng.integers(0, len(classes), size=600)
    vectors = (centres[labels] + 0.8 * rng.normal(size=(600, 64))).astype(np.float32)
    text = get_encoder("minilm").encode(classes)
    weight, bias, losses = train_alignment(vectors[:500], text[labels[:500]], epochs=20)
    assert losses[-1] < losses[0] * 0.5
    projected = vectors[500:] @ weight.T + bias
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    precision = []
    for c, caption in enumerate(classes):
        query = get_encoder("minilm").encode([caption])[0]
        top = np.argsort(-(projected @ query))[:10]
        precision.append(np.mean(labels[500:][top] == c))
    assert np.mean(precision) > 0.9


def test_align_collection_end_to_end(pictures, tmp_path):
    from latentsearch.workflows.align import align_collection

    col, _ = pictures
    captions = {
        it.id: ("a handwritten digit" if it.id.startswith("digits/") else "a colour photograph") for it in col.items()
    }
    aligned, losses = align_collection(
        col, captions=captions, out=tmp_path / "align", into="aligned", epochs=15, home=tmp_path / "h"
    )
    assert aligned.manifest["modality"] == "joint" and aligned.dim == 384 and aligned.count() == col.count()
    hits = aligned.search("a handwritten digit", k=5)
    assert all(h.id.startswith("digits/") for h in hits)
    assert aligned.search("a colour photograph", k=1)[0].id.startswith(("china", "flower", "anim"))
    assert aligned.backend.store.thumbnails([1])  # thumbnails were carried over
    with pytest.raises(ls.InvalidInputError, match="caption"):
        align_collection(col, out=tmp_path / "x", into="x", home=tmp_path / "h")
    aligned.close()


def test_autoencoder_workflow_from_the_cli(tmp_path, monkeypatch):
    """train-autoencoder on digit images, an ae:PATH collection, reconstruction-error outliers."""
    from sklearn.datasets import load_digits, load_sample_images

    monkeypatch.setenv("LATENTSEARCH_HOME", str(tmp_path / "home"))
    digits = load_digits()
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(300):
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(folder / f"d{i:03d}.png")
    photo = load_sample_images().images[1][100:164, 200:264]
    Image.fromarray(photo).save(folder / "zz_photo.png")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train-autoencoder",
            str(folder),
            "--out",
            str(tmp_path / "model"),
            "--latent-dim",
            "8",
            "--epochs",
            "8",
            "--image-size",
            "16",
            "--variational",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "reconstruction error" in result.output and "for the mean image" in result.output
    for picture in ("loss.png", "reconstructions.png", "samples.png"):
        assert (tmp_path / "model" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["losses"][-1] < config["losses"][0]
    spec = f"ae:{tmp_path / 'model'}"
    assert runner.invoke(app, ["create", "ae", "--encoder", spec]).exit_code == 0
    assert runner.invoke(app, ["add", "ae", str(folder)]).exit_code == 0
    col = ls.open("ae")
    assert col.dim == 8 and col.count() == 301
    assert col.search(folder / "d007.png", k=1)[0].id == "d007.png"
    steps: list[tuple[int, int]] = []
    flagged = col.outliers(
        "reconstruction", contamination=0.01, progress=lambda done, total: steps.append((done, total))
    )
    assert flagged[0].id == "zz_photo.png"
    assert steps[-1] == (301, 301) and len(steps) > 1 and all(t == 301 for _, t in steps)  # real progress, per batch
    checked = col.check([folder / "zz_photo.png", folder / "d001.png"], method="reconstruction", fpr=0.01)
    assert [r.flagged for r in checked] == [True, False]
    col.close()
    cli = json.loads(
        runner.invoke(app, ["outliers", "ae", "--method", "reconstruction", "--top", "1", "--json"]).stdout
    )
    assert cli[0]["id"] == "zz_photo.png"
    bad = runner.invoke(app, ["outliers", "ae", "--method", "reconstruction", "--home", str(tmp_path / "none")])
    assert bad.exit_code == 1
    model = str(tmp_path / "model")
    strip = runner.invoke(
        app,
        ["ae-interpolate", model, str(folder / "d001.png"), str(folder / "d002.png"), "--out", str(tmp_path / "s.png")],
    )
    assert strip.exit_code == 0 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    grid = runner.invoke(app, ["ae-sample", model, "-n", "8", "--out", str(tmp_path / "g.png")])
    assert grid.exit_code == 0 and (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    missing = runner.invoke(app, ["ae-sample", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert missing.exit_code == 1 and "error:" in missing.stderr


def test_image_map_shows_thumbnails_on_hover(pictures, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from latentsearch.analysis.plots import write_map

    from .browser import browser

    col, _ = pictures
    out = write_map(col, col.project("pca"), tmp_path / "pictures.html")
    driver = browser()
    try:
        driver.get(out.as_uri())
        points = driver.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace path.point")
        assert len(points) == col.count()
        ActionChains(driver).move_to_element(points[0]).perform()
        shown = driver.execute_script(
            "const p = document.getElementById('latentsearch-thumbnail');"
            "const h = document.querySelector('.hoverlayer .hovertext');"
            "return [p.style.display, p.src.slice(0, 23), p.naturalWidth, h ? h.textContent : ''];"
        )
        assert shown[0] == "block" and shown[1] == "data:image/jpeg;base64," and shown[2] > 0
        assert any(it.id in shown[3] for it in col.items())
    finally:
        driver.quit()


def test_cli_align(pictures, tmp_path):
    col, _ = pictures
    runner = CliRunner()
    home = str(col.path.parent)
    result = runner.invoke(
        app,
        [
            "align",
            "pictures",
            "--out",
            str(tmp_path / "align"),
            "--into",
            "pictures-text",
            "--caption-field",
            "suffix",
            "--epochs",
            "5",
            "--home",
            home,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "aligned 19 images" in result.stdout
    hits = json.loads(
        runner.invoke(app, ["search", "pictures-text", ".png", "-k", "3", "--json", "--home", home]).stdout
    )
    assert len(hits) == 3
    bad = runner.invoke(
        app,
        ["align", "pictures", "--out", str(tmp_path / "x"), "--into", "x", "--caption-field", "nope", "--home", home],
    )
    assert bad.exit_code == 1 and "no item of 'pictures' has metadata field 'nope'" in bad.stderr
