"""Fine-tuning a sentence-transformers text encoder on (query, passage) pairs, on CPU.

The loss is sentence-transformers' own ``MultipleNegativesRankingLoss``: each query must score its
own passage above every other passage of its batch (in-batch negatives). The loop is a small one
over that loss (AdamW, linear warm-up then decay, gradients clipped at 1, as sentence-transformers'
trainer does), because the trainer needs the ``datasets`` and ``accelerate`` packages, which nothing
else here uses. Batches never hold the same text twice (a duplicate would be a false negative).
Everything is seeded: the same pairs and settings train the same model.

The tuned model is saved as a plain sentence-transformers folder (safetensors weights, never
pickles) with a card, ``latentsearch_card.json`` and ``README.md``: the base model and its weights'
sha256, the data, the settings and the held-out measures. It is written into a hidden sibling
folder and renamed into place once complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.encoders.onnx import cpu_threads
from latentsearch.encoders.text import SentenceTransformerEncoder
from latentsearch.fileio import fsync_path

CARD_FILE = "latentsearch_card.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TRAIN_TOKENS = 128  # passages are cut here while training: half the time of MiniLM's 256, same gains
# step, steps, running loss: what a progress bar shows.
StepFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainingSettings:
    """How to train: ``steps`` optimiser steps (at most one pass over the pairs), ``batch_size`` pairs a
    step, peak ``learning_rate`` reached after ``warmup`` (a share of the steps), ``seed``."""

    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup: float = 0.1
    seed: int = 0


def load_trainable(model_dir: Path) -> Any:
    """The SentenceTransformer in ``model_dir`` on CPU, one torch thread per core, seeded."""
    import torch

    torch.set_num_threads(cpu_threads())
    return SentenceTransformerEncoder(model_dir, backend="torch").model


def encode_with(model: Any, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalised vectors of ``texts`` by a loaded SentenceTransformer (in eval mode)."""
    model.eval()
    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def batches(pairs: Sequence[tuple[str, str]], size: int, rng: np.random.Generator) -> list[list[int]]:
    """Pairs in a random order, cut into batches of ``size`` in which no query or passage appears twice
    (a pair whose text is already in the batch waits for the next one); a last, smaller batch is dropped
    unless it is the only one."""
    pending = [int(i) for i in rng.permutation(len(pairs))]
    out: list[list[int]] = []
    while pending:
        batch, seen, left = [], set(), []
        for i in pending:
            a, b = pairs[i]
            if len(batch) < size and a not in seen and b not in seen:
                batch.append(i)
                seen.update((a, b))
            else:
                left.append(i)
        if len(batch) < size and out:
            break
        out.append(batch)
        pending = left
    return out


def train(
    model: Any, pairs: Sequence[tuple[str, str]], settings: TrainingSettings, progress: StepFn | None = None
) -> list[float]:
    """Fine-tune ``model`` in place on ``(query, passage)`` pairs; returns the loss of every step."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    plan = batches(pairs, settings.batch_size, rng)[: settings.steps]
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(settings.warmup * len(plan)), len(plan))
    window = model.max_seq_length
    model.max_seq_length = min(window, TRAIN_TOKENS)
    losses: list[float] = []
    try:
        model.train()
        for step, batch in enumerate(plan, 1):
            features = [model.preprocess([pairs[i][0] for i in batch]), model.preprocess([pairs[i][1] for i in batch])]
            loss = loss_fn(features, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            if progress:
                progress(step, len(plan), float(np.mean(losses[-20:])))
    finally:
        model.max_seq_length = window
        model.eval()
    return losses


def card_markdown(card: dict[str, Any]) -> str:
    """The card as a short README.md."""
    base, data, training = card["base_model"], card["data"], card["training"]
    before, after = card["heldout"]["before"], card["heldout"]["after"]
    return "\n".join(
        [
            f"# {card['name']}",
            "",
            f"A sentence-transformers model fine-tuned by latentsearch `tune-encoder` from `{base['name']}` "
            f"(weights sha256 `{base['weights_sha256']}`) on collection `{data['collection']}`.",
            "",
            f"- data: {data['train_pairs']} training pairs ({data['source']}), {data['heldout_pairs']} held out",
            f"- training: {training['steps']} steps of {training['batch_size']} pairs, learning rate "
            f"{training['learning_rate']}, MultipleNegativesRankingLoss, seed {training['seed']}, "
            f"{training['seconds']:.0f} s",
            f"- held-out MRR@10 {before['mrr@10']:.4f} → {after['mrr@10']:.4f}, recall@10 {before['recall@10']:.4f} → "
            f"{after['recall@10']:.4f}",
            "",
            f"Use it in latentsearch as `st:PATH` (`latentsearch reencode {data['collection']} --encoder st:PATH`).",
            "",
        ]
    )


def save_tuned(model: Any, folder: Path, card: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Save ``model`` with ``card`` as the sentence-transformers folder ``folder`` (safetensors only),
    built beside it and renamed into place; an existing folder is replaced only with ``overwrite``
    (the caller has checked). Returns the folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.saving-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(str(tmp), safe_serialization=True)
        for stale in [p for p in tmp.rglob("*") if p.suffix in PICKLE_SUFFIXES]:  # nothing unpickled ever loads
            stale.unlink()
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(card_markdown(card), encoding="utf-8")
        for path in tmp.rglob("*"):
            if path.is_file():
                fsync_path(path)
        trash = None
        if folder.exists() and overwrite:
            trash = folder.with_name(f".{folder.name}.replaced-{os.getpid()}")
            os.rename(folder, trash)
        os.rename(tmp, folder)
        fsync_path(folder.parent)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_card(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The card of a model folder ``tune-encoder`` wrote (``None`` for any other folder)."""
    try:
        return json.loads((Path(folder) / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
