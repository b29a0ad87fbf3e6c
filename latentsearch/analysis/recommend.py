"""Recommendations: nearest neighbours of examples, of a history, or of a user's learned vector.

Strategies for examples (as Qdrant defines them):

- ``average``: search near ``mean(positives) - negative_weight * mean(negatives)``.
- ``best_score``: gather the neighbours of every positive, then score each candidate by its best
  similarity to any positive, ``sigmoid(best_pos)``, or, when it is closer to a negative than to every
  positive, ``-sigmoid(best_neg)``; so a candidate near a negative example drops below all others.

Any list can be diversified by maximal marginal relevance (``diversity`` in 0..1: 0 is pure relevance).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentsearch.errors import InvalidInputError, ItemNotFoundError
from latentsearch.limits import MAX_K, check_text
from latentsearch.records import Hit, Hits
from latentsearch.search.engine import query_vector
from latentsearch.search.request import check_k
from latentsearch.storage.filters import Filter

if TYPE_CHECKING:
    from latentsearch.collection import Collection

Example = str | Mapping[str, Any] | np.ndarray | Sequence[float]
STRATEGIES = ("average", "best_score")
DEFAULT_HALF_LIFE = 30 * 24 * 3600.0  # seconds: a month-old interaction counts half
POOL_FACTOR = 10  # best_score and diversity re-rank a pool of k * 10 candidates (at least 100)


def resolve_examples(collection: Collection, examples: Sequence[Example] | None) -> tuple[np.ndarray, list[str]]:
    """Turn examples (item ids, ``{"id"|"text"|"vector": ...}`` dicts, or raw vectors) into vectors.

    Returns the vectors and the ids among the examples (which recommendations leave out).
    """
    if examples is None:
        return np.empty((0, collection.dim), np.float32), []
    if isinstance(examples, (str, Mapping)) or (isinstance(examples, np.ndarray) and examples.ndim == 1):
        examples = [examples]  # one example given bare
    vectors, ids = [], []
    for i, example in enumerate(examples):
        if isinstance(example, Mapping):
            if len(example) != 1 or next(iter(example)) not in ("id", "text", "image", "vector"):
                raise InvalidInputError(
                    f"example #{i} must be {{'id': ...}}, {{'text': ...}}, {{'image': path}} or {{'vector': [...]}}"
                )
            kind, value = next(iter(example.items()))
        elif isinstance(example, str):
            kind, value = "id", example
        else:
            kind, value = "vector", example
        if kind == "id":
            vectors.append(collection.vectors_of([value])[0])
            ids.append(value)
        elif kind in ("text", "image"):
            vectors.append(query_vector(collection, Path(value) if kind == "image" else value)[0])
        else:
            vectors.append(collection.prepare_vectors(value, expected=1)[0])
    matrix = np.stack(vectors) if vectors else np.empty((0, collection.dim), np.float32)
    return matrix.astype(np.float32), ids


def similarity(metric: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise similarity (higher is closer) between rows of ``a`` and ``b`` in a collection's metric."""
    if metric == "l2":
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return -np.sqrt(np.maximum(squared, 0))
    return a @ b.T


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + x / (1 + np.abs(x)))


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def recommend(
    collection: Collection,
    positive: Sequence[Example] | None = None,
    negative: Sequence[Example] | None = None,
    *,
    k: int = 10,
    strategy: str = "average",
    negative_weight: float = 0.5,
    where: Filter | str | None = None,
    exclude: Sequence[str] = (),
    exclude_examples: bool = True,
    diversity: float = 0.0,
) -> list[Hit]:
    """Items like the positive examples and unlike the negative ones; see the module docstring."""
    k = check_k(k)
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    diversity = _check_fraction("diversity", diversity)
    if not isinstance(negative_weight, (int, float)) or negative_weight < 0:
        raise InvalidInputError(f"negative_weight must be a number >= 0, got {negative_weight!r}")
    pos, pos_ids = resolve_examples(collection, positive)
    neg, neg_ids = resolve_examples(collection, negative)
    if len(pos) == 0:
        raise InvalidInputError("recommend needs at least one positive example (an item id, a text or a vector)")
    skip = set(exclude) | (set(pos_ids) | set(neg_ids) if exclude_examples else set())
    if strategy == "average":
        query = pos.mean(0) - (negative_weight * neg.mean(0) if len(neg) else 0)
        return _nearest(collection, query[None, :], k, where, skip, diversity)
    pool = _candidates(collection, pos, _pool(k), where, skip)
    if not pool:
        return []
    vectors = collection.vectors_of([h.id for h in pool])
    best_pos = similarity(collection.metric, vectors, pos).max(1)
    scores = _sigmoid(best_pos)
    if len(neg):
        best_neg = similarity(collection.metric, vectors, neg).max(1)
        scores = np.where(best_pos > best_neg, scores, -_sigmoid(best_neg))
    order = sorted(range(len(pool)), key=lambda n: (-scores[n], pool[n].id))
    return _finish(collection, [_rescored(pool[n], scores[n]) for n in order], k, diversity)


