"""A tiny, randomly initialised CLIP model saved as a sentence-transformers folder, built offline.

Tests use it wherever a joint text+image encoder is needed (``st:PATH`` with a CLIP-style model)
without downloading anything: the weights are random (seeded), so the vectors mean nothing, but
the folder loads and encodes exactly like a real CLIP model saved with sentence-transformers 6:
one ``Transformer`` module wrapping ``transformers.CLIPModel`` whose ``modality_config`` sends
texts to ``get_text_features`` and PIL images to ``get_image_features``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# Byte-level BPE covers every string; these words also get a single token each, like a real vocab.
_WORDS = ("a", "photo", "of", "the", "cat", "dog", "red", "blue", "shoe", "car", "tree", "house")
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_MAX_TOKENS = 77  # CLIP's context length; longer texts are truncated by sentence-transformers

TINY_CLIP_DIM = 16  # projection_dim: the length of every text and image vector


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            if merged not in vocab:
                merges.append((left, right))
                vocab[merged] = len(vocab)
            left = merged
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    return vocab, merges


def _save_hf_clip(folder: Path) -> None:
    """Save a seeded random transformers CLIPModel plus its CLIPProcessor into ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:  # transformers 5: the PIL image processor needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import CLIPImageProcessor as ImageProcessor

    vocab, merges = _vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=_MAX_TOKENS)
    image_processor = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(vocab),
            "max_position_embeddings": _MAX_TOKENS,
            "bos_token_id": vocab[_BOS],
            "eos_token_id": vocab[_EOS],
            "pad_token_id": vocab[_EOS],
        },
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=TINY_CLIP_DIM,
    )
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG
        torch.manual_seed(0)
        model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_tiny_clip(folder: Path) -> Path:
    """Build (once) a tiny random CLIP sentence-transformers model in ``folder`` and return ``folder``.

    ``SentenceTransformer(str(folder), device="cpu", local_files_only=True)`` loads it offline;
    ``encode`` takes a list of strings or a list of PIL images (one modality per call) and returns
    ``TINY_CLIP_DIM``-long float32 vectors. Builds in well under a second once torch is imported.
    """
    folder = Path(folder)
    if (folder / "modules.json").exists():
        return folder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from transformers.utils import logging as hf_logging

    folder.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory(prefix=".tiny-clip-", dir=folder) as tmp:
            hf_dir, st_dir = Path(tmp, "hf"), Path(tmp, "st")
            _save_hf_clip(hf_dir)
            module = Transformer(str(hf_dir), model_kwargs={"local_files_only": True})
            SentenceTransformer(modules=[module], device="cpu").save(str(st_dir), create_model_card=False)
            _drop_load_time_keys(st_dir / "tokenizer_config.json")
            # modules.json goes in last, so a half-built folder never looks finished
            for file in sorted(st_dir.iterdir(), key=lambda p: p.name == "modules.json"):
                shutil.move(str(file), str(folder / file.name))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return folder


def _drop_load_time_keys(path: Path) -> None:
    # transformers records how the staging copy was loaded; that says nothing about the saved model
    if path.exists():
        config = json.loads(path.read_text())
        for key in ("is_local", "local_files_only"):
            config.pop(key, None)
        path.write_text(json.dumps(config, indent=2) + "\n")
