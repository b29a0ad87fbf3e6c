"""Tiny text encoders, ``toy-a`` and ``toy-b`` (8-d sums of seeded word vectors, different seeds) and
``toy-wide`` (12-d), for tests that re-encode collections in many short-lived processes: they load in no
time."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from latentsearch.encoders import register_encoder


class ToyEncoder:
    """A bag of words: each word a fixed random vector of the encoder's own seed."""

    modality, normalize, dim = "text", True, 8

    def __init__(self, name: str) -> None:
        self.name = self.weights_hash = name

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(inputs), self.dim), np.float32)
        for row, text in zip(out, inputs):
            for word in text.split():
                row += np.random.default_rng(zlib.crc32(f"{self.name}|{word}".encode())).normal(size=self.dim)
        return out


class WideToyEncoder(ToyEncoder):
    """A toy encoder of another dimension."""

    dim = 12


for _name in ("toy-a", "toy-b"):
    register_encoder(_name, ToyEncoder)
register_encoder("toy-wide", WideToyEncoder)
