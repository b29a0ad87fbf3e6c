"""The ``precomputed`` encoder: the collection stores vectors the user brings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInputError


class PrecomputedEncoder:
    """Encodes nothing: items and queries arrive as vectors."""

    name = "precomputed"
    modality = "vector"
    normalize = False
    weights_hash = None

    @property
    def dim(self) -> int:
        raise InvalidInputError("the precomputed encoder has no fixed dimension: pass dim when creating")

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        raise InvalidInputError(
            "this collection stores precomputed vectors and has no encoder for text: pass vectors "
            "(Python: vectors=..., CLI: a .npy file or --vector-field), and search with a vector or --like ID "
            "(or by words in its texts: mode lexical)"
        )
