"""Text models run by onnxruntime with the ``tokenizers`` package: no PyTorch on this path.

``OnnxTextModel`` reproduces sentence-transformers' encode for BERT-style models exactly: the
tokenizer's own ``tokenizer.json`` with truncation at the model's window and padding to the longest
text of each batch, the graph's ``last_hidden_state``, mean pooling over the attention mask and L2
normalisation. Importing onnxruntime and tokenizers takes about 0.25 s, against several seconds
for sentence-transformers and PyTorch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.encoders.text import check_texts

# onnxruntime runs MiniLM fastest in small batches on CPU (less padding, cache-sized tensors):
# measured 8-16 > 32 > 64 texts per run on 2 cores, fp32 and int8 alike.
RUN_BATCH = 16
DATA_FILE = "model.data"  # external weights of an optimised graph, beside it


def cpu_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def inference_session(path: Path, *, preoptimized: bool = False, optimized_copy: Path | None = None) -> Any:
    """An onnxruntime CPU session for ``path``, one thread per core, with every graph optimisation
    (only the basic ones for a ``preoptimized`` graph, whose load they would slow for nothing).

    With ``optimized_copy``, the graph is optimised at the portable ("extended") level and saved
    there, its weights in a ``model.data`` file beside it; later sessions open that copy as
    ``preoptimized`` and map its weights instead of parsing them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    options.log_severity_level = 3  # errors only
    levels = ort.GraphOptimizationLevel
    if optimized_copy is not None:
        # Level "all" adds layout transforms tied to this CPU; "extended" graphs run anywhere.
        options.graph_optimization_level = levels.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized_copy)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    else:
        options.graph_optimization_level = levels.ORT_ENABLE_BASIC if preoptimized else levels.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class TokenWindow:
    """A model's tokenizer (its ``tokenizer.json``) and window, used to split long texts into passages
    without loading the model itself."""

    def __init__(self, tokenizer: Path, max_tokens: int) -> None:
        self.tokenizer_path = Path(tokenizer)
        self.max_tokens = max_tokens

    @cached_property
    def tokenizer(self) -> Any:
        """The tokenizer without truncation or padding: it sees a whole text."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    @property
    def window(self) -> int:
        """Tokens of text one passage may hold: the model's window less its special tokens."""
        return self.max_tokens - self.tokenizer.num_special_tokens_to_add(False)

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's tokens as character spans (special tokens left out)."""
        return [e.offsets for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


class SplitsByTokenizer:
    """For encoders that split long texts with a :class:`TokenWindow` of their model (``splitter``)."""

    splitter: TokenWindow

    @property
    def window(self) -> int:
        """Tokens of text the model reads at once (its window less [CLS] and [SEP])."""
        return self.splitter.window

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's word pieces as character spans, to split long texts into passages."""
        return self.splitter.token_spans(texts)


class OnnxTextModel:
    """A BERT-style ONNX graph (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; output
    ``last_hidden_state``) with its tokenizer, encoding texts into mean-pooled, L2-normalised vectors."""

    def __init__(self, graph: Path, tokenizer: Path, *, dim: int, max_tokens: int, preoptimized: bool = False) -> None:
        self.graph = Path(graph)
        self.preoptimized = preoptimized
        self.tokenizer_path = Path(tokenizer)
        self.dim = dim
        self.max_tokens = max_tokens
        self._lock = threading.Lock()

    @cached_property
    def tokenizer(self) -> Any:
        """The model's fast tokenizer, truncating at its window and padding each batch to its longest."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        # tokenizer.json may carry fixed-length padding and another truncation length: replace both,
        # as sentence-transformers does (truncation at max_seq_length, padding to the longest).
        tokenizer.enable_truncation(max_length=self.max_tokens)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return tokenizer

    @cached_property
    def session(self) -> Any:
        """The onnxruntime session, created on first use."""
        return inference_session(self.graph, preoptimized=self.preoptimized)

    def load(self) -> None:
        """Create the session and the tokenizer now rather than on the first encode."""
        self.session  # noqa: B018
        self.tokenizer  # noqa: B018

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        """Encode texts into L2-normalised vectors, in the order given."""
        texts = check_texts(inputs)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        # Longest first, so each batch pads little (as sentence-transformers does); order restored below.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        texts = [texts[i] for i in order]
        out = []
        for start in range(0, len(texts), RUN_BATCH):
            encodings = self.tokenizer.encode_batch(texts[start : start + RUN_BATCH])
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
