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
    Euclidean distance for l2 collections. ``details`` holds per-mode ranks and scores when asked."""

    id: str
    score: float
    text: str | None = None
    uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        if self.details is None:
            del out["details"]
        return out
