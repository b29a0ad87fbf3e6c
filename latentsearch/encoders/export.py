"""Export PyTorch models to ONNX, verified against the models themselves.

This is the one place the fast paths need PyTorch: once per machine and model, a module is traced
by ``torch.onnx.export`` (the TorchScript exporter, which works offline), optimised by onnxruntime
(``onnx.inference_session``), and its outputs are compared with the PyTorch model's own on fixed
probe inputs. A graph whose outputs differ by more than the model's tolerance is refused.

- ``minilm``: probe texts short and long (past the model's window), in several scripts, with odd
  white space; compared with sentence-transformers' ``encode``; tolerance 1e-5 (measured ~2e-7).
- ``efficientnet-lite0``: probe images (gradients, noise, a photo); tolerance 1e-4 (measured ~1e-5).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.encoders.graphs import open_cached_graph
from latentsearch.encoders.onnx import OnnxTextModel, inference_session
from latentsearch.errors import LatentSearchError

TEXT_TOLERANCE = 1e-5
IMAGE_TOLERANCE = 1e-4
log = logging.getLogger("latentsearch")
PROBE_TEXTS = [
    "How do I reset my password?",
    "Invoices are sent on the first day of each month by email.",
    "Error E-4711 means the sync service lost its connection; it retries by itself.",
    "Um Ihr Passwort zurückzusetzen, öffnen Sie die Einstellungen.",
    "La tour Eiffel mesure environ trois cents mètres.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "def f(x): return x ** 2  # squares 🙂",
    "   leading and trailing white space   ",
    "a",
    "1234 5678 90",
    " ".join(["a long text that runs past the window of the model"] * 60),
    " ".join(f"word{i}" for i in range(400)),
]


class ExportError(LatentSearchError):
    """The exported graph does not reproduce the model's outputs (or could not be exported)."""


def export_module(
    module: Any, example: tuple[Any, ...], names: Sequence[str], output: str, folder: Path, axes: dict[str, dict]
) -> Path:
    """Trace ``module`` (inputs ``names``, one output ``output``, dynamic ``axes``) into
    ``folder/model.onnx``, optimised by onnxruntime with its weights in ``model.data``."""
    import torch

    out = folder / "model.onnx"
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it froze
                torch.onnx.export(
                    module.eval(),
                    example,
                    str(raw),
                    dynamo=False,
                    opset_version=17,
                    input_names=list(names),
                    output_names=[output],
                    dynamic_axes=axes,
                )
        except Exception as exc:  # the exporter raises many kinds; all mean "no graph"
            raise ExportError(
                f"cannot export {type(module).__name__} to ONNX: {str(exc).splitlines()[0][:200]}"
            ) from None
        inference_session(raw, optimized_copy=out)
    return out


def verified(what: str, ours: np.ndarray, reference: np.ndarray, tolerance: float, count: int) -> dict[str, Any]:
    """What the export measured, or ExportError when the graph's outputs are off by more than ``tolerance``."""
    import onnxruntime
    import torch

    diff = float(np.abs(ours - reference).max())
    if not diff <= tolerance:
        raise ExportError(
            f"the ONNX export of {what} differs from its PyTorch model by {diff:.2g} (> {tolerance}) "
            "on the probe inputs: it is not used"
        )
    return {"max_abs_diff": diff, "probes": count, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


def _last_hidden_state(model: Any) -> Any:
    """A transformers model as a module taking positional inputs and returning one tensor, to trace."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            # transformers 5.x takes keyword arguments only.
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    return LastHiddenState()


def export_sentence_transformer(model_dir: Path, folder: Path, *, dim: int, max_tokens: int) -> dict[str, Any]:
    """Export the BERT-style sentence-transformers model in ``model_dir`` into ``folder`` and verify
    its mean-pooled vectors against sentence-transformers' own on the probe texts."""
    import torch

    from latentsearch.encoders.text import SentenceTransformerEncoder

    reference = SentenceTransformerEncoder(model_dir, backend="torch")
    example = torch.ones(2, 8, dtype=torch.long)
    graph = export_module(
        _last_hidden_state(reference.model[0].auto_model),
        (example, torch.ones_like(example), torch.zeros_like(example)),
        names := ["input_ids", "attention_mask", "token_type_ids"],
        "last_hidden_state",
        folder,
        {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]},
    )
    tokenizer = model_dir / "tokenizer.json"
    ours = OnnxTextModel(graph, tokenizer, dim=dim, max_tokens=max_tokens, preoptimized=True).encode(PROBE_TEXTS)
    return verified(model_dir.name, ours, reference.encode(PROBE_TEXTS), TEXT_TOLERANCE, len(PROBE_TEXTS))


def cached_text_model(
    model_dir: Path,
    graph_name: str,
    *,
    dim: int,
    max_tokens: int,
    what: str,
    export: Callable[[Path], dict[str, Any]] | None = None,
) -> OnnxTextModel | None:
    """The BERT-style sentence-transformers model in ``model_dir`` as a loaded :class:`OnnxTextModel`
    over its cached graph ``graph_name`` (exported and verified first when this machine has none; by
    ``export(folder)`` if given), or ``None`` after one warning line, to run on PyTorch instead."""

    def open_graph(graph: Path) -> OnnxTextModel:
        model = OnnxTextModel(graph, model_dir / "tokenizer.json", dim=dim, max_tokens=max_tokens, preoptimized=True)
        model.load()
        return model

    def export_graph(folder: Path) -> dict[str, Any]:
        log.info("exporting %s to ONNX (once per machine)", what)
        return export_sentence_transformer(model_dir, folder, dim=dim, max_tokens=max_tokens)

    return open_cached_graph(graph_name, export or export_graph, open_graph, what)


def probe_images(size: int = 224) -> np.ndarray:
    """Fixed preprocessed-looking inputs (n, 3, size, size): gradients, noise, flat colours, a photo."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    images = [
        np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.zeros((size, size), np.float32)]),
        rng.uniform(-1, 1, (3, size, size)).astype(np.float32),
        np.full((3, size, size), 0.5, np.float32),
        np.full((3, size, size), -0.9, np.float32),
    ]
    with contextlib.suppress(Exception):  # scikit-learn ships two photos; use one if present
        from sklearn.datasets import load_sample_image

        photo = load_sample_image("china.jpg")[:size, :size].astype(np.float32)
        images.append(((photo - 127.0) / 128.0).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(images))


def export_image_features(
    module: Any, folder: Path, reference: Callable[[np.ndarray], np.ndarray], what: str, size: int = 224
) -> dict[str, Any]:
    """Export an image feature extractor (``pixels (n, 3, size, size) -> features (n, d)``) into
    ``folder`` and verify it against ``reference`` on the probe images."""
    import torch

    axes = {"pixels": {0: "batch"}, "features": {0: "batch"}}
    graph = export_module(module, (torch.zeros(2, 3, size, size),), ["pixels"], "features", folder, axes)
    probes = probe_images(size)
    ours = inference_session(graph, preoptimized=True).run(["features"], {"pixels": probes})[0]
    return verified(what, ours, reference(probes), IMAGE_TOLERANCE, len(probes))
