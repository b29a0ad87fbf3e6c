"""Training an autoencoder on a folder of images, and the pictures that come with it.

:func:`train_autoencoder_from_folder` is the whole job in one call (what ``latentsearch
train-autoencoder`` does, plus, with ``into``, a collection of the images encoded by the new model);
:func:`load_training_images` and :func:`train_and_save` are its two steps, for callers that report
between them (the CLI says which files it skipped before training starts).

torch is imported only when a function runs, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from latentsearch.collection import Collection
    from latentsearch.connection import Connection
    from latentsearch.encoders.autoencoder import AutoencoderConfig

EpochFn = Callable[[int, int], None]  # progress(epoch, epochs), epochs counted from 1
BASELINE_MARGIN = 0.1  # a model must beat the mean image's error by 10% to count as having learned
PREVIEW_IMAGES = 8  # training images shown above their reconstructions in reconstructions.png
SAMPLE_IMAGES = 32  # new images drawn from a VAE's prior into samples.png


@dataclass
class TrainingImages:
    """Images read for training: the ``array`` (n, channels, size, size) in [0, 1], the ``kept`` paths
    it holds, the ``skipped`` files with the reason each could not be used, and the model's ``config``."""

    array: np.ndarray
    kept: list[str]
    skipped: list[tuple[str, str]]
    config: AutoencoderConfig


@dataclass
class TrainedAutoencoder:
    """A trained model saved in ``folder`` (use it as encoder ``ae:FOLDER``): each epoch's mean
    ``losses``, how many ``images`` it learned from, the files ``skipped``, the ``pictures`` written
    next to it (loss.png, reconstructions.png, and samples.png for a VAE), and the ``collection``
    built from the images when one was asked for."""

    folder: Path
    losses: list[float]
    images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pictures: list[str] = field(default_factory=list)
    collection: Collection | None = None
    error: float = float("nan")  # mean per-pixel squared reconstruction error on the training images
    baseline_error: float = float("nan")  # the same error for the mean image drawn for every input

    @property
    def spec(self) -> str:
        """The encoder spec of the model: ``ae:FOLDER``."""
        return f"ae:{self.folder}"

    @property
    def beats_baseline(self) -> bool:
        """Whether the model reconstructs its images better than the trivial baseline (by more than
        :data:`BASELINE_MARGIN`): a model that does not has learned nothing its latents can show."""
        return self.error < self.baseline_error * (1 - BASELINE_MARGIN)

    def verdict(self) -> str:
        """One line: the reconstruction error beside the mean-image baseline, and what to do when the
        model is not better than it."""
        line = f"reconstruction error {self.error:.4f} against {self.baseline_error:.4f} for the mean image"
        if self.beats_baseline:
            return f"{line} ({self.baseline_error / max(self.error, 1e-12):.1f}x better)"
        return (
            f"warning: {line}: the model is no better than drawing the average image, so its latents, "
            f"interpolations and samples carry little; train longer (--epochs, {len(self.losses)} now) "
            f"or on more images ({self.images:,} now)"
        )


def load_training_images(
    images: str | os.PathLike[str],
    *,
    latent_dim: int = 16,
    variational: bool = False,
    image_size: int = 32,
    rgb: bool = False,
) -> TrainingImages:
    """Read a folder of images (recursive) for a model of that shape: greyscale unless ``rgb``,
    resized to ``image_size`` (a multiple of 4). Unreadable and non-image files are listed in
    ``skipped``; a bad shape raises :class:`~latentsearch.errors.InvalidInputError`."""
    from latentsearch.encoders import autoencoder as ae

    config = ae.AutoencoderConfig(
        image_size=image_size, channels=3 if rgb else 1, latent_dim=latent_dim, variational=variational
    )
    array, kept, skipped = ae.load_images(images, config)
    return TrainingImages(array, kept, skipped, config)


