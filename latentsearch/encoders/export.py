"""Export a sentence-transformers BERT-style model to ONNX, verified against the model itself.

This is the one place the fast text path needs PyTorch: once per machine and model, the
transformer is traced by ``torch.onnx.export`` (the TorchScript exporter, which works offline),
optimised by onnxruntime, and its vectors are compared with sentence-transformers' own on a fixed
set of probe texts (short and long, past the model's window, several languages, odd white space).
A graph whose vectors differ by more than ``TOLERANCE`` is refused.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LatentSearchError
from .onnx import OnnxTextModel, inference_session

TOLERANCE = 1e-5  # max |difference| of any vector component; the export measures about 2e-7
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
    """The exported graph does not reproduce the model's vectors (or could not be exported)."""


def _last_hidden_state(model: Any) -> Any:
    """The transformers model as a module taking positional inputs and returning one tensor, to trace."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            # transformers 5.x takes keyword arguments only.
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    return LastHiddenState().eval()


def export_sentence_transformer(model_dir: Path, folder: Path, *, dim: int, max_tokens: int) -> dict[str, Any]:
    """Export the sentence-transformers model in ``model_dir`` to an optimised, portable ONNX graph
    in ``folder`` (``model.onnx`` and its ``model.data``) and verify it against the model; returns
    what was measured (``max_abs_diff`` on the probe texts)."""
    import warnings

    import onnxruntime
    import torch

    from .text import SentenceTransformerEncoder

    reference = SentenceTransformerEncoder(model_dir)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    example = torch.ones(2, 8, dtype=torch.long)
    out = folder / "model.onnx"
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it froze
                torch.onnx.export(
                    _last_hidden_state(reference.model[0].auto_model),
                    (example, torch.ones_like(example), torch.zeros_like(example)),
                    str(raw),
                    dynamo=False,
                    opset_version=17,
                    input_names=names,
                    output_names=["last_hidden_state"],
                    dynamic_axes=axes,
                )
        except Exception as exc:  # the exporter raises many kinds; all mean "no graph"
            raise ExportError(f"cannot export {model_dir} to ONNX: {str(exc).splitlines()[0][:200]}") from None
        inference_session(raw, optimized_copy=out)
    graph = OnnxTextModel(out, model_dir / "tokenizer.json", dim=dim, max_tokens=max_tokens)
    diff = float(np.abs(graph.encode(PROBE_TEXTS) - reference.encode(PROBE_TEXTS)).max())
    if not diff <= TOLERANCE:
        raise ExportError(
            f"the ONNX export of {model_dir} differs from sentence-transformers by {diff:.2g} (> {TOLERANCE}) "
            "on the probe texts: it is not used"
        )
    return {
        "max_abs_diff": diff,
        "probe_texts": len(PROBE_TEXTS),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }
