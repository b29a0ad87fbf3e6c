"""Anomaly scores from latent distances, in the style of scikit-learn estimators (PyOD's conventions).

Normal items sit close to many neighbours; anomalies are far from theirs. Scorers:

- :class:`KNNScorer`: distance to the k-th nearest neighbour (or the mean of the k), from a FAISS
  neighbour graph (the collection's own index when it has one), never an O(n²) distance matrix.
- :class:`LOFScorer`: local outlier factor on the same neighbour graph.
- :class:`IsolationForestScorer`: scikit-learn's isolation forest on the vectors, a global detector.
- :class:`EnsembleScorer`: the average of the scorers' ranks (percentiles).

All follow one contract: ``fit(X or collection)`` sets ``train_scores_`` (leave-one-out scores of the
fitted items) and ``threshold_``; ``score_samples(X)`` returns anomaly scores where **higher means
more anomalous** (as in PyOD; scikit-learn's own ``score_samples`` is the other way round);
``decision_function(X) = score_samples(X) - threshold_`` (positive: flagged); ``predict(X)`` is 1 for
flagged, 0 for normal; ``p_values(X)`` are conformal p-values against the fitted scores.

Thresholds: ``contamination`` (the share of fitted items flagged), ``percentile`` (flag above this
percentile of the fitted scores) or ``fpr`` (flag when the conformal p-value is at most ``fpr``, so
that normal items like the fitted ones are flagged at that rate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.analysis.layers import OUTLIERS, write_layer
from latentsearch.backends.base import VectorTable
from latentsearch.errors import InvalidInputError
from latentsearch.limits import MAX_K, check_int
from latentsearch.search.engine import query_vector
from latentsearch.search.request import is_image

ProgressFn = Callable[[int, int], None]
METHODS = ("knn", "lof", "iforest", "ensemble", "reconstruction")
# Above this many vectors, an array's neighbour graph comes from HNSW instead of exact search: on
# Shuttle (49k) it is 3x faster with the same ROC-AUC (benchmarks/outliers.py).
EXACT_LIMIT = 20_000
BATCH = 4096


@dataclass
class NeighborGraph:
    """k nearest neighbours of each fitted item (itself excluded): Euclidean distances, positions."""

    distances: np.ndarray  # (n, k) ascending
    positions: np.ndarray  # (n, k) indices into the fitted items
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] = field(repr=False)

    def query(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest fitted items of new vectors: (distances, positions)."""
        return self.search(x, k)


@dataclass
class FitData:
    """What a scorer is fitted on: vectors, their ids, and how to search among them."""

    vectors: np.ndarray
    ids: list[str] | None
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    graphs: dict[int, NeighborGraph] = field(default_factory=dict)
    uris: list[str | None] | None = None  # image files of a collection's items, for reconstruction scores

    @classmethod
    def of_table(cls, table: VectorTable, name: str) -> FitData:
        """What a collection's backend holds (see :meth:`Backend.vector_table`), at least 3 items."""
        if len(table.ids) < 3:
            raise InvalidInputError(f"collection {name!r} has fewer than 3 items: too few to score outliers")
        search = table.search or _array_search(table.vectors)  # neighbours need a true distance
        return cls(table.vectors, table.ids, search, uris=table.uris)

    def graph(self, k: int, progress: ProgressFn | None = None) -> NeighborGraph:
        """The k-neighbour graph of the fitted items (computed once per k, shared by scorers)."""
        if k in self.graphs:
            return self.graphs[k]
        n = len(self.vectors)
        dists = np.empty((n, k), np.float32)
        pos = np.empty((n, k), np.int64)
        own = np.arange(n)
        for start in range(0, n, BATCH):
            d, p = self.search(self.vectors[start : start + BATCH], k + 1)
            block = own[start : start + BATCH, None]
            is_self = p == block
            # Drop the item itself; when it is not among the results (duplicates, ANN), drop the last.
            drop = np.where(is_self.any(1), is_self.argmax(1), k)
            keep = np.ones_like(p, dtype=bool)
            keep[np.arange(len(p)), drop] = False
            dists[start : start + BATCH] = d[keep].reshape(len(p), k)
            pos[start : start + BATCH] = p[keep].reshape(len(p), k)
            if progress:
                progress(min(start + BATCH, n), n)
        self.graphs[k] = NeighborGraph(dists, pos, self.search)
        return self.graphs[k]


