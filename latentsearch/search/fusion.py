"""Fusing rankings: hybrid search joins the vector and lexical rankings into one.

Reciprocal rank fusion (RRF, Cormack et al. 2009) scores an item by the sum over modes of
``1 / (rrf_k + rank)``, so neither mode's score scale matters; the weighted fusion adds min-max
normalised scores, ``alpha`` for the vector side. Rankings are keyed by the backend's item keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from latentsearch.backends.base import Key, Ranking
from latentsearch.records import Hit


def explain_hits(hits: Sequence[Hit], ranked: Ranking, rankings: dict[str, Ranking], mode: str) -> None:
    """Fill each hit's ``details`` with its rank and score in every mode's ranking (and the fused score).
    ``ranked`` pairs each hit's backend key with its final score; ``rankings`` holds every mode's
    ``(key, score)`` list, best first."""
    positions = {name: {key: (i + 1, s) for i, (key, s) in enumerate(rank)} for name, rank in rankings.items()}
    for hit, (key, score) in zip(hits, ranked):
        hit.details = {"mode": mode}
        for name, table in positions.items():
            rank, raw = table.get(key, (None, None))
            hit.details[f"{name}_rank"], hit.details[f"{name}_score"] = rank, raw
        if mode == "hybrid":
            hit.details["fused_score"] = score
        passage = hit.passage
        if passage is not None:  # where in the document it matched: the passage, its rank and score
            hit.details["passage"] = passage.index
            hit.details["passage_rank"], hit.details["passage_score"] = passage.rank, passage.score


def fuse(rankings: dict[str, Ranking], *, fusion: str = "rrf", alpha: float = 0.5, rrf_k: int = 60) -> Ranking:
    """Fuse per-mode rankings (``{"vector": [(key, score)], "lexical": [...]}``), best first.

    ``rrf``: sum of ``1 / (rrf_k + rank)``. ``weighted``: ``alpha`` × the min-max-normalised vector score
    plus ``1 - alpha`` × the normalised lexical score (a mode that missed an item contributes 0).
    """
    fused: dict[Key, float] = {}
    ranks: dict[Key, list[float]] = {}  # each item's rank in every ranking, for breaking ties
    for position, (name, ranking) in enumerate(rankings.items()):
        for rank, (key, _) in enumerate(ranking, 1):
            ranks.setdefault(key, [math.inf] * len(rankings))[position] = rank
        if fusion == "rrf":
            for rank, (key, _) in enumerate(ranking, 1):
                fused[key] = fused.get(key, 0.0) + 1.0 / (rrf_k + rank)
            continue
        weight = alpha if name == "vector" else 1.0 - alpha
        if not ranking:
            continue
        scores = np.array([s for _, s in ranking])
        low, span = scores.min(), scores.max() - scores.min()
        for key, score in ranking:
            normalised = (score - low) / span if span > 0 else 1.0
            fused[key] = fused.get(key, 0.0) + weight * normalised
    # Equal fused scores are ordered by the ranks themselves (vector first), never by storage order,
    # so a sharded collection orders ties exactly as a single one does.
    return sorted(fused.items(), key=lambda pair: (-pair[1], ranks[pair[0]]))
