"""Text encoders built on sentence-transformers (PyTorch), loaded from local folders only."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInputError
from latentsearch.usercache import verified_sha256

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


def _offline() -> None:
    # Nothing may download at run time: models come from installed packages or local folders.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def check_texts(texts: Sequence[Any], *, encoder: str | None = None) -> list[str]:
    """Validate a batch of texts: strings with something other than white space. With ``encoder``
    (a text-only encoder's name), an image among them gets an error saying this encoder reads text."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            if encoder is not None and (isinstance(text, os.PathLike) or type(text).__module__.startswith("PIL.")):
                raise InvalidInputError(f"encoder {encoder!r} encodes text only, not images: use a CLIP-style model")
            raise InvalidInputError(f"text #{i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InvalidInputError(f"text #{i} is empty: give every item some text (or pass vectors)")
        out.append(text)
    return out


class SentenceTransformerEncoder:
    """Any sentence-transformers model in a local folder (``st:PATH``), CLIP-style ones included:
    a model that also takes images (``model.modalities``) is ``joint``, so text queries search images."""

    normalize = True

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.name = name or f"st:{self.path}"
        if not (self.path / "modules.json").exists() and not (self.path / "config.json").exists():
            raise InvalidInputError(
                f"{self.path} is not a sentence-transformers model folder (no modules.json or config.json)"
            )
        self._lock = threading.Lock()

    @cached_property
    def weights_hash(self) -> str:
        """sha256 over the folder's weight files (names and contents), in a stable order."""
        digest = hashlib.sha256()
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        for file in files:
            digest.update(str(file.relative_to(self.path)).encode())
            digest.update(verified_sha256(file).encode())
        return digest.hexdigest()

    @cached_property
    def model(self) -> Any:
        """The loaded SentenceTransformer (loaded on first use, once per process)."""
        _offline()
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        try:
            return SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        except Exception as exc:  # a broken folder surfaces as many exception types
            raise InvalidInputError(f"cannot load sentence-transformers model from {self.path}: {exc}") from None

    @cached_property
    def modality(self) -> str:
        """``joint`` for text+image models (CLIP), else ``text``."""
        return "joint" if "image" in (getattr(self.model, "modalities", None) or ()) else "text"

    @cached_property
    def dim(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def window(self) -> int:
        """Tokens of text the model reads at once: its ``max_seq_length`` less the special tokens."""
        tokenizer = self.model.tokenizer
        return int(self.model.max_seq_length) - int(tokenizer.num_special_tokens_to_add(pair=False))

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's tokens as character spans (special tokens left out), to split long texts."""
        tokenizer = self.model.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise InvalidInputError(
                f"encoder {self.name!r} has a slow tokenizer, which gives no character offsets to split long "
                "texts by: save the model with a fast tokenizer (tokenizer.json)"
            )
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [[(int(a), int(b)) for a, b in spans] for spans in encoded["offset_mapping"]]

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Encode texts, and for joint models images (paths or PIL images), into normalised vectors."""
        inputs = list(inputs)
        if not inputs:
            return np.empty((0, self.dim), dtype=np.float32)
        texts = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        images = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        if images and self.modality != "joint":
            raise InvalidInputError(f"encoder {self.name!r} encodes text only, not images: use a CLIP-style model")
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        # sentence-transformers wants one modality per call, and PIL images rather than paths.
        if texts:
            out[texts] = self._encode(check_texts([inputs[i] for i in texts]), batch_size)
        if images:
            from latentsearch.encoders.image import open_image

            out[images] = self._encode([open_image(inputs[i]) for i in images], batch_size)
        return out

    def _encode(self, batch: list[Any], batch_size: int) -> np.ndarray:
        with self._lock:  # torch modules are not safe to call from several threads at once
            vectors = self.model.encode(
                batch,
                batch_size=batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