def _array_search(vectors: np.ndarray) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """A k-NN search over the vectors; the index is built on first use (isolation forests never need it)."""
    import faiss

    built: list[faiss.Index] = []

    def search(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not built:
            if len(vectors) <= EXACT_LIMIT:
                index = faiss.IndexFlatL2(vectors.shape[1])
            else:
                index = faiss.IndexHNSWFlat(vectors.shape[1], 32)
                index.hnsw.efConstruction = 40
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            built.append(index)
        index = built[0]
        if isinstance(index, faiss.IndexHNSWFlat):
            index.hnsw.efSearch = max(64, 2 * k)
        d, p = index.search(np.ascontiguousarray(x, dtype=np.float32), min(k, index.ntotal))
        return np.sqrt(np.maximum(d, 0)), p

    return search


def fit_data(data: Any) -> FitData:
    """Vectors to fit on: a :class:`FitData`, a collection (its vectors, and its own neighbour search
    when that gives true distances), or a (n, dim) array."""
    if isinstance(data, FitData):
        return data
    table = getattr(getattr(data, "backend", None), "vector_table", None)  # a collection
    if table is not None:
        return FitData.of_table(table(), data.name)
    try:
        vectors = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    except (TypeError, ValueError):
        raise InvalidInputError("outlier scorers fit on a collection or a 2-D array of numbers") from None
    if vectors.ndim != 2 or len(vectors) < 3:
        raise InvalidInputError(f"need a 2-D array with at least 3 rows to fit on, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise InvalidInputError("the vectors to fit on contain NaN or infinity")
    return FitData(vectors, None, _array_search(vectors))


class OutlierScorer:
    """Base class: thresholds, predictions and p-values on top of ``_fit_scores``/``_score``."""

    def __init__(
        self, *, contamination: float | None = None, percentile: float | None = None, fpr: float | None = None
    ):
        chosen = [
            name
            for name, v in (("contamination", contamination), ("percentile", percentile), ("fpr", fpr))
            if v is not None
        ]
        if len(chosen) > 1:
            raise InvalidInputError(f"give one threshold, not {' and '.join(chosen)}")
        if contamination is None and percentile is None and fpr is None:
            contamination = 0.01
        for name, value, low, high in (
            ("contamination", contamination, 0.0, 0.5),
            ("percentile", percentile, 0.0, 100.0),
            ("fpr", fpr, 0.0, 1.0),
        ):
            if value is not None and (isinstance(value, bool) or not low < float(value) < high):
                raise InvalidInputError(f"{name} must be between {low:g} and {high:g} (exclusive), got {value!r}")
        self.contamination, self.percentile, self.fpr = contamination, percentile, fpr

    # subclasses implement these two
    def _fit_scores(self, data: FitData, progress: ProgressFn | None) -> np.ndarray:
        raise NotImplementedError

    def _score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, data: Any, *, progress: ProgressFn | None = None) -> OutlierScorer:
        """Fit on a collection or an array; sets ``train_scores_``, ``threshold_`` and ``labels_``."""
        data = data if isinstance(data, FitData) else fit_data(data)
        self.data_ = data
        self.n_samples_fit_ = len(data.vectors)
        self.ids_ = data.ids
        self.train_scores_ = np.asarray(self._fit_scores(data, progress), dtype=np.float64)
        self._sorted = np.sort(self.train_scores_)
        n = self.n_samples_fit_
        if self.fpr is not None:
            # Conformal: flag s when (1 + #{train >= s}) / (n + 1) <= fpr, i.e. s above the m-th largest.
            m = int(np.floor(self.fpr * (n + 1))) - 1
            self.threshold_ = float(self._sorted[n - 1 - m]) if m >= 0 else float("inf")
            self.threshold_inclusive_ = True
        else:
            q = 100 * (1 - self.contamination) if self.percentile is None else self.percentile
            self.threshold_ = float(np.percentile(self.train_scores_, q))
            self.threshold_inclusive_ = False
        self.labels_ = self._flag(self.train_scores_)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "train_scores_"):
            raise InvalidInputError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _vectors(self, x: Any) -> np.ndarray:
        self._check_fitted()
        try:
            x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInputError("vectors to score must be numbers") from None
        if x.ndim == 1:
            x = x[None, :]
        dim = self.data_.vectors.shape[1]
        if x.ndim != 2 or x.shape[1] != dim:
            raise InvalidInputError(f"wrong vector dimension: got shape {x.shape}, the scorer was fitted on {dim}-d")
        if not np.isfinite(x).all():
            raise InvalidInputError("vectors to score contain NaN or infinity")
        return np.ascontiguousarray(x)

    def score_samples(self, x: Any) -> np.ndarray:
        """Anomaly scores of new vectors (higher is more anomalous), against the fitted items."""
        return np.asarray(self._score(self._vectors(x)), dtype=np.float64)

    def decision_function(self, x: Any) -> np.ndarray:
        """``score_samples - threshold_``: positive for vectors that would be flagged."""
        return self.score_samples(x) - self.threshold_

    def _flag(self, scores: np.ndarray) -> np.ndarray:
        flagged = scores >= self.threshold_ if self.threshold_inclusive_ else scores > self.threshold_
        return flagged.astype(np.int64)

    def predict(self, x: Any) -> np.ndarray:
        """1 for vectors flagged as outliers, 0 for normal ones."""
        return self._flag(self.score_samples(x))

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """Conformal p-values of scores: ``(1 + #{fitted scores >= s}) / (n + 1)``."""
        self._check_fitted()
        greater = len(self._sorted) - np.searchsorted(self._sorted, scores, side="left")
        return (1 + greater) / (len(self._sorted) + 1)

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """Percentile (0-100) of scores among the fitted items' scores."""
        self._check_fitted()
        return 100.0 * np.searchsorted(self._sorted, scores, side="right") / len(self._sorted)


