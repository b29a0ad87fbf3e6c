"""Text encoders from local sentence-transformers folders (``st:PATH``), loaded from local folders only.

A folder holding a BERT-type model with mean pooling and a ``tokenizer.json`` (all-MiniLM-L6-v2,
or a copy of it that ``tune-encoder`` fine-tuned) runs through onnxruntime like ``minilm``: its graph
is exported once per machine, verified against sentence-transformers and cached by the weights'
sha256, so a text query never imports PyTorch. Any other folder (CLIP-style models, other
architectures) runs on sentence-transformers (PyTorch), with one warning line saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
BACKEND_ENV = "LATENTSEARCH_ST_BACKEND"
BACKENDS = ("onnx", "torch")
log = logging.getLogger("latentsearch")


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
    a model that also takes images (``model.modalities``) is ``joint``, so text queries search images.

    ``backend``: ``onnx`` (the default; ``$LATENTSEARCH_ST_BACKEND`` sets another) runs an exportable
    BERT-type text model through onnxruntime (see the module docstring) and anything else on PyTorch;
    ``torch`` runs sentence-transformers outright."""

    normalize = True

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, backend: str | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.name = name or f"st:{self.path}"
        if not (self.path / "modules.json").exists() and not (self.path / "config.json").exists():
            raise InvalidInputError(
                f"{self.path} is not a sentence-transformers model folder (no modules.json or config.json)"
            )
        chosen = backend or os.environ.get(BACKEND_ENV) or "onnx"
        if chosen not in BACKENDS:
            raise InvalidInputError(
                f"unknown sentence-transformers backend {chosen!r}: use one of {', '.join(BACKENDS)}"
            )
        self.backend = chosen
        self._lock = threading.Lock()
        self._runtime: Any = None  # the OnnxTextModel, or False once PyTorch was chosen

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
    def text_plan(self) -> tuple[int, int] | str:
        """``(dim, max_tokens)`` when the folder can run on onnxruntime (read from its config files,
        without PyTorch), else why not."""
        return onnx_plan(self.path)

    @property
    def graph_name(self) -> str:
        """The cache name of this folder's ONNX graph: its weights and the onnxruntime that optimised it."""
        import onnxruntime

        return f"st-{self.weights_hash[:16]}-ort{onnxruntime.__version__}"

    @property
    def onnx(self) -> Any:
        """The cached ONNX model that encodes, or ``None`` when this folder runs on PyTorch (decided on
        first use: the graph is exported then if this machine has none)."""
        with self._lock:
            if self._runtime is None:
                self._runtime = False
                if self.backend == "onnx":
                    if isinstance(self.text_plan, str):
                        log.warning("%s: %s runs on the slower PyTorch path", self.text_plan, self.name)
                    else:
                        from latentsearch.encoders.export import cached_text_model

                        dim, max_tokens = self.text_plan
                        found = cached_text_model(
                            self.path, self.graph_name, dim=dim, max_tokens=max_tokens, what=self.name
                        )
                        self._runtime = found if found is not None else False
            return self._runtime or None

    @property
    def backend_in_use(self) -> str:
        """``onnx`` or ``torch``: what actually encodes (loads the model)."""
        return "onnx" if self.onnx is not None else "torch"

    @property
    def loading_message(self) -> str:
        """What loading will do, for a status line."""
        from latentsearch.encoders.graphs import graph_folder

        exporting = self.backend == "onnx" and self._runtime is None and not isinstance(self.text_plan, str)
        if exporting and not graph_folder(self.graph_name).exists():
            return f"exporting {self.path.name} to ONNX (once per machine, a few seconds)…"
        return f"loading model {self.path.name}…"

    def load(self) -> None:
        """Load the model now (exporting its ONNX graph first if this machine has none)."""
        onnx = self.onnx
        if onnx is not None:
            onnx.load()
        else:
            self.model  # noqa: B018

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
        if self.onnx is not None:
            return "text"
        return "joint" if "image" in (getattr(self.model, "modalities", None) or ()) else "text"

    @cached_property
    def dim(self) -> int:
        if self.onnx is not None:
            return int(self.onnx.dim)
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @cached_property
    def _splitter(self) -> Any:
        from latentsearch.encoders.onnx import TokenWindow

        onnx = self.onnx
        return TokenWindow(onnx.tokenizer_path, onnx.max_tokens)

    @property
    def window(self) -> int:
        """Tokens of text the model reads at once: its ``max_seq_length`` less the special tokens."""
        if self.onnx is not None:
            return int(self._splitter.window)
        tokenizer = self.model.tokenizer
        return int(self.model.max_seq_length) - int(tokenizer.num_special_tokens_to_add(pair=False))

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's tokens as character spans (special tokens left out), to split long texts."""
        if self.onnx is not None:
            return self._splitter.token_spans(texts)
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
        onnx = self.onnx
        if onnx is not None:
            return onnx.encode(check_texts(inputs, encoder=self.name))
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


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def onnx_plan(folder: Path) -> tuple[int, int] | str:
    """``(dim, max_tokens)`` when the sentence-transformers ``folder`` is what :class:`OnnxTextModel`
    reproduces (a BERT-type transformer, mean pooling, optional normalisation, a fast tokenizer in
    ``tokenizer.json``, no lower-casing of its own), read from its config files; else the reason why
    not. The export still verifies the graph against sentence-transformers before it is used."""
    modules = _json(folder / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules] if isinstance(modules, list) else []
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"{folder} is not a transformer with pooling ({' + '.join(kinds) or 'no modules.json'})"
    if modules[0].get("path", "") != "" or not (folder / "tokenizer.json").is_file():
        return f"{folder} has no tokenizer.json beside its transformer"
    config = _json(folder / "config.json") or {}
    if config.get("model_type") != "bert":
        return f"{folder} holds a {config.get('model_type') or 'model of unknown type'}, not a BERT-type model"
    pooling = _json(folder / str(modules[1].get("path", "")) / "config.json") or {}
    mean = pooling.get("pooling_mode") == "mean" or (
        pooling.get("pooling_mode_mean_tokens") is True
        and not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
    )
    if not mean:
        return f"{folder} pools its tokens otherwise than by their mean"
    st_config = _json(folder / "sentence_bert_config.json") or {}
    if st_config.get("do_lower_case"):
        return f"{folder} lower-cases texts itself (do_lower_case)"
    # sentence-transformers reads the window from here, else the tokenizer's, capped by the model's.
    tokenizer_config = _json(folder / "tokenizer_config.json") or {}
    max_tokens = st_config.get("max_seq_length") or tokenizer_config.get("model_max_length")
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and (not isinstance(max_tokens, int) or max_tokens > positions):
        max_tokens = positions
    dim = config.get("hidden_size")
    if not isinstance(max_tokens, int) or not isinstance(dim, int) or max_tokens < 3 or dim < 1:
        return f"{folder} names no window (max_seq_length) or width (hidden_size)"
    return dim, max_tokens
