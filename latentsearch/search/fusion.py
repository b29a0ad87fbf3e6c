"""Fusing rankings: hybrid search joins the vector and lexical rankings into one, on a 0–1 scale.

Two methods, both with a vector weight ``w`` (the lexical side weighs ``1 - w``):

- ``convex``: ``w × v + (1 - w) × l``, where ``v`` and ``l`` are each mode's scores normalised between
  the lowest score the mode can give and its best candidate's: ``(s - floor) / (best - floor)``, the
  floor being -1 for cosine similarity and 0 for BM25 (min-max over the candidates where there is no
  such bound: l2 distances, raw inner products). A mode that missed an item gives it 0. This is the
  combination Bruch et al. (2023, "An analysis of fusion functions for hybrid retrieval") find more
  robust than RRF once its weight is tuned ("TM2C2"; plain min-max over the candidates measured worse
  here, see the README), and the gap between two hits is the weighted sum of how far apart each mode
  puts them, as a share of its best score's distance from the floor.
- ``rrf``: reciprocal rank fusion (Cormack et al. 2009), ``w / (rrf_k + vector rank) + (1 - w) /
  (rrf_k + lexical rank)``, divided by its largest value ``1 / (rrf_k + 1)``, so an item first in both
  rankings scores 1.

Rankings are keyed by the backend's item keys. :class:`Fusion` is what a collection stores once
tuned (see :mod:`latentsearch.search.tuning`); :data:`DEFAULT_FUSION` is used until then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from latentsearch.backends.base import Key, Ranking
from latentsearch.errors import InvalidInputError
from latentsearch.limits import MAX_RRF_K, check_int
from latentsearch.records import Hit

METHODS = ("convex", "rrf")
ALIASES = {"weighted": "convex"}  # the name convex fusion had before it was tuned per collection


@dataclass(frozen=True)
class Fusion:
    """How hybrid search fuses its rankings: ``method`` (``convex`` or ``rrf``), ``weight`` (of the
    vector side, 0 to 1) and, for RRF, its rank offset ``rrf_k``."""

    method: str = "convex"
    weight: float = 0.5
    rrf_k: int = 60

    def __post_init__(self) -> None:
        method = ALIASES.get(self.method, self.method)
        if method not in METHODS:
            raise InvalidInputError(f"unknown fusion {self.method!r}: use one of {', '.join(METHODS)}")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InvalidInputError(f"the fusion weight (alpha) is the vector side's, 0 to 1; got {weight!r}")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "weight", float(weight))
        object.__setattr__(self, "rrf_k", check_int("rrf_k", self.rrf_k, 0, MAX_RRF_K))

    def to_dict(self) -> dict[str, Any]:
        """The fusion as the manifest stores it."""
        return {"method": self.method, "weight": self.weight, "rrf_k": self.rrf_k}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Fusion:
        """A fusion from :meth:`to_dict`'s form."""
        return cls(str(values["method"]), float(values["weight"]), int(values.get("rrf_k", 60)))

    def describe(self) -> str:
        """One line for people: ``convex, vector weight 0.70``."""
        offset = f", k={self.rrf_k}" if self.method == "rrf" else ""
        return f"{self.method}{offset}, vector weight {self.weight:.2f}"


# Chosen by measurement on every labelled set of benchmarks/retrieval.py (the fusion with the smallest
# loss against the best single mode of each set); see the README's retrieval table.
DEFAULT_FUSION = Fusion("convex", 0.8)


def score_floors(metric: str) -> dict[str, float | None]:
    """The lowest score each mode can give in a collection of this metric (None: unbounded)."""
    return {"vector": -1.0 if metric == "cosine" else None, "lexical": 0.0}


def normalised(ranking: Ranking, floor: float | None = None) -> dict[Key, float]:
    """A ranking's scores on 0–1: ``(s - floor) / (best - floor)``, or min-max over its candidates
    when there is no floor (or the best is not above it); all 1 when they are equal."""
    if not ranking:
        return {}
    scores = [score for _, score in ranking]
    high = max(scores)
    low = floor if floor is not None and high > floor else min(scores)
    span = high - low
    return {key: max(score - low, 0.0) / span if span > 0 else 1.0 for key, score in ranking}


def contributions(
    rankings: Mapping[str, Ranking], fusion: Fusion, floors: Mapping[str, float | None] | None = None
) -> dict[Key, dict[str, float]]:
    """Each candidate's share of its fused score from each mode (a mode that missed it gives 0): the
    fused score is their sum. ``floors`` are the modes' lowest possible scores (:func:`score_floors`)."""
    weights = {"vector": fusion.weight, "lexical": 1.0 - fusion.weight}
    floors = floors or {}
    parts: dict[Key, dict[str, float]] = {}
    for name, ranking in rankings.items():
        weight = weights[name]
        if fusion.method == "rrf":
            top = 1.0 / (fusion.rrf_k + 1)
            values = {key: (1.0 / (fusion.rrf_k + rank)) / top for rank, (key, _) in enumerate(ranking, 1)}
        else:
            values = normalised(ranking, floors.get(name))
        for key, value in values.items():
            parts.setdefault(key, dict.fromkeys(rankings, 0.0))[name] = weight * value
    return parts


def fuse(
    rankings: Mapping[str, Ranking],
    fusion: Fusion = DEFAULT_FUSION,
    floors: Mapping[str, float | None] | None = None,
) -> Ranking:
    """Fuse per-mode rankings (``{"vector": [(key, score)], "lexical": [...]}``, best first) into one,
    best first, with scores on the 0–1 scale of the module docstring (``floors``: see
    :func:`contributions`)."""
    parts = contributions(rankings, fusion, floors)
    ranks: dict[Key, list[float]] = {key: [math.inf] * len(rankings) for key in parts}
    for position, ranking in enumerate(rankings.values()):
        for rank, (key, _) in enumerate(ranking, 1):
            ranks[key][position] = rank
    fused = [(key, sum(shares.values())) for key, shares in parts.items()]
    # Equal fused scores are ordered by the ranks themselves (vector first), never by storage order,
    # so a sharded collection orders ties exactly as a single one does.
    return sorted(fused, key=lambda pair: (-pair[1], ranks[pair[0]]))


def explain_hits(
    hits: Sequence[Hit],
    ranked: Ranking,
    rankings: Mapping[str, Ranking],
    mode: str,
    fusion: Fusion | None = None,
    floors: Mapping[str, float | None] | None = None,
) -> None:
    """Fill each hit's ``details`` with its rank and score in every mode's ranking, and for a fused
    search the fusion and each mode's contribution to the fused score. ``ranked`` pairs each hit's
    backend key with its final score; ``rankings`` holds every mode's ``(key, score)`` list, best first."""
    positions = {name: {key: (i + 1, s) for i, (key, s) in enumerate(rank)} for name, rank in rankings.items()}
    parts = contributions(rankings, fusion, floors) if fusion is not None else {}
    for hit, (key, score) in zip(hits, ranked):
        hit.details = {"mode": mode}
        for name, table in positions.items():
            rank, raw = table.get(key, (None, None))
            hit.details[f"{name}_rank"], hit.details[f"{name}_score"] = rank, raw
            if fusion is not None:
                hit.details[f"{name}_contribution"] = parts.get(key, {}).get(name, 0.0)
        if fusion is not None:
            hit.details["fused_score"] = score
            hit.details["fusion"] = fusion.to_dict()
        passage = hit.passage
        if passage is not None:  # where in the document it matched: the passage, its rank and score
            hit.details["passage"] = passage.index
            hit.details["passage_rank"], hit.details["passage_score"] = passage.rank, passage.score