class KNNScorer(OutlierScorer):
    """Distance to the k-th nearest neighbour (``aggregate="kth"``) or the mean of the k nearest."""

    def __init__(self, k: int = 10, *, aggregate: str = "kth", **threshold: Any) -> None:
        super().__init__(**threshold)
        self.k = _check_k(k)
        if aggregate not in ("kth", "mean"):
            raise InvalidInputError(f"aggregate must be 'kth' or 'mean', got {aggregate!r}")
        self.aggregate = aggregate

    def _reduce(self, dists: np.ndarray) -> np.ndarray:
        return dists[:, -1] if self.aggregate == "kth" else dists.mean(1)

    def _fit_scores(self, data: FitData, progress: ProgressFn | None) -> np.ndarray:
        _check_enough(data, self.k)
        return self._reduce(data.graph(self.k, progress).distances)

    def _score(self, x: np.ndarray) -> np.ndarray:
        dists, _ = self.data_.search(x, self.k)
        return self._reduce(dists)


class LOFScorer(OutlierScorer):
    """Local outlier factor (Breunig et al. 2000) on the k-neighbour graph."""

    def __init__(self, k: int = 10, **threshold: Any) -> None:
        super().__init__(**threshold)
        self.k = _check_k(k)

    def _lrd(self, dists: np.ndarray, positions: np.ndarray) -> np.ndarray:
        reach = np.maximum(dists, self.k_distance_[positions])
        return 1.0 / (reach.mean(1) + 1e-10)

    def _fit_scores(self, data: FitData, progress: ProgressFn | None) -> np.ndarray:
        _check_enough(data, self.k)
        graph = data.graph(self.k, progress)
        self.k_distance_ = graph.distances[:, -1].astype(np.float64)
        self.lrd_ = self._lrd(graph.distances, graph.positions)
        return self.lrd_[graph.positions].mean(1) / self.lrd_

    def _score(self, x: np.ndarray) -> np.ndarray:
        dists, positions = self.data_.search(x, self.k)
        return self.lrd_[positions].mean(1) / self._lrd(dists, positions)


