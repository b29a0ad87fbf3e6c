"""The convolutional (variational) autoencoder, trained on real images: scikit-learn's handwritten digits
(8x8, upscaled to 16x16) and patches of its two bundled photos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from latentsearch.encoders import Encoder
from latentsearch.encoders.autoencoder import (
    AutoencoderConfig,
    AutoencoderEncoder,
    ConvAutoencoder,
    images_to_array,
    load_autoencoder,
    load_images,
    save_autoencoder,
    save_grid,
    save_loss_curve,
    save_strip,
    train_autoencoder,
)
from latentsearch.errors import InvalidInputError
from latentsearch.fileio import file_sha256

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_TRAIN = 1000  # digits used for training; the rest are held out


def small_config(**changes) -> AutoencoderConfig:
    """A model small enough to train in about a second on two cores."""
    return AutoencoderConfig(**{"image_size": 16, "channels": 1, "latent_dim": 8, "base_filters": 8, **changes})


@pytest.fixture(scope="module")
def digits() -> list[Image.Image]:
    """The 1797 scikit-learn digits as 8x8 grayscale PIL images (white strokes on black)."""
    return [Image.fromarray(np.rint(im * 255 / 16).astype(np.uint8), "L") for im in load_digits().images]


@pytest.fixture(scope="module")
def digit_array(digits) -> np.ndarray:
    return images_to_array(digits, small_config())


def photo_patches(size: int = 32, mode: str = "L") -> list[Image.Image]:
    """Non-overlapping square patches cut from the two bundled photos (china and flower), every other one."""
    patches = []
    for photo in load_sample_images().images:
        image = Image.fromarray(photo).convert(mode)
        for top in range(0, image.height - size + 1, size * 2):
            for left in range(0, image.width - size + 1, size * 2):
                patches.append(image.crop((left, top, left + size, top + size)))
    return patches


def train_and_save(tmp_path_factory, digit_array, **config_changes):
    config = small_config(**config_changes)
    model, losses = train_autoencoder(digit_array[:N_TRAIN], config, epochs=8, batch_size=64, lr=3e-3, seed=0)
    folder = save_autoencoder(model, config, tmp_path_factory.mktemp("ae") / "model", losses=losses)
    return model, losses, folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory, digit_array):
    return train_and_save(tmp_path_factory, digit_array)


@pytest.fixture(scope="module")
def vae(tmp_path_factory, digit_array):
    return train_and_save(tmp_path_factory, digit_array, variational=True)


# --------------------------------------------------------------------------------------------- model


def test_config_round_trips_and_checks_its_fields():
    config = AutoencoderConfig(image_size=24, channels=3, latent_dim=4, variational=True, base_filters=8)
    assert AutoencoderConfig.from_dict({**config.to_dict(), "format": "x", "losses": [1.0]}) == config
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    with pytest.raises(InvalidInputError, match=r"image_size 30 must be a multiple of 4.*28 or 32"):
        AutoencoderConfig(image_size=30)
    with pytest.raises(InvalidInputError, match="channels must be 1"):
        AutoencoderConfig(channels=2)
    with pytest.raises(InvalidInputError, match="latent_dim must be an integer"):
        AutoencoderConfig(latent_dim="16")
    config = AutoencoderConfig()
    config.image_size = 18  # changed after construction: the model checks again
    with pytest.raises(InvalidInputError, match="multiple of 4"):
        ConvAutoencoder(config)


def test_model_shapes_and_output_range():
    model = ConvAutoencoder(AutoencoderConfig(image_size=12, channels=3, latent_dim=5, variational=True)).eval()
    x = torch.rand(4, 3, 12, 12)
    recon, mu, logvar = model(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (4, 5)
    assert float(recon.detach().min()) >= 0.0 and float(recon.detach().max()) <= 1.0
    assert torch.equal(model.encode(x), mu)  # encode is the mean, and eval mode does not sample
    assert model.decode(mu).shape == x.shape
    plain_model = ConvAutoencoder(AutoencoderConfig(image_size=12, latent_dim=5))
    assert plain_model(torch.rand(2, 1, 12, 12))[2] is None


def test_reconstruction_loss_falls_during_training(plain, digit_array):
    model, losses, _ = plain
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0], losses
    held = torch.from_numpy(digit_array[N_TRAIN:])
    with torch.no_grad():
        held_mse = float(((model.decode(model.encode(held)) - held) ** 2).mean())
    mean_image_mse = float(((digit_array[N_TRAIN:] - digit_array[:N_TRAIN].mean(0)) ** 2).mean())
    assert held_mse < 0.75 * mean_image_mse  # it learnt more than the average digit
    assert not model.training


def test_training_is_deterministic_and_reports_progress(digit_array):
    config = small_config(latent_dim=4)
    calls = []
    rng_before = torch.get_rng_state()
    first, losses = train_autoencoder(
        digit_array[:200], config, epochs=3, seed=7, progress=lambda *args: calls.append(args)
    )
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random state is left alone
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)] and [c[2] for c in calls] == losses
    second, again = train_autoencoder(digit_array[:200], config, epochs=3, seed=7)
    assert again == losses
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    _, other = train_autoencoder(digit_array[:200], config, epochs=3, seed=8)
    assert other != losses


def test_rgb_photo_patches_train(tmp_path):
    config = AutoencoderConfig(image_size=16, channels=3, latent_dim=8, base_filters=8)
    patches = images_to_array(photo_patches(mode="RGB"), config)
    assert patches.shape[1:] == (3, 16, 16) and len(patches) > 100
    _, losses = train_autoencoder(patches, config, epochs=8, batch_size=16, lr=3e-3)
    assert losses[-1] < 0.7 * losses[0], losses


# ------------------------------------------------------------------------------------ save and load


def test_save_load_round_trip_gives_identical_encodings(plain, digit_array):
    model, losses, folder = plain
    loaded, config = load_autoencoder(folder)
    assert config == small_config()
    x = torch.from_numpy(digit_array[N_TRAIN : N_TRAIN + 50])
    with torch.no_grad():
        assert torch.equal(model.encode(x), loaded.encode(x))
        assert torch.equal(model.decode(model.encode(x)), loaded.decode(loaded.encode(x)))
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "latentsearch-autoencoder" and meta["version"] == 1
    assert meta["losses"] == losses and meta["latent_dim"] == 8
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no temporary files


def test_loading_bad_folders_is_a_clear_error(plain, tmp_path):
    _, _, folder = plain
    with pytest.raises(InvalidInputError, match="not a latentsearch autoencoder \\(no config.json\\)"):
        load_autoencoder(tmp_path)
    with pytest.raises(InvalidInputError, match="is not a folder"):
        load_autoencoder(tmp_path / "missing")

    def broken_copy(name: str):
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        return copy

    garbage = broken_copy("garbage")
    (garbage / "model.safetensors").write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(InvalidInputError, match="damaged or not a safetensors file"):
        load_autoencoder(garbage)

    truncated = broken_copy("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="damaged"):
        load_autoencoder(truncated)

    mismatched = broken_copy("mismatched")
    meta = json.loads((mismatched / "config.json").read_text())
    (mismatched / "config.json").write_text(json.dumps({**meta, "latent_dim": 4}))
    with pytest.raises(InvalidInputError, match="does not match config.json"):
        load_autoencoder(mismatched)

    (mismatched / "config.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_autoencoder(mismatched)
    (mismatched / "config.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(InvalidInputError, match="not a latentsearch autoencoder config"):
        load_autoencoder(mismatched)
    (mismatched / "config.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(InvalidInputError, match="upgrade latentsearch"):
        load_autoencoder(mismatched)
    (mismatched / "config.json").write_text(json.dumps({**meta, "image_size": 30}))
    with pytest.raises(InvalidInputError, match="multiple of 4"):
        load_autoencoder(mismatched)

    no_weights = broken_copy("no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(InvalidInputError, match="no model.safetensors"):
        load_autoencoder(no_weights)
    with pytest.raises(InvalidInputError, match="no config.json"):
        AutoencoderEncoder(tmp_path)


# ------------------------------------------------------------------------------------------- encoder


def test_encoder_protocol_paths_and_pil_images_agree(plain, digits, tmp_path):
    _, _, folder = plain
    encoder = AutoencoderEncoder(folder)
    assert isinstance(encoder, Encoder)
    assert encoder.name == f"ae:{folder.resolve()}"
    assert (encoder.modality, encoder.normalize, encoder.dim) == ("image", False, 8)
    assert encoder.weights_hash == file_sha256(folder / "model.safetensors")
    assert AutoencoderEncoder(folder).weights_hash == encoder.weights_hash  # stable across loads

    held = digits[N_TRAIN : N_TRAIN + 20]
    paths = []
    for i, image in enumerate(held):  # saved at their native 8x8 size; resized on reading, like the PIL images
        paths.append(tmp_path / f"digit-{i}.png")
        image.save(paths[-1])
    from_paths = encoder.encode([str(p) if i % 2 else p for i, p in enumerate(paths)])
    from_pil = encoder.encode(held)
    assert from_paths.shape == (20, 8) and from_paths.dtype == np.float32
    np.testing.assert_allclose(from_paths, from_pil, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(held, batch_size=3), from_pil, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(images_to_array(held, encoder.config)), from_pil, atol=1e-6)
    assert len({tuple(np.round(v, 4)) for v in from_pil}) == 20  # different digits, different latents
    assert encoder.encode([]).shape == (0, 8)

    bad = tmp_path / "broken.png"
    bad.write_text("hello, I am text")
    with pytest.raises(InvalidInputError, match="cannot read image .*broken.png: not an image"):
        encoder.encode([paths[0], bad])
    with pytest.raises(InvalidInputError, match="missing.png: no such file"):
        encoder.encode([tmp_path / "missing.png"])
    with pytest.raises(InvalidInputError, match="input #1 is a int"):
        encoder.encode([paths[0], 3])
    with pytest.raises(InvalidInputError, match=r"latents must have shape \(n, 8\)"):
        encoder.decode(np.zeros((2, 5)))


def test_vae_trains_samples_and_encodes_deterministically(vae, digits):
    model, losses, folder = vae
    assert model.to_logvar is not None
    assert losses[-1] < 0.6 * losses[0], losses
    encoder = AutoencoderEncoder(folder)
    samples = encoder.sample(12, seed=1)
    assert samples.shape == (12, 1, 16, 16) and samples.dtype == np.float32
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    np.testing.assert_array_equal(samples, encoder.sample(12, seed=1))
    assert not np.allclose(samples, encoder.sample(12, seed=2))
    assert samples.std(axis=0).mean() > 0.01  # different latents decode to different images
    held = digits[N_TRAIN : N_TRAIN + 10]
    np.testing.assert_array_equal(encoder.encode(held), encoder.encode(held))  # the mean, no sampling
    assert encoder.sample(0).shape == (0, 1, 16, 16)


def test_interpolation_ends_at_the_reconstructions_of_its_inputs(plain, digits, tmp_path):
    _, _, folder = plain
    encoder = AutoencoderEncoder(folder)
    a, b = digits[N_TRAIN], digits[N_TRAIN + 1]  # a 0 and a 1... or whatever the held-out set starts with
    a_path = tmp_path / "a.png"
    a.save(a_path)
    path = encoder.interpolate(a_path, b, steps=6)
    assert path.shape == (6, 1, 16, 16)
    recon = encoder.reconstruct([a, b])
    np.testing.assert_allclose(path[0], recon[0], atol=1e-5)
    np.testing.assert_allclose(path[-1], recon[1], atol=1e-5)
    to_a = [float(np.abs(step - recon[0]).mean()) for step in path]
    assert to_a[0] < to_a[2] < to_a[-1]  # it moves away from a towards b
    with pytest.raises(InvalidInputError, match="steps must be"):
        encoder.interpolate(a, b, steps=1)
    with pytest.raises(InvalidInputError, match="a must be one image"):
        encoder.interpolate([a], b)


def test_reconstruction_error_is_higher_out_of_distribution(plain, digits, digit_array):
    _, _, folder = plain
    encoder = AutoencoderEncoder(folder)
    held = encoder.reconstruction_error(digits[N_TRAIN:])
    assert held.shape == (len(digits) - N_TRAIN,) and held.dtype == np.float32
    np.testing.assert_allclose(held, encoder.reconstruction_error(digit_array[N_TRAIN:]), atol=1e-6)
    noise = np.random.default_rng(0).random((50, 1, 16, 16)).astype(np.float32)
    photos = photo_patches()
    noise_error = encoder.reconstruction_error(noise)
    photo_error = encoder.reconstruction_error(photos)
    assert noise_error.mean() > 3 * held.mean()
    assert photo_error.mean() > 1.5 * held.mean()
    assert np.median(photo_error) > np.median(held)


# ------------------------------------------------------------------------------------- load_images


def test_load_images_reads_a_folder_and_reports_what_it_skips(digits, tmp_path):
    config = small_config()
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    digits[0].save(tmp_path / "a.png")
    digits[1].convert("RGB").save(tmp_path / "sub" / "b.jpg", quality=95)
    digits[2].save(tmp_path / "sub" / "deeper" / "c.bmp")
    white, black = Image.new("L", (8, 8), 255), Image.new("L", (8, 8), 0)
    white.save(tmp_path / "d.gif", save_all=True, append_images=[black])  # first frame is the one read
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    transparent.save(tmp_path / "e.png")  # transparency is laid on white
    (tmp_path / "fake.png").write_bytes(b"just some text, not a PNG")
    (tmp_path / "notes.txt").write_text("a note")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")

    images, kept, skipped = load_images(tmp_path, config)
    names = [p.rsplit("/", 1)[-1] for p in kept]
    assert names == ["a.png", "d.gif", "e.png", "b.jpg", "c.bmp"]
    assert images.shape == (5, 1, 16, 16) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_allclose(images[0], images_to_array([digits[0]], config)[0], atol=1e-6)
    assert images[1].min() > 0.99 and images[2].min() > 0.99  # GIF frame 1 is white; transparent is white
    reasons = {p.rsplit("/", 1)[-1]: why for p, why in skipped}
    assert set(reasons) == {"fake.png", "notes.txt"}
    assert "not an image" in reasons["fake.png"] and "not an image file type (.txt)" in reasons["notes.txt"]

    listed, kept, skipped = load_images([tmp_path / "a.png", str(tmp_path / "gone.png"), tmp_path / "fake.png"], config)
    assert listed.shape == (1, 1, 16, 16) and kept == [str(tmp_path / "a.png")]
    assert [why for _, why in skipped] == ["no such file", "not an image (PIL cannot identify the file)"]

    with pytest.raises(InvalidInputError, match="does not exist"):
        load_images(tmp_path / "nowhere", config)
    with pytest.raises(InvalidInputError, match="path #0 is a int"):
        load_images([1, 2], config)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_images(empty, config)[0].shape == (0, 1, 16, 16)


def test_load_images_resizes_the_short_side_and_crops_the_centre(tmp_path):
    config = AutoencoderConfig(image_size=16, channels=3)
    for i, patch in enumerate(photo_patches(size=48, mode="RGB")[:4]):
        patch.resize((96, 48)).save(tmp_path / f"wide-{i}.jpg", quality=95)  # landscape photos
    images, kept, skipped = load_images(tmp_path, config)
    assert images.shape == (4, 3, 16, 16) and len(kept) == 4 and not skipped
    # A wide image whose outer quarters are black: the centre crop keeps only the white middle.
    banded = np.zeros((32, 64), dtype=np.uint8)
    banded[:, 16:48] = 255
    Image.fromarray(banded, "L").save(tmp_path / "banded.png")
    centre = load_images([tmp_path / "banded.png"], small_config())[0]
    assert centre.min() > 0.9  # squashing instead of cropping would bring in black columns


# ---------------------------------------------------------------------------------------- bad inputs


def test_training_refuses_bad_inputs(digit_array):
    config = small_config()
    with pytest.raises(InvalidInputError, match="epochs must be a whole number >= 1"):
        train_autoencoder(digit_array[:10], config, epochs=0)
    with pytest.raises(InvalidInputError, match=r"expects \(n, 1, 32, 32\).*load_images"):
        train_autoencoder(digit_array[:10], AutoencoderConfig(image_size=32))
    with pytest.raises(InvalidInputError, match="at least 2 images"):
        train_autoencoder(digit_array[:1], config)
    with pytest.raises(InvalidInputError, match="divide by 255"):
        train_autoencoder(digit_array[:10] * 255, config)
    with pytest.raises(InvalidInputError, match="NaN"):
        train_autoencoder(np.full((4, 1, 16, 16), np.nan, dtype=np.float32), config)
    with pytest.raises(InvalidInputError, match="numpy array"):
        train_autoencoder([[0.0]], config)
    with pytest.raises(InvalidInputError, match="lr must be a positive number"):
        train_autoencoder(digit_array[:10], config, lr=0)
    with pytest.raises(InvalidInputError, match="batch_size"):
        train_autoencoder(digit_array[:10], config, batch_size=0)
    model = ConvAutoencoder(config)
    with pytest.raises(InvalidInputError, match="save it with the config it was trained with"):
        save_autoencoder(model, small_config(latent_dim=3), "unused-folder")


# ------------------------------------------------------------------------------------------ pictures


def test_picture_writers_produce_png_files(plain, digit_array, tmp_path):
    _, losses, _ = plain
    strip = save_strip(digit_array[:5], tmp_path / "strip.png")
    assert strip.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(strip) as image:
        # 16-pixel tiles are enlarged 4x to 64, with 2-pixel gaps around them.
        assert image.size == (5 * 64 + 6 * 2, 64 + 2 * 2)
        tile = np.asarray(image.convert("L"))[2:66, 2:66]
    np.testing.assert_array_equal(tile[::4, ::4], np.rint(digit_array[0, 0] * 255).astype(np.uint8))

    rgb = np.random.default_rng(0).random((10, 3, 32, 32)).astype(np.float32)
    grid = save_grid(rgb, tmp_path / "pics" / "grid.png", cols=4)
    assert grid.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(grid) as image:
        assert image.size == (4 * 64 + 5 * 2, 3 * 64 + 4 * 2) and image.mode == "RGB"

    curve = save_loss_curve(losses, tmp_path / "loss.png")
    assert curve.read_bytes().startswith(PNG_SIGNATURE) and curve.stat().st_size > 5_000
    with Image.open(curve) as image:
        assert image.size == (600, 400)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "pics", "strip.png"]

    with pytest.raises(InvalidInputError, match="with n >= 1"):
        save_grid(np.zeros((0, 1, 8, 8)), tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="losses must be a non-empty list"):
        save_loss_curve([], tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="cols must be"):
        save_grid(rgb, tmp_path / "x.png", cols=0)