def recommend_for(
    collection: Collection,
    history: Sequence[str | tuple | Mapping[str, Any]],
    *,
    k: int = 10,
    half_life: float | dt.timedelta | None = None,
    now: float | dt.datetime | None = None,
    where: Filter | str | None = None,
    exclude_seen: bool = True,
    diversity: float = 0.0,
) -> list[Hit]:
    """Recommend from a history of interactions, recent ones weighing more.

    ``history`` entries are an item id, ``(id, weight)``, ``(id, weight, timestamp)`` or a dict with
    ``id`` and optional ``weight`` and ``timestamp`` (unix seconds or datetime). With timestamps, an
    interaction's weight halves every ``half_life`` (seconds or timedelta; default 30 days) before the
    latest interaction (or ``now``). The profile is the weighted mean of the items' vectors; items in
    the history are not recommended again unless ``exclude_seen`` is False.
    """
    entries = _parse_history(history)
    weights = np.array([w for _, w, _ in entries], dtype=np.float64)
    stamps = [t for _, _, t in entries]
    if any(t is not None for t in stamps):
        if any(t is None for t in stamps):
            raise InvalidInputError("give a timestamp for every history entry, or for none")
        seconds = np.array([_seconds(t) for t in stamps])
        reference = _seconds(now) if now is not None else seconds.max()
        life = half_life.total_seconds() if isinstance(half_life, dt.timedelta) else half_life or DEFAULT_HALF_LIFE
        if isinstance(life, bool) or not isinstance(life, (int, float)) or not 0 < life < 1e15:
            raise InvalidInputError(f"half_life must be positive, got {half_life!r}")
        weights = weights * np.power(0.5, np.maximum(reference - seconds, 0) / life)
    if weights.sum() <= 0:
        raise InvalidInputError("history weights sum to zero: give at least one positive weight")
    ids = [item_id for item_id, _, _ in entries]
    vectors = collection.vectors_of(ids)
    profile = (weights[:, None] * vectors).sum(0) / weights.sum()
    skip = set(ids) if exclude_seen else set()
    return _nearest(collection, profile[None, :], check_k(k), where, skip, _check_fraction("diversity", diversity))


def recommend_user(
    collection: Collection,
    user: str,
    *,
    k: int = 10,
    where: Filter | str | None = None,
    exclude_seen: bool = True,
    diversity: float = 0.0,
    blend: Collection | None = None,
    blend_weight: float = 0.5,
    half_life: float | dt.timedelta | None = None,
) -> list[Hit]:
    """Recommend for a user whose vector was learned from interactions (:func:`fit_interactions`).

    With ``blend`` (a content collection over the same item ids, e.g. MiniLM vectors of titles), the
    user's history also builds a content profile there (:func:`recommend_for`), and the two rankings
    are fused on z-scored scores: ``(1 - blend_weight) * collaborative + blend_weight * content``.
    """
    vector, history = collection.user_profile(user)
    if vector is None:
        raise ItemNotFoundError(
            f"unknown user {user!r} in collection {collection.name!r}: users come from fit-interactions"
        )
    k, diversity = check_k(k), _check_fraction("diversity", diversity)
    skip = {item for item, _ in history} if exclude_seen else set()
    if blend is None:
        return _nearest(collection, vector[None, :], k, where, skip, diversity)
    weight = _check_fraction("blend_weight", blend_weight)
    depth = _pool(k)
    collaborative = _nearest(collection, vector[None, :], depth, where, skip, 0.0)
    known = blend.existing_ids([item for item, _ in history])
    content_history = [(item, 1.0, ts) for item, ts in history if item in known]
    if any(ts is None for _, _, ts in content_history):
        content_history = [(item, 1.0) for item, _, _ in content_history]
    content = (
        recommend_for(blend, content_history, k=depth, where=where, exclude_seen=exclude_seen, half_life=half_life)
        if content_history
        else []
    )
    fused = _zscore_fuse({h.id: h.score for h in collaborative}, {h.id: h.score for h in content}, weight)
    by_id = {h.id: h for h in content} | {h.id: h for h in collaborative}
    ranked = [_rescored(by_id[i], s) for i, s in fused]
    if diversity > 0:  # MMR on the collaborative vectors of the fused candidates
        known = collection.existing_ids([h.id for h in ranked])
        ranked = [h for h in ranked if h.id in known]
    return _finish(collection, ranked, k, diversity)