class IsolationForestScorer(OutlierScorer):
    """scikit-learn's isolation forest on the vectors (a global detector; needs no neighbours)."""

    def __init__(self, n_estimators: int = 100, *, random_state: int = 0, **threshold: Any) -> None:
        super().__init__(**threshold)
        self.n_estimators = n_estimators
        self.random_state = random_state

    def _fit_scores(self, data: FitData, progress: ProgressFn | None) -> np.ndarray:
        from sklearn.ensemble import IsolationForest

        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state, n_jobs=1)
        self.forest_.fit(data.vectors)
        if progress:
            progress(len(data.vectors), len(data.vectors))
        return -self.forest_.score_samples(data.vectors)

    def _score(self, x: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(x)


class EnsembleScorer(OutlierScorer):
    """Rank average: the mean over scorers of each score's percentile among that scorer's fitted scores."""

    def __init__(self, scorers: list[OutlierScorer] | None = None, *, k: int = 10, **threshold: Any) -> None:
        super().__init__(**threshold)
        self.scorers = scorers if scorers is not None else [KNNScorer(k), LOFScorer(k), IsolationForestScorer()]

    def _fit_scores(self, data: FitData, progress: ProgressFn | None) -> np.ndarray:
        for scorer in self.scorers:
            scorer.fit(data, progress=progress)
        return np.mean([s.percentiles(s.train_scores_) for s in self.scorers], axis=0)

    def _score(self, x: np.ndarray) -> np.ndarray:
        return np.mean([s.percentiles(s._score(x)) for s in self.scorers], axis=0)


class ReconstructionScorer(OutlierScorer):
    """Reconstruction error of an autoencoder collection's images (``ae:PATH`` encoders): images unlike
    those the autoencoder learned from reconstruct badly. Scores need the images, not their vectors."""

    def __init__(self, encoder: Any, **threshold: Any) -> None:
        super().__init__(**threshold)
        if not hasattr(encoder, "reconstruction_error"):
            raise InvalidInputError(
                f"the reconstruction method needs an autoencoder collection (encoder ae:PATH), not {encoder.name!r}"
            )
        self.encoder = encoder

    def _fit_scores(self, data: FitData, progress: ProgressFn | None) -> np.ndarray:
        if not data.uris or any(u is None for u in data.uris):
            raise InvalidInputError("reconstruction scores need every item's image file (its uri)")
        return self.images_scores([Path(u) for u in data.uris], progress=progress)

    def images_scores(self, images: list[Any], *, progress: ProgressFn | None = None) -> np.ndarray:
        """Reconstruction errors of images (paths or PIL images); ``progress(done, total)`` per batch."""
        return np.asarray(self.encoder.reconstruction_error(images, progress=progress), dtype=np.float64)

    def _score(self, x: np.ndarray) -> np.ndarray:
        raise InvalidInputError("reconstruction scores need images, not vectors: check image files instead")


def make_scorer(method: str = "knn", *, k: int = 10, **threshold: Any) -> OutlierScorer:
    """A scorer by name: ``knn``, ``lof``, ``iforest`` or ``ensemble``."""
    if method == "knn":
        return KNNScorer(k, **threshold)
    if method == "lof":
        return LOFScorer(k, **threshold)
    if method == "iforest":
        return IsolationForestScorer(**threshold)
    if method == "ensemble":
        return EnsembleScorer(k=k, **threshold)
    raise InvalidInputError(f"unknown outlier method {method!r}: use one of {', '.join(METHODS)}")


def _check_k(k: int) -> int:
    return check_int("k", k, 1, MAX_K)


def _check_enough(data: FitData, k: int) -> None:
    if len(data.vectors) <= k:
        raise InvalidInputError(f"k={k} needs more than {k} items to fit on, got {len(data.vectors)}: lower k")


# --- reports ---------------------------------------------------------------------------------------


@dataclass
class OutlierResult:
    """One scored item: its anomaly score, where that score falls among the collection's, and why."""

    id: str | None
    score: float
    percentile: float
    p_value: float
    flagged: bool
    neighbors: list[dict[str, Any]]  # nearest normal items: {"id", "distance"}
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def explain(
    scorer: OutlierScorer, scores: np.ndarray, vectors: np.ndarray, *, n_neighbors: int = 5, self_positions=None
) -> list[tuple[float, float, bool, list[dict[str, Any]]]]:
    """Percentile, p-value, flag and nearest *normal* fitted items of each scored vector."""
    data = scorer.data_
    depth = min(len(data.vectors), n_neighbors * 3 + 1)
    dists, positions = data.search(vectors, depth)
    flagged = scorer._flag(scores)
    out = []
    for i, score in enumerate(scores):
        neighbors = []
        for d, p in zip(dists[i], positions[i]):
            if p < 0 or (self_positions is not None and p == self_positions[i]) or scorer.labels_[p]:
                continue
            neighbors.append({"id": data.ids[p] if data.ids else int(p), "distance": float(d)})
            if len(neighbors) == n_neighbors:
                break
        out.append(
            (
                float(scorer.percentiles(np.array([score]))[0]),
                float(scorer.p_values(np.array([score]))[0]),
                bool(flagged[i]),
                neighbors,
            )
        )
    return out


def report_fitted(
    scorer: OutlierScorer,
    texts_of: Callable[[list[str]], dict[str, str | None]],
    top: int | None = None,
    flagged_only: bool = True,
    neighbors: int = 5,
) -> list[OutlierResult]:
    """Results for a scorer's fitted items, most anomalous first, with explanations; ``texts_of(ids)``
    gives the texts of the reported items only."""
    scores = scorer.train_scores_
    order = np.argsort(-scores, kind="stable")
    if flagged_only:
        order = order[scorer.labels_[order] == 1]
    if top is not None:
        order = order[: check_int("top", top, 0, MAX_K)]
    details = explain(scorer, scores[order], scorer.data_.vectors[order], n_neighbors=neighbors, self_positions=order)
    texts = texts_of([scorer.ids_[i] for i in order]) if scorer.ids_ else {}
    return [
        OutlierResult(scorer.ids_[i], float(scores[i]), pct, p, flag, near, texts.get(scorer.ids_[i]))
        for i, (pct, p, flag, near) in zip(order, details)
    ]


class OutlierMethods:
    """``outliers`` and ``check`` for single and sharded collections alike: they use only
    ``outlier_scorer``, ``get``, ``update_metadata``, ``prepare_vectors``, ``encode`` and ``manifest``."""

    def outliers(
        self,
        method: str = "knn",
        *,
        k: int = 10,
        contamination: float | None = None,
        percentile: float | None = None,
        fpr: float | None = None,
        top: int | None = None,
        flagged_only: bool = True,
        neighbors: int = 5,
        write: bool = False,
        progress: ProgressFn | None = None,
    ) -> list[OutlierResult]:
        """Score every item; return the flagged ones (or all, ``flagged_only=False``), most anomalous
        first, each with its score, percentile, p-value and nearest normal neighbours.

        ``write=True`` stores ``outlier_score`` and ``outlier`` (bool) in every item's metadata, so
        filters and maps can use them (``where="outlier_score > 0.8"``): the collection's ``outliers``
        layer, which result tables leave out unless asked and a later run replaces.
        """
        if top is not None:
            top = check_int("top", top, 0, MAX_K)  # before fitting, and before anything is written
        scorer = self.outlier_scorer(
            method, k=k, contamination=contamination, percentile=percentile, fpr=fpr, progress=progress
        )
        if write:  # the collection's outliers layer (see latentsearch.analysis.layers)
            values = {
                item: {"outlier_score": float(score), "outlier": bool(flag)}
                for item, score, flag in zip(scorer.ids_, scorer.train_scores_, scorer.labels_)
            }
            write_layer(self, OUTLIERS, values, {"method": method})
        return report_fitted(scorer, lambda ids: {it.id: it.text for it in self.get(ids)}, top, flagged_only, neighbors)

    def check(
        self,
        inputs: Sequence[Any] | np.ndarray,
        *,
        method: str = "knn",
        k: int = 10,
        contamination: float | None = None,
        percentile: float | None = None,
        fpr: float | None = None,
        neighbors: int = 5,
    ) -> list[OutlierResult]:
        """Score new texts or vectors against the collection (novelty detection) without adding them.

        Each result says whether the input would be flagged, its score, percentile among the
        collection's own scores, conformal p-value, and its nearest normal items.
        """
        if isinstance(inputs, str) or is_image(inputs):
            inputs = [inputs]
        texts = None
        if isinstance(inputs, np.ndarray) or (len(inputs) and not (isinstance(inputs[0], str) or is_image(inputs[0]))):
            vectors = self.prepare_vectors(inputs)
        else:
            inputs = list(inputs)
            vectors = np.concatenate([query_vector(self, x) for x in inputs]) if inputs else None
            texts = [x if isinstance(x, str) else str(x) for x in inputs]
        scorer = self.outlier_scorer(method, k=k, contamination=contamination, percentile=percentile, fpr=fpr)
        if method == "reconstruction":
            if texts is None:
                raise InvalidInputError("reconstruction scores need images (paths or PIL images), not vectors")
            scores = scorer.images_scores(inputs)
        else:
            scores = scorer.score_samples(vectors)
        details = explain(scorer, scores, vectors, n_neighbors=neighbors)
        return [
            OutlierResult(None, float(score), pct, p, flag, near, texts[i] if texts else None)
            for i, (score, (pct, p, flag, near)) in enumerate(zip(scores, details))
        ]
