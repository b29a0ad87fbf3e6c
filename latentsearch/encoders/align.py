"""Text-to-image search without CLIP: learn a projection from image vectors into a text encoder's space.

From (image, caption) pairs, a linear map ``W x + b`` from the image encoder's space to the text
encoder's is trained with a contrastive loss (InfoNCE: each image must be closer to its own caption
than to the other captions of its batch, at temperature 0.05), the text vectors fixed. The result is an
encoder ``align:FOLDER`` that encodes images through the image encoder and the projection and texts
through the text encoder, so one collection answers text queries over images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInputError
from latentsearch.fileio import file_sha256

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "projection.safetensors"
FORMAT = "latentsearch-align"


def train_alignment(
    image_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    *,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-2,
    temperature: float = 0.05,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Learn ``W, b`` mapping image vectors to their captions' (normalised) text vectors.

    ``caption_vectors[i]`` is the text vector of image ``i``'s caption. Returns ``(W, b, losses)``.
    """
    import torch

    x = np.asarray(image_vectors, dtype=np.float32)
    t = np.asarray(caption_vectors, dtype=np.float32)
    if x.ndim != 2 or t.ndim != 2 or len(x) != len(t) or len(x) < 2:
        raise InvalidInputError(
            f"need matching (n, d) image and caption vectors with n >= 2, got {x.shape} and {t.shape}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidInputError(f"epochs must be a whole number >= 1, got {epochs!r}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(x)
    mean, std = images.mean(0), images.std(0) + 1e-6  # standardise inputs so one learning rate fits any encoder
    images = (images - mean) / std
    texts = torch.nn.functional.normalize(torch.from_numpy(t), dim=1)
    layer = torch.nn.Linear(x.shape[1], t.shape[1])
    optimiser = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            # The batch's distinct captions are the classes; duplicates of a caption share one target.
            unique, target = torch.unique(texts[idx], dim=0, return_inverse=True)
            if len(unique) < 2:
                continue
            z = torch.nn.functional.normalize(layer(images[idx]), dim=1)
            loss = torch.nn.functional.cross_entropy(z @ unique.T / temperature, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, batches = total + loss.item(), batches + 1
        if batches == 0:
            raise InvalidInputError("every batch has a single caption: alignment needs at least two different captions")
        losses.append(total / batches)
        if progress:
            progress(epoch + 1, epochs, losses[-1])
    with torch.no_grad():  # fold the standardisation into W and b
        weight = layer.weight / std[None, :]
        bias = layer.bias - weight @ mean
    return weight.numpy().astype(np.float32), bias.numpy().astype(np.float32), losses


def save_alignment(
    folder: str | os.PathLike[str], weight: np.ndarray, bias: np.ndarray, config: dict[str, Any]
) -> Path:
    """Write ``projection.safetensors`` and ``config.json`` (never pickle)."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": weight, "bias": bias}, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({"format": FORMAT, "version": 1, **config}, indent=2))
    return folder


class AlignedEncoder:
    """Encoder ``align:FOLDER``: images through the image encoder and the learned projection, texts
    through the text encoder, both normalised into the text encoder's space."""

    modality = "joint"
    normalize = True

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.name = f"align:{self.folder}"
        try:
            self.config = json.loads((self.folder / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            raise InvalidInputError(f"{self.folder} is not an alignment model (no readable {CONFIG_FILE})") from None
        if self.config.get("format") != FORMAT:
            raise InvalidInputError(f"{self.folder / CONFIG_FILE} is not a latentsearch alignment config")
        try:
            from safetensors.numpy import load_file

            tensors = load_file(str(self.folder / WEIGHTS_FILE))
            self.weight, self.bias = tensors["weight"], tensors["bias"]
        except Exception as exc:  # safetensors raises several types for damaged files
            raise InvalidInputError(f"cannot read {self.folder / WEIGHTS_FILE}: {exc}") from None

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    @cached_property
    def weights_hash(self) -> str:
        from latentsearch.encoders import get_encoder

        parts = [file_sha256(self.folder / WEIGHTS_FILE)]
        parts += [get_encoder(self.config[k]).weights_hash or "" for k in ("image_encoder", "text_encoder")]
        return "+".join(p[:16] for p in parts)

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Texts (str) go through the text encoder; images (paths, PIL) through the projection."""
        from latentsearch.encoders import get_encoder

        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        texts = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        images = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        if texts:
            out[texts] = get_encoder(self.config["text_encoder"]).encode(
                [inputs[i] for i in texts], batch_size=batch_size
            )
        if images:
            raw = get_encoder(self.config["image_encoder"]).encode([inputs[i] for i in images], batch_size=batch_size)
            out[images] = self.project(raw)
        return out

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Map image-encoder vectors into the text space (normalised)."""
        z = vectors @ self.weight.T + self.bias
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)