def train_and_save(
    training: TrainingImages,
    out: str | os.PathLike[str],
    *,
    epochs: int = 20,
    seed: int = 0,
    progress: EpochFn | None = None,
) -> TrainedAutoencoder:
    """Train on ``training`` (from :func:`load_training_images`), save the model in ``out``
    (model.safetensors + config.json) with pictures of how it did: loss.png (the loss per epoch),
    reconstructions.png (some training images above their reconstructions) and, for a VAE,
    samples.png (new images from the prior). ``progress(epoch, epochs)`` follows the training. The
    result holds the model's reconstruction error on the images and the mean image's
    (:meth:`TrainedAutoencoder.verdict` says whether it learned anything)."""
    import numpy as np

    from latentsearch.encoders import autoencoder as ae

    config, array = training.config, training.array

    def each_epoch(epoch: int, total: int, loss: float) -> None:
        if progress is not None:
            progress(epoch, total)

    model, losses = ae.train_autoencoder(array, config, epochs=epochs, seed=seed, progress=each_epoch)
    folder = ae.save_autoencoder(model, config, out, losses=losses)
    ae.save_loss_curve(losses, folder / "loss.png")
    encoder = ae.AutoencoderEncoder(folder)
    preview = array[:PREVIEW_IMAGES]
    ae.save_grid(np.concatenate([preview, encoder.reconstruct(preview)]), folder / "reconstructions.png", cols=8)
    pictures = ["loss.png", "reconstructions.png"]
    if config.variational:
        ae.save_grid(encoder.sample(SAMPLE_IMAGES, seed=seed), folder / "samples.png")
        pictures.append("samples.png")
    return TrainedAutoencoder(
        folder,
        losses,
        len(training.kept),
        list(training.skipped),
        pictures,
        error=float(np.mean(encoder.reconstruction_error(array))),
        baseline_error=ae.mean_image_error(array),
    )


def train_autoencoder_from_folder(
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    latent_dim: int = 16,
    variational: bool = False,
    epochs: int = 20,
    image_size: int = 32,
    rgb: bool = False,
    seed: int = 0,
    progress: EpochFn | None = None,
    into: str | None = None,
    db: Connection | None = None,
    index: str = "auto",
) -> TrainedAutoencoder:
    """Train a convolutional autoencoder (a VAE with ``variational``) on a folder of images and save
    it in ``out`` with its pictures (see :func:`train_and_save`).

    With ``into``, also create that collection (in ``db``, default: the default connection) with
    encoder ``ae:OUT`` and the FAISS ``index``, and add the folder's images to it; it is returned
    open in ``collection``, ready for searches and ``outliers("reconstruction")``.
    """
    training = load_training_images(
        images, latent_dim=latent_dim, variational=variational, image_size=image_size, rgb=rgb
    )
    trained = train_and_save(training, out, epochs=epochs, seed=seed, progress=progress)
    if into is not None:
        trained.collection = _collect(images, trained, into, db, index)
    return trained


def _collect(
    images: str | os.PathLike[str], trained: TrainedAutoencoder, into: str, db: Connection | None, index: str
) -> Collection:
    """A new collection ``into`` of the folder's images, encoded by the trained model."""
    from latentsearch.connection import connect
    from latentsearch.io.ingest import ingest, read_input

    records = read_input(images, images=True)  # read first: a bad folder leaves no collection behind
    db = db or connect()
    col = db.create(into, encoder=f"ae:{trained.folder.resolve()}", index=index)
    try:
        ingest(col, records)
    except BaseException:
        col.close()
        db.drop(into)  # all or nothing: no half-filled collection under the name
        raise
    return col


def interpolation_strip(
    model: str | os.PathLike[str],
    start: str | os.PathLike[str],
    end: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    steps: int = 8,
) -> Path:
    """Decode ``steps`` evenly spaced points between two images' latents (ends included) into a PNG
    strip at ``out``; returns the path written."""
    from latentsearch.encoders import autoencoder as ae

    encoder = ae.AutoencoderEncoder(model)
    return ae.save_strip(encoder.interpolate(Path(start), Path(end), steps=steps), out)


def sample_grid(model: str | os.PathLike[str], out: str | os.PathLike[str], *, n: int = 32, seed: int = 0) -> Path:
    """Decode ``n`` random latents from the prior N(0, I) (best with a VAE) into a PNG grid at
    ``out``; returns the path written."""
    from latentsearch.encoders import autoencoder as ae

    return ae.save_grid(ae.AutoencoderEncoder(model).sample(n, seed=seed), out)
