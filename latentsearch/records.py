"""Plain records returned by the library: items and search hits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Item:
    """One stored item."""

    id: str
    kind: str
    text: str | None = None
    uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the vector as a list when present)."""
        out = asdict(self)
        out["vector"] = None if self.vector is None else self.vector.tolist()
        if self.vector is None:
            del out["vector"]
        return out


@dataclass
class Hit:
    """One search result. ``score`` is higher for better matches: cosine similarity, or the negated
    Euclidean distance for l2 collections; in hybrid search, the fused score. ``snippet`` is the part of
    the text around the query's words (matches between ``**``). ``details`` holds each mode's rank and
    score when asked for (``explain=True``)."""

    id: str
    score: float
    text: str | None = None
    uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    snippet: str | None = None
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``snippet`` and ``details`` only when set)."""
        out = asdict(self)
        for optional in ("snippet", "details"):
            if out[optional] is None:
                del out[optional]
        return out