def _zscore_fuse(first: dict[str, float], second: dict[str, float], weight: float) -> list[tuple[str, float]]:
    """Fuse two score maps on z-scores; an item missing from one map gets that map's lowest z-score."""

    def zscores(scores: dict[str, float]) -> dict[str, float]:
        if not scores:
            return {}
        values = np.array(list(scores.values()))
        std = values.std() or 1.0
        return {key: (value - values.mean()) / std for key, value in scores.items()}

    z1, z2 = zscores(first), zscores(second)
    floor1, floor2 = min(z1.values(), default=0.0), min(z2.values(), default=0.0)
    fused = {key: (1 - weight) * z1.get(key, floor1) + weight * z2.get(key, floor2) for key in z1.keys() | z2.keys()}
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))


def _parse_history(history: Sequence[Any]) -> list[tuple[str, float, Any]]:
    if isinstance(history, (str, Mapping)) or not history:
        raise InvalidInputError("history must be a non-empty list of item ids, (id, weight[, timestamp]) or dicts")
    entries = []
    shape = "is not an id, (id, weight[, timestamp]) or {'id', 'weight', 'timestamp'} dict"
    for i, entry in enumerate(history):
        if isinstance(entry, str):
            item, weight, timestamp = entry, 1.0, None
        elif isinstance(entry, Mapping) and "id" in entry and set(entry) <= {"id", "weight", "timestamp"}:
            item, weight, timestamp = entry["id"], entry.get("weight", 1.0), entry.get("timestamp")
        elif isinstance(entry, (tuple, list)) and len(entry) in (2, 3):
            item, weight, timestamp = entry[0], entry[1], entry[2] if len(entry) == 3 else None
        else:
            raise InvalidInputError(f"history entry #{i} ({_shown(entry)}) {shape}")
        if not isinstance(item, str) or not item:
            raise InvalidInputError(f"history entry #{i} has id {_shown(item)}: ids are non-empty strings")
        check_text(item, f"the id of history entry #{i}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise InvalidInputError(f"history entry #{i} has weight {_shown(weight)}: use a finite number >= 0")
        try:
            weight = float(weight)
        except OverflowError:  # an int too large for a float
            weight = math.inf
        if not math.isfinite(weight) or weight < 0:
            raise InvalidInputError(f"history entry #{i} has weight {_shown(weight)}: use a finite number >= 0")
        entries.append((item, weight, timestamp))
    return entries


def _shown(value: Any) -> str:
    """A value for an error message, cut short (a history entry can be any JSON)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _seconds(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e15:  # unix seconds
        return float(value)
    raise InvalidInputError(f"timestamp {_shown(value)} is not unix seconds (a finite number) or a datetime")


def _rescored(hit: Hit, score: float) -> Hit:
    return dataclasses.replace(hit, score=float(score))


def _nearest(
    collection: Collection, query: np.ndarray, k: int, where: Filter | str | None, skip: set[str], diversity: float
) -> list[Hit]:
    if collection.metric == "cosine":
        norm = np.linalg.norm(query)
        if norm == 0 or not np.isfinite(norm):
            raise InvalidInputError("the examples cancel out (their combined vector is zero): change the negatives")
        query = query / norm
    depth = _pool(k) if diversity > 0 else k
    hits = collection.search_batch(query.astype(np.float32), k=depth, where=where, exclude=sorted(skip))[0]
    return _finish(collection, hits, k, diversity)


def _pool(k: int) -> int:
    """Candidates re-ranked for ``k`` results: ``k * POOL_FACTOR`` (at least 100), within the search limit."""
    return min(max(k * POOL_FACTOR, 100), MAX_K)


def _candidates(
    collection: Collection, positives: np.ndarray, depth: int, where: Filter | str | None, skip: set[str]
) -> list[Hit]:
    """The neighbours of every positive example, each once (the first time it is found)."""
    found: dict[str, Hit] = {}
    for hits in collection.search_batch(positives, k=depth, where=where, exclude=sorted(skip)):
        for hit in hits:
            found.setdefault(hit.id, hit)
    return list(found.values())


def _finish(collection: Collection, ranked: list[Hit], k: int, diversity: float) -> list[Hit]:
    if diversity > 0 and len(ranked) > k:
        ranked = mmr(collection, ranked, k, diversity)
    return ranked[:k]


def mmr(collection: Collection, ranked: list[Hit], k: int, diversity: float) -> list[Hit]:
    """Maximal marginal relevance: pick, one at a time, the candidate maximising
    ``(1 - diversity) * relevance - diversity * max cosine similarity to those already picked``.

    Relevance is min-max normalised over the candidates so both terms share a 0..1 scale.
    """
    scores = np.array([h.score for h in ranked], dtype=np.float64)
    span = scores.max() - scores.min()
    relevance = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    vectors = collection.vectors_of([h.id for h in ranked]).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    picked: list[int] = []
    closest = np.full(len(ranked), -np.inf)  # max similarity of each candidate to the picked ones
    available = np.ones(len(ranked), dtype=bool)
    for _ in range(min(k, len(ranked))):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = np.where(available, (1 - diversity) * relevance - diversity * penalty, -np.inf)
        best = int(np.argmax(value))
        picked.append(best)
        available[best] = False
        closest = np.maximum(closest, vectors @ vectors[best])
    return [ranked[i] for i in picked]


class RecommendMethods:
    """``recommend`` and ``recommend_for`` for single and sharded collections alike: they use only
    ``search_batch`` (with ``exclude``), ``vectors_of``, ``prepare_vectors``, ``encode``, ``metric``,
    ``dim`` and, for learned users, ``user_profile``."""

    def recommend(
        self,
        positive: Sequence[Any] | None = None,
        negative: Sequence[Any] | None = None,
        *,
        user: str | None = None,
        k: int = 10,
        strategy: str = "average",
        negative_weight: float = 0.5,
        where: Filter | str | None = None,
        exclude: Sequence[str] = (),
        diversity: float = 0.0,
        blend: Any = None,
        blend_weight: float = 0.5,
    ) -> Hits:
        """Items like the ``positive`` examples and unlike the ``negative`` ones, or for a ``user``.

        Examples are item ids, raw vectors, or ``{"text": ...}`` / ``{"vector": ...}`` / ``{"id": ...}``.
        ``strategy``: ``average`` (search near mean(positives) - negative_weight * mean(negatives)) or
        ``best_score`` (each candidate scored by its best similarity to a positive, pushed below all
        others when it is closer to a negative). Examples and ``exclude`` ids are never recommended.
        ``diversity`` (0..1) re-ranks by maximal marginal relevance. ``user`` serves a user learned by
        :func:`latentsearch.fit_interactions` (what they saw is left out), optionally blended with a
        content collection (``blend``, weight ``blend_weight``).
        """
        if user is not None:
            if positive is not None or negative is not None:
                raise InvalidInputError("give either user= or positive/negative examples, not both")
            return Hits(
                recommend_user(
                    self, user, k=k, where=where, diversity=diversity, blend=blend, blend_weight=blend_weight
                )
            )
        found = recommend(
            self,
            positive,
            negative,
            k=k,
            strategy=strategy,
            negative_weight=negative_weight,
            where=where,
            exclude=exclude,
            diversity=diversity,
        )
        return Hits(found)

    def recommend_for(
        self,
        history: Sequence[Any],
        *,
        k: int = 10,
        half_life: float | None = None,
        now: float | None = None,
        where: Filter | str | None = None,
        exclude_seen: bool = True,
        diversity: float = 0.0,
    ) -> Hits:
        """Recommend from a history of ids, ``(id, weight)``, ``(id, weight, timestamp)`` or dicts, with
        recency decay (``half_life`` seconds, default 30 days) when timestamps are given; items in the
        history are left out. See :func:`latentsearch.analysis.recommend.recommend_for`.
        """
        found = recommend_for(
            self,
            history,
            k=k,
            half_life=half_life,
            now=now,
            where=where,
            exclude_seen=exclude_seen,
            diversity=diversity,
        )
        return Hits(found)
