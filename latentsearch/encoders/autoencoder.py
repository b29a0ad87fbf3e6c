"""A convolutional autoencoder (or variational autoencoder) that learns a latent space from your own images.

Train with :func:`train_autoencoder` on an array from :func:`load_images`, save with :func:`save_autoencoder`
(``model.safetensors`` + ``config.json``; never pickle), and use the folder as the ``ae:PATH`` encoder
(:class:`AutoencoderEncoder`), which can also decode, reconstruct, interpolate and sample. The per-image
reconstruction error is an outlier score: images unlike the training set reconstruct badly.

This module imports torch at module level; the rest of latentsearch imports it lazily.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from latentsearch.encoders.image import (  # the same file types and size limit as image folders
    IMAGE_SUFFIXES,
    MAX_PIXELS,
)
from latentsearch.errors import InvalidInputError
from latentsearch.fileio import file_sha256, fsync_replace
from latentsearch.limits import MAX_GENERATED, MAX_IMAGE_SIZE, MAX_STEPS, check_int

FORMAT = "latentsearch-autoencoder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_LOGVAR_CLAMP = 10.0  # keeps exp(logvar) finite early in training
_TILE_MIN = 64  # picture writers enlarge tiny images (nearest neighbour) to at least this many pixels
_PAD = 2  # pixels between tiles in strips and grids


# --------------------------------------------------------------------------------------------- config


@dataclass
class AutoencoderConfig:
    """Shape of an autoencoder: square ``image_size`` (divisible by 4), ``channels`` 1 (grey) or 3 (RGB)."""

    image_size: int = 32
    channels: int = 1
    latent_dim: int = 16
    variational: bool = False
    base_filters: int = 32

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` unless every field is usable."""
        for name in ("image_size", "channels", "latent_dim", "base_filters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InvalidInputError(f"autoencoder {name} must be an integer, got {value!r}")
        if not isinstance(self.variational, (bool, np.bool_)):
            raise InvalidInputError(f"autoencoder variational must be true or false, got {self.variational!r}")
        if self.image_size < 4 or self.image_size % 4:
            lower, upper = max(4, self.image_size // 4 * 4), (self.image_size // 4 + 1) * 4
            raise InvalidInputError(
                f"image_size {self.image_size} must be a multiple of 4 (the encoder halves it twice): "
                f"use e.g. {lower} or {upper}"
            )
        if self.image_size > MAX_IMAGE_SIZE:
            raise InvalidInputError(
                f"image_size {self.image_size} is too large for this small model: use {MAX_IMAGE_SIZE} or less"
            )
        if self.channels not in (1, 3):
            raise InvalidInputError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if not 1 <= self.latent_dim <= 4096:
            raise InvalidInputError(f"latent_dim must be between 1 and 4096, got {self.latent_dim}")
        if not 1 <= self.base_filters <= 1024:
            raise InvalidInputError(f"base_filters must be between 1 and 1024, got {self.base_filters}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image: ``(channels, image_size, image_size)``."""
        return (self.channels, self.image_size, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        out = asdict(self)
        out["variational"] = bool(out["variational"])
        return {k: (int(v) if isinstance(v, np.integer) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        """Build from a dict such as ``config.json``; other keys (format, version, losses) are ignored."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"autoencoder config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------------------------- model


class ConvAutoencoder(nn.Module):
    """Two strided convolutions down to a latent vector and two transposed convolutions back.

    The encoder maps ``(n, channels, s, s)`` to ``(n, latent_dim)`` (the mean, for a VAE); the decoder
    maps latents back to images in [0, 1] (sigmoid output).
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        f, c, side = config.base_filters, config.channels, config.image_size // 4
        flat = 2 * f * side * side
        self.encoder = nn.Sequential(
            nn.Conv2d(c, f, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(f, 2 * f, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.to_mu = nn.Linear(flat, config.latent_dim)
        self.to_logvar = nn.Linear(flat, config.latent_dim) if config.variational else None
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, flat),
            nn.ReLU(),
            nn.Unflatten(1, (2 * f, side, side)),
            nn.ConvTranspose2d(2 * f, f, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(f, c, kernel_size=4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self.encoder(x)
        mu = self.to_mu(hidden)
        if self.to_logvar is None:
            return mu, None
        return mu, self.to_logvar(hidden).clamp(-_LOGVAR_CLAMP, _LOGVAR_CLAMP)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent vectors ``(n, latent_dim)`` of images ``(n, channels, s, s)``; the mean for a VAE."""
        return self._heads(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(n, channels, s, s)`` in [0, 1] from latents ``(n, latent_dim)``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(reconstruction, mu, logvar)``; a VAE samples ``z = mu + sigma * eps`` in training mode only,
        a plain autoencoder returns ``logvar=None``."""
        mu, logvar = self._heads(x)
        z = mu
        if logvar is not None and self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar


# --------------------------------------------------------------------------------------------- images


class _UnreadableImage(Exception):
    """A file that is not a usable image; carries the one-line reason."""


def _fail(reason: str) -> NoReturn:
    raise _UnreadableImage(reason)


def _to_mode(image: Any, mode: str) -> Any:
    """``image`` as ``mode`` (L or RGB): high-bit-depth grey scaled down, transparency laid on white."""
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # PIL's own convert clips 16-bit values at 255, which would turn most 16-bit images white.
        pixels = np.asarray(image, dtype=np.float32)
        top = float(pixels.max()) if pixels.size else 0.0
        scale = 1.0 if image.mode == "F" and top <= 1.0 else 65535.0 if top > 255 else 255.0
        image = Image.fromarray(np.clip(np.rint(pixels / scale * 255.0), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert(mode)


def _pil_to_array(image: Any, config: AutoencoderConfig) -> np.ndarray:
    from PIL import Image, ImageOps

    image = _to_mode(image, "L" if config.channels == 1 else "RGB")
    size = config.image_size
    # ImageOps.fit crops to a square around the centre, then resizes: the same as short side + centre crop.
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[None] if config.channels == 1 else pixels.transpose(2, 0, 1)


def _read_image(path: Path, config: AutoencoderConfig) -> np.ndarray:
    """One image file as ``(channels, s, s)`` float32; raises :class:`_UnreadableImage` with a reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    _fail(f"{image.width}x{image.height} pixels is over the {MAX_PIXELS:,} limit")
                image.seek(0)  # first frame of a GIF or animated WebP
                image.load()
                # Phone photos are stored sideways with an EXIF rotation; damaged EXIF keeps the pixels as stored.
                with contextlib.suppress(Exception):
                    image = ImageOps.exif_transpose(image)
                return _pil_to_array(image, config)
    except _UnreadableImage:
        raise
    except FileNotFoundError:
        _fail("no such file")
    except IsADirectoryError:
        _fail("is a folder, not a file")
    except PermissionError:
        _fail("permission denied")
    except UnidentifiedImageError:
        _fail("not an image (PIL cannot identify the file)")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        _fail(f"image too large ({exc})")
    except Exception as exc:  # decoders raise OSError, ValueError, SyntaxError, struct.error...
        text = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        _fail(f"damaged or unsupported image ({text})")


def _scan_folder(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    candidates, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # hidden files and folders (.DS_Store, .git) are not the user's images
        if path.suffix.lower() in IMAGE_SUFFIXES:
            candidates.append(path)
        else:
            skipped.append((str(path), f"not an image file type ({path.suffix or 'no extension'})"))
    return candidates, skipped


def load_images(
    paths_or_folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], config: AutoencoderConfig
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Read images from a folder (recursive) or a list of paths, sized and coloured for ``config``.

    A folder contributes its ``.jpg .jpeg .png .webp .gif .bmp`` files (GIFs: first frame) in sorted
    order; other files are reported as skipped, hidden ones (names starting with a dot) are ignored.
    Images are converted to grayscale or RGB (transparency on white), the short side is resized to
    ``image_size`` and the centre cropped.

    Returns ``(images, kept_paths, skipped)``: float32 ``(n, channels, s, s)`` in [0, 1], the paths of
    those images, and ``(path, reason)`` for every file that could not be used. An empty result is not
    an error here; :func:`train_autoencoder` refuses fewer than 2 images.
    """
    config.validate()
    if isinstance(paths_or_folder, (str, os.PathLike)):
        root = Path(paths_or_folder).expanduser()
        if root.is_dir():
            candidates, skipped = _scan_folder(root)
        elif root.is_file():
            candidates, skipped = [root], []
        else:
            raise InvalidInputError(f"{root} does not exist: give a folder of images or a list of image files")
    else:
        try:
            items = list(paths_or_folder)
        except TypeError:
            raise InvalidInputError(
                f"expected a folder or a list of image paths, got {type(paths_or_folder).__name__}"
            ) from None
        for i, item in enumerate(items):
            if not isinstance(item, (str, os.PathLike)):
                raise InvalidInputError(f"path #{i} is a {type(item).__name__}, not a file path")
        candidates, skipped = [Path(p).expanduser() for p in items], []
    arrays, kept = [], []
    for path in candidates:
        try:
            arrays.append(_read_image(path, config))
        except _UnreadableImage as exc:
            skipped.append((str(path), str(exc)))
        else:
            kept.append(str(path))
    images = np.stack(arrays) if arrays else np.empty((0, *config.shape), dtype=np.float32)
    return images.astype(np.float32, copy=False), kept, skipped


def images_to_array(pil_images: Sequence[Any], config: AutoencoderConfig) -> np.ndarray:
    """Already opened PIL images as float32 ``(n, channels, s, s)`` in [0, 1], prepared like :func:`load_images`."""
    from PIL import Image

    config.validate()
    arrays = []
    for i, image in enumerate(pil_images):
        if not isinstance(image, Image.Image):
            raise InvalidInputError(f"image #{i} is a {type(image).__name__}, not a PIL image")
        arrays.append(_pil_to_array(image, config))
    return np.stack(arrays) if arrays else np.empty((0, *config.shape), dtype=np.float32)


def _check_images(images: Any, config: AutoencoderConfig, *, what: str = "images") -> np.ndarray:
    """An ``(n, channels, s, s)`` float32 array in [0, 1] matching ``config``, or a clear error."""
    if not isinstance(images, np.ndarray):
        raise InvalidInputError(f"{what} must be a numpy array (n, channels, size, size), got {type(images).__name__}")
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise InvalidInputError(f"{what} must be numbers in [0, 1], got dtype {images.dtype}")
    expected = config.shape
    if images.ndim != 4 or images.shape[1:] != expected:
        raise InvalidInputError(
            f"{what} have shape {images.shape} but this autoencoder expects (n, {', '.join(map(str, expected))}): "
            "read them with load_images(..., config) so they are resized and coloured to match"
        )
    images = images.astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise InvalidInputError(f"{what} contain NaN or infinite values")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise InvalidInputError(
            f"{what} have values in [{images.min():g}, {images.max():g}], outside [0, 1]: "
            "scale them (8-bit pixels: divide by 255)"
        )
    return images


# ------------------------------------------------------------------------------------------- training


def _cap_threads() -> None:
    # Containers often advertise more CPUs than they may use; oversubscribed threads make torch slower.
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        cores = os.cpu_count() or 1
    if torch.get_num_threads() > cores:
        torch.set_num_threads(max(1, cores))


def _loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error per pixel, plus for a VAE the KL divergence (beta 1) divided by the pixel count.

    Both terms are per pixel so the loss reads the same whatever the image size; the ratio of the terms
    is that of a Gaussian decoder with variance 1/2.
    """
    mse = torch.mean((recon - x) ** 2)
    if logvar is None:
        return mse
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return mse + kl.mean() / x[0].numel()


def train_autoencoder(
    images: np.ndarray,
    config: AutoencoderConfig,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[ConvAutoencoder, list[float]]:
    """Train a :class:`ConvAutoencoder` on ``images`` (from :func:`load_images`) with Adam.

    The loss is the per-pixel MSE, plus the per-pixel-scaled KL term for a VAE. ``progress(epoch,
    epochs, loss)`` is called after each epoch (epochs count from 1). Training is deterministic for a
    given seed on a given machine and thread count; the global torch random state is left as it was.
    Returns the model (in eval mode) and the mean loss of each epoch.
    """
    config.validate()
    images = _check_images(images, config)
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidInputError(f"{name} must be a whole number >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise InvalidInputError(f"lr must be a positive number, got {lr!r}")
    n = len(images)
    if n < 2:
        raise InvalidInputError(f"need at least 2 images to train an autoencoder, got {n}")
    _cap_threads()
    data = torch.from_numpy(np.ascontiguousarray(images))
    batch = min(int(batch_size), n)
    losses: list[float] = []
    # fork_rng: seed weights, shuffling and VAE noise without changing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = ConvAutoencoder(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(lr))
        model.train()
        for epoch in range(1, int(epochs) + 1):
            order = torch.randperm(n)
            total = 0.0
            for start in range(0, n, batch):
                x = data[order[start : start + batch]]
                recon, mu, logvar = model(x)
                loss = _loss(recon, x, mu, logvar)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(x)
            mean = total / n
            if not math.isfinite(mean):
                raise InvalidInputError(f"training diverged at epoch {epoch} (loss {mean}): use a smaller lr than {lr}")
            losses.append(mean)
            if progress is not None:
                progress(epoch, int(epochs), mean)
    return model.eval(), losses


# --------------------------------------------------------------------------------------- save / load


def mean_image_error(images: np.ndarray) -> float:
    """The trivial baseline for a reconstruction: the mean per-pixel squared error of answering every
    image with the average image (what a model that learned nothing converges to)."""
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:
        return float("nan")
    return float(np.mean((images - images.mean(axis=0, keepdims=True)) ** 2))


def save_autoencoder(
    model: ConvAutoencoder,
    config: AutoencoderConfig,
    folder: str | os.PathLike[str],
    *,
    losses: Sequence[float] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if needed); returns the folder.

    Each file is written to a temporary name and renamed into place; ``config.json`` goes last, so a
    folder with a config always has its weights.
    """
    from safetensors.torch import save_file

    if not isinstance(model, ConvAutoencoder):
        raise InvalidInputError(f"expected a ConvAutoencoder to save, got {type(model).__name__}")
    config.validate()
    if model.config.to_dict() != config.to_dict():
        raise InvalidInputError(
            f"the model was built for {model.config.to_dict()} but the config says {config.to_dict()}: save it "
            "with the config it was trained with"
        )
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"{folder} is a file: give a folder to save the autoencoder in")
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {**config.to_dict(), "format": FORMAT, "version": FORMAT_VERSION}
    # JSON has no NaN: a non-finite loss is stored as null rather than writing an unreadable file.
    meta["losses"] = [float(x) if math.isfinite(float(x)) else None for x in (losses or [])]
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights_tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(weights_tmp), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
    fsync_replace(weights_tmp, folder / WEIGHTS_FILE)
    config_tmp = folder / f".{CONFIG_FILE}.tmp"
    config_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    fsync_replace(config_tmp, folder / CONFIG_FILE)
    return folder


def _read_config(folder: Path) -> AutoencoderConfig:
    config_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder: give the folder written by train-autoencoder")
    if not config_path.is_file():
        raise InvalidInputError(
            f"{folder} is not a latentsearch autoencoder (no {CONFIG_FILE}): train one with "
            "`latentsearch train-autoencoder IMAGES --out FOLDER`"
        )
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{config_path} is not valid JSON ({exc}): retrain or restore the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InvalidInputError(f"{config_path} is not a latentsearch autoencoder config (format is not {FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInputError(f"{config_path} has no valid format version: retrain or restore the model")
    if version > FORMAT_VERSION:
        raise InvalidInputError(
            f"{config_path} is format version {version}, newer than this latentsearch reads ({FORMAT_VERSION}): "
            "upgrade latentsearch"
        )
    try:
        return AutoencoderConfig.from_dict(meta)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{config_path}: {exc}") from None
    except TypeError as exc:
        raise InvalidInputError(f"{config_path} has unusable fields ({exc})") from None


def load_autoencoder(folder: str | os.PathLike[str]) -> tuple[ConvAutoencoder, AutoencoderConfig]:
    """Load a model saved by :func:`save_autoencoder` (safetensors only: nothing is unpickled)."""
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    config = _read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise InvalidInputError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}: retrain or restore the model")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        text = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InvalidInputError(
            f"{weights} is damaged or not a safetensors file ({text}): retrain or restore it"
        ) from None
    model = ConvAutoencoder(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        wrong = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
        raise InvalidInputError(
            f"{weights} does not match {CONFIG_FILE} (differs at {', '.join(wrong[:3])}): "
            "the two files come from different models; retrain or restore the folder"
        )
    if not all(v.is_floating_point() and bool(torch.isfinite(v).all()) for v in state.values()):
        raise InvalidInputError(f"{weights} holds non-finite or non-float weights: retrain or restore it")
    model.load_state_dict(state)
    return model.eval(), config


# -------------------------------------------------------------------------------------------- encoder


class AutoencoderEncoder:
    """A trained autoencoder folder as a latentsearch image encoder (spec ``ae:PATH``).

    ``encode`` returns the latent vectors (the mean for a VAE), not normalised: distances in the
    latent space are what the decoder understands. Inputs are image file paths (str or Path), PIL
    images, or an array ``(n, channels, s, s)`` in [0, 1] such as :func:`load_images` returns.
    """

    modality = "image"
    normalize = False

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.name = name or f"ae:{self.path}"
        self.model, self.config = load_autoencoder(self.path)
        # Hashed right after loading, so the pinned hash is that of the weights in use.
        self._weights_hash = file_sha256(self.path / WEIGHTS_FILE)
        _cap_threads()

    @property
    def dim(self) -> int:
        """The latent dimension."""
        return self.config.latent_dim

    @property
    def weights_hash(self) -> str:
        """sha256 of ``model.safetensors``."""
        return self._weights_hash

    # -- inputs

    def _as_array(self, inputs: Any) -> np.ndarray:
        from PIL import Image

        if isinstance(inputs, np.ndarray):
            return _check_images(inputs, self.config)
        if isinstance(inputs, (str, os.PathLike, Image.Image)):
            inputs = [inputs]  # one image, not a sequence of characters
        arrays = []
        for i, item in enumerate(inputs):
            if isinstance(item, Image.Image):
                arrays.append(_pil_to_array(item, self.config))
            elif isinstance(item, (str, os.PathLike)):
                try:
                    arrays.append(_read_image(Path(item).expanduser(), self.config))
                except _UnreadableImage as exc:
                    raise InvalidInputError(f"cannot read image {item}: {exc}") from None
            else:
                raise InvalidInputError(f"input #{i} is a {type(item).__name__}: give image file paths or PIL images")
        return np.stack(arrays) if arrays else np.empty((0, *self.config.shape), dtype=np.float32)

    def _batches(self, inputs: Any, batch_size: int) -> Iterable[torch.Tensor]:
        """Inputs as tensors of at most ``batch_size`` images, read one batch at a time."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(inputs, np.ndarray):
            whole = self._as_array(inputs)
            for start in range(0, len(whole), batch_size):
                yield torch.from_numpy(np.ascontiguousarray(whole[start : start + batch_size]))
            return
        items = self._as_list(inputs)
        for start in range(0, len(items), batch_size):
            yield torch.from_numpy(self._as_array(items[start : start + batch_size]))

    @staticmethod
    def _as_list(inputs: Any) -> list[Any]:
        from PIL import Image

        if isinstance(inputs, (str, os.PathLike, Image.Image)):
            return [inputs]
        try:
            return list(inputs)
        except TypeError:
            raise InvalidInputError(
                f"expected image paths, PIL images or an image array, got {type(inputs).__name__}"
            ) from None

    # -- the encoder protocol

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Latent vectors, float32 ``(n, dim)``; an unreadable path raises :class:`InvalidInputError` naming it."""
        out = [np.empty((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for x in self._batches(inputs, batch_size):
                out.append(self.model.encode(x).numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    # -- generative side

    def decode(self, z: Any) -> np.ndarray:
        """Images float32 ``(n, channels, s, s)`` in [0, 1] from latents ``(n, dim)`` (or one ``(dim,)``)."""
        latents = np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor) else z.detach().cpu().numpy()
        if latents.ndim == 1:
            latents = latents[None]
        if latents.ndim != 2 or latents.shape[1] != self.dim:
            raise InvalidInputError(f"latents must have shape (n, {self.dim}), got {latents.shape}")
        if not np.isfinite(latents).all():
            raise InvalidInputError("latents contain NaN or infinite values")
        with torch.inference_mode():
            images = self.model.decode(torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)))
        return np.ascontiguousarray(images.numpy(), dtype=np.float32)

    def reconstruct(self, images_or_paths: Any, *, batch_size: int = 64) -> np.ndarray:
        """Decode(encode(images)): float32 ``(n, channels, s, s)`` in [0, 1]."""
        out = [np.empty((0, *self.config.shape), dtype=np.float32)]
        with torch.inference_mode():
            for x in self._batches(images_or_paths, batch_size):
                out.append(self.model.decode(self.model.encode(x)).numpy())
        return np.concatenate(out)

    def reconstruction_error(
        self,
        images_or_paths: Any,
        *,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Per-image mean squared reconstruction error, float32 ``(n,)``: higher means less like the
        training set. ``progress(done, total)`` is called after each batch of images."""
        if not isinstance(images_or_paths, np.ndarray):
            images_or_paths = self._as_list(images_or_paths)  # sized, so progress knows the total
        total, done = len(images_or_paths), 0
        out = [np.empty(0, dtype=np.float32)]
        with torch.inference_mode():
            for x in self._batches(images_or_paths, batch_size):
                recon = self.model.decode(self.model.encode(x))
                out.append(((recon - x) ** 2).flatten(1).mean(dim=1).numpy())
                done += len(x)
                if progress is not None:
                    progress(done, total)
        return np.concatenate(out).astype(np.float32, copy=False)

    def interpolate(self, a: Any, b: Any, steps: int = 8) -> np.ndarray:
        """Decoded images along the straight line from ``a``'s latent to ``b``'s (both ends included).

        ``a`` and ``b`` are image paths or PIL images; returns float32 ``(steps, channels, s, s)``.
        """
        steps = check_int("steps", steps, 2, MAX_STEPS)
        for label, item in (("a", a), ("b", b)):
            if isinstance(item, np.ndarray) or not self._is_single(item):
                raise InvalidInputError(f"{label} must be one image path or PIL image, got {type(item).__name__}")
        ends = self.encode([a, b])
        t = np.linspace(0.0, 1.0, int(steps), dtype=np.float32)[:, None]
        return self.decode((1 - t) * ends[0] + t * ends[1])

    @staticmethod
    def _is_single(item: Any) -> bool:
        from PIL import Image

        return isinstance(item, (str, os.PathLike, Image.Image))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Decode ``n`` latents drawn from N(0, I): float32 ``(n, channels, s, s)``.

        Meaningful mainly for a VAE, whose training pulls the latents towards N(0, I); a plain
        autoencoder's latent space has no such shape, so its samples are often not image-like.
        """
        n = check_int("n (images)", n, 0, MAX_GENERATED)
        z = np.random.default_rng(seed).standard_normal((int(n), self.dim)).astype(np.float32)
        return self.decode(z) if n else np.empty((0, *self.config.shape), dtype=np.float32)


# ----------------------------------------------------------------------------------------- pictures


def _tiles(images: Any) -> tuple[np.ndarray, int]:
    """Images as uint8 ``(n, h, w, 3)`` (grey repeated) and the enlargement factor for tiny ones."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.float32)
    if array.ndim == 3:  # (n, s, s): grayscale without a channel axis
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3) or len(array) == 0:
        raise InvalidInputError(f"expected images (n, 1 or 3, height, width) with n >= 1, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidInputError("images contain NaN or infinite values")
    pixels = np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    scale = max(1, math.ceil(_TILE_MIN / max(pixels.shape[1], pixels.shape[2])))
    return pixels, scale


def _write_png(canvas: np.ndarray, path: str | os.PathLike[str]) -> Path:
    from PIL import Image

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(canvas, "RGB").save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_grid(images: Any, path: str | os.PathLike[str], cols: int = 8) -> Path:
    """Write images ``(n, channels, h, w)`` in [0, 1] as a PNG grid, ``cols`` per row; returns the path.

    Images smaller than 64 pixels are enlarged by a whole factor (nearest neighbour) so they can be
    seen; tiles are separated by 2 white pixels.
    """
    if isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise InvalidInputError(f"cols must be a whole number >= 1, got {cols!r}")
    pixels, scale = _tiles(images)
    n, h, w = pixels.shape[0], pixels.shape[1] * scale, pixels.shape[2] * scale
    cols = min(int(cols), n)
    rows = math.ceil(n / cols)
    canvas = np.full((rows * h + (rows + 1) * _PAD, cols * w + (cols + 1) * _PAD, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(pixels):
        r, c = divmod(i, cols)
        top, left = _PAD + r * (h + _PAD), _PAD + c * (w + _PAD)
        canvas[top : top + h, left : left + w] = tile.repeat(scale, axis=0).repeat(scale, axis=1)
    return _write_png(canvas, path)


def save_strip(images: Any, path: str | os.PathLike[str]) -> Path:
    """Write images ``(n, channels, h, w)`` in [0, 1] side by side as one PNG row; returns the path."""
    pixels, _ = _tiles(images)
    return save_grid(images, path, cols=len(pixels))


def save_loss_curve(losses: Sequence[float], path: str | os.PathLike[str]) -> Path:
    """Write a PNG line plot of the loss per epoch (log scale when it spans a wide range); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(list(losses), dtype=np.float64) if not isinstance(losses, np.ndarray) else losses
    if values.ndim != 1 or len(values) == 0:
        raise InvalidInputError("losses must be a non-empty list of numbers, one per epoch")
    if not np.isfinite(values).all():
        raise InvalidInputError("losses contain NaN or infinite values")
    # A Figure without pyplot: no global state, no GUI backend, safe from threads.
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    epochs = np.arange(1, len(values) + 1)
    axes.plot(epochs, values, marker="o" if len(values) <= 50 else None, linewidth=1.5)
    if values.min() > 0 and values.max() / values.min() > 20:
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (mean per pixel)")
    axes.set_title("autoencoder training loss")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


__all__ = [
    "AutoencoderConfig",
    "AutoencoderEncoder",
    "ConvAutoencoder",
    "images_to_array",
    "load_autoencoder",
    "load_images",
    "save_autoencoder",
    "save_grid",
    "save_loss_curve",
    "save_strip",
    "train_autoencoder",
]
