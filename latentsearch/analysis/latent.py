"""See the latent space: 2-D/3-D projections, clusters with labels, and interpolation between items.

Projections (PCA, t-SNE from scikit-learn; UMAP from umap-learn) run on the whole collection or a
filtered, sampled subset (seeded), report their trustworthiness (how well they keep each point's
neighbours: 1 is perfect) and are cached in the collection folder until the collection changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInputError, LatentSearchError
from latentsearch.fileio import fsync_replace, remove_stale_temp_files, writing
from latentsearch.limits import MAX_CLUSTERS, MAX_SAMPLE, MAX_SEED, MAX_STEPS, check_int
from latentsearch.storage.filters import Filter, compile_filter

PROJECTIONS = ("pca", "tsne", "umap")
DEFAULT_SAMPLE = {"pca": None, "tsne": 10_000, "umap": 50_000}  # cap for the slow methods
TRUST_SAMPLE = 2_000  # trustworthiness is O(n²): measured on a seeded sample
log = logging.getLogger("latentsearch")
CACHE_DIR = "projections"
StageFn = Callable[[str], None]


@dataclass
class Projection:
    """Coordinates of items in 2-D or 3-D."""

    ids: list[str]
    coords: np.ndarray
    method: str
    dim: int
    seed: int
    trustworthiness: float
    sampled_from: int  # items that matched the filter before sampling
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["coords"] = self.coords.tolist()
        return out

    def figure(
        self,
        collection: Any,
        *,
        color_by: str | None = None,
        path: list[Step] | None = None,
        title: str | None = None,
    ) -> Any:
        """This projection of ``collection`` as an interactive plotly Figure, for a notebook to show
        inline (``fig.show()``, or as a cell's value): what ``write_map`` writes as HTML."""
        from latentsearch.analysis.plots import map_figure

        return map_figure(collection, self, color_by=color_by, path=path, title=title)


def _cache_key(method: str, dim: int, where: Any, sample: int | None, seed: int, params: dict[str, Any]) -> str:
    text = json.dumps([method, dim, where, sample, seed, params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _quiet(_: str) -> None:
    return None


def _run(method: str, vectors: np.ndarray, dim: int, seed: int, params: dict[str, Any]) -> np.ndarray:
    n = len(vectors)
    try:
        if method == "pca":
            from sklearn.decomposition import PCA

            return PCA(n_components=dim, random_state=seed, **params).fit_transform(vectors)
        if method == "tsne":
            from sklearn.manifold import TSNE

            options = {"perplexity": min(30.0, (n - 1) / 3), "init": "pca", "random_state": seed, **params}
            return TSNE(n_components=dim, **options).fit_transform(vectors)
        import umap  # umap-learn: imported only here, it is slow to import

        options = {"n_neighbors": min(15, n - 1), "random_state": seed, "n_jobs": 1, **params}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap warns that a random_state disables parallelism
            return umap.UMAP(n_components=dim, **options).fit_transform(vectors)
    except TypeError as exc:
        raise InvalidInputError(f"bad {method} parameters {params}: {exc}") from None


def _trustworthiness(vectors: np.ndarray, coords: np.ndarray, seed: int) -> float:
    from sklearn.manifold import trustworthiness

    n = len(vectors)
    if n > TRUST_SAMPLE:
        keep = np.random.default_rng(seed).choice(n, size=TRUST_SAMPLE, replace=False)
        vectors, coords = vectors[keep], coords[keep]
        n = TRUST_SAMPLE
    return float(trustworthiness(vectors, coords, n_neighbors=max(1, min(5, n // 2 - 1))))


def _read_cache(path: os.PathLike[str], seq: int) -> Projection | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["seq"] != seq:
                return None  # the collection changed since
            return Projection(
                [str(i) for i in data["ids"]],
                data["coords"],
                meta["method"],
                meta["dim"],
                meta["seed"],
                meta["trustworthiness"],
                meta["sampled_from"],
                meta["params"],
            )
    except (OSError, KeyError, ValueError):
        return None


def _write_cache(folder: os.PathLike[str], key: str, projection: Projection, seq: int) -> None:
    from pathlib import Path

    folder = Path(folder)
    meta = {k: v for k, v in asdict(projection).items() if k not in ("ids", "coords")} | {"seq": seq}
    tmp = folder / f".{key}.{os.getpid()}.tmp.npz"
    with writing(folder.parent.name, folder, tmp):
        folder.mkdir(exist_ok=True)
        ids = np.array(projection.ids, dtype=str)
        np.savez(tmp, ids=ids, coords=projection.coords, meta=np.array(json.dumps(meta)))
        fsync_replace(tmp, folder / f"{key}.npz")


# --- clusters --------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """One cluster: its number, size, distinctive words and a few example items."""

    cluster: int
    size: int
    label: str
    words: list[str]
    examples: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def class_tfidf_words(texts: list[str], labels: np.ndarray, top: int = 5) -> dict[int, list[str]]:
    """Most distinctive words per cluster by class-based TF-IDF (as BERTopic defines it):
    ``tf(t, c) * log(1 + A / f(t))`` with A the mean number of words per cluster, f(t) the frequency of t
    over all clusters."""
    from sklearn.feature_extraction.text import CountVectorizer

    classes = sorted(set(labels.tolist()) - {-1})
    documents = [" ".join(t for t, lab in zip(texts, labels) if lab == c) for c in classes]
    if not any(d.strip() for d in documents):
        return {}
    try:
        vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b")
        counts = vectorizer.fit_transform(documents).toarray().astype(np.float64)
    except ValueError:  # only stop words
        return {}
    tf = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    idf = np.log(1 + counts.sum(1).mean() / np.maximum(counts.sum(0), 1))
    scores = tf * idf
    vocab = vectorizer.get_feature_names_out()
    return {c: [str(vocab[j]) for j in np.argsort(-scores[i])[:top] if scores[i, j] > 0] for i, c in enumerate(classes)}


# --- interpolation ---------------------------------------------------------------------------------


@dataclass
class Step:
    """One step on the path between two items: the position t and the item nearest to it."""

    t: float
    id: str
    score: float
    text: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit vectors (linear when they are (anti)parallel)."""
    omega = np.arccos(np.clip(np.dot(a, b), -1.0, 1.0))
    if omega < 1e-6 or np.pi - omega < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


class LatentSpaceMethods:
    """Projections, clusters and interpolation, for single and sharded collections alike: they use
    only ``path``, ``seq``, ``vectors_seq``, ``metric``, ``matching_vectors``, ``get``, ``vectors_of``, ``search_batch``
    and ``update_metadata``."""

    def project(
        self,
        method: str = "pca",
        *,
        dim: int = 2,
        where: Filter | str | None = None,
        sample: int | None = None,
        seed: int = 0,
        params: dict[str, Any] | None = None,
        cache: bool = True,
        stage: StageFn | None = None,
    ) -> Projection:
        """Project the collection's vectors (or those matching ``where``) to ``dim`` dimensions.

        ``sample`` caps the number of items (seeded by ``seed``); by default t-SNE takes at most 10,000 and
        UMAP 50,000. ``params`` go to the method (e.g. ``{"perplexity": 50}``, ``{"n_neighbors": 30}``).
        ``stage(message)`` is called as the work moves on.
        """
        if method not in PROJECTIONS:
            raise InvalidInputError(f"unknown projection {method!r}: use one of {', '.join(PROJECTIONS)}")
        seed = check_int("seed", seed, 0, MAX_SEED)
        if dim not in (2, 3):
            raise InvalidInputError(f"dim must be 2 or 3, got {dim!r}")
        params = dict(params or {})
        sample = DEFAULT_SAMPLE[method] if sample is None else sample
        if sample is not None:
            sample = check_int("sample", sample, 1, MAX_SAMPLE)
        seed = check_int("seed", seed, 0, MAX_SEED)
        compile_filter(where)  # a bad filter is refused before it is hashed into the cache key
        key = _cache_key(method, dim, where, sample, seed, params)
        folder = self.path / CACHE_DIR
        # Without a filter only the vectors matter: metadata updates (clusters, outlier scores) keep the
        # cached projection, so `clusters` then `map --color-by cluster` does not project twice.
        seq = self.vectors_seq if where is None else self.seq
        writable = not self.read_only  # a read-only collection reads cached maps, writes none
        if folder.exists() and writable:
            remove_stale_temp_files(folder, ".*.tmp.npz")  # left by a process killed while caching
        if cache:
            cached = _read_cache(folder / f"{key}.npz", seq)
            if cached is not None:
                return cached
        (stage or _quiet)("reading vectors")
        ids, vectors = self.matching_vectors(where)
        total = len(ids)
        if sample is not None and total > sample:
            keep = np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))
            ids, vectors = [ids[i] for i in keep], vectors[keep]
        minimum = {"pca": dim + 1, "tsne": 6, "umap": 6}[method]
        if len(ids) < minimum:
            raise InvalidInputError(
                f"{method} needs at least {minimum} items, the collection (or filter) has {len(ids)}: "
                "add items or use pca"
            )
        (stage or _quiet)(f"projecting {len(ids):,} items with {method}")
        coords = _run(method, vectors, dim, seed, params)
        (stage or _quiet)("measuring trustworthiness")
        trust = _trustworthiness(vectors, coords, seed)
        projection = Projection(ids, coords.astype(np.float32), method, dim, seed, trust, total, params)
        if cache and writable:
            try:
                _write_cache(folder, key, projection, seq)
            except LatentSearchError as exc:  # a full disk or a read-only folder: the result stands
                log.warning("%s (projection not cached)", exc)
        return projection

    def clusters(
        self,
        n: int | str = 8,
        *,
        where: Filter | str | None = None,
        seed: int = 0,
        words: int = 5,
        examples: int = 3,
        write: bool = True,
    ) -> list[Cluster]:
        """Cluster the items: k-means with ``n`` clusters, or density clustering (HDBSCAN) with ``n="auto"``.

        Each cluster is labelled by its most distinctive words (class-based TF-IDF over its texts) and shown
        with the items nearest its centre. With ``write``, each item's metadata gets ``cluster`` (HDBSCAN's
        noise is -1) and ``cluster_label``.
        """
        if n != "auto":
            n = check_int("n", n, 1, MAX_CLUSTERS, hint=" (or 'auto' for density clustering)")
        seed = check_int("seed", seed, 0, MAX_SEED)
        ids, vectors = self.matching_vectors(where)
        if n != "auto" and n > len(ids):
            raise InvalidInputError(f"cannot make {n} clusters of {len(ids)} items: lower -n")
        if len(ids) < 2:
            raise InvalidInputError(f"clustering needs at least 2 items, got {len(ids)}")
        if n == "auto":
            from sklearn.cluster import HDBSCAN

            labels = HDBSCAN(min_cluster_size=max(2, min(15, len(ids) // 20)), copy=True).fit_predict(vectors)
        else:
            from sklearn.cluster import KMeans

            labels = KMeans(n_clusters=n, random_state=seed, n_init=4).fit_predict(vectors)
        items = self.get(ids)
        texts = [item.text or "" for item in items]
        top_words = class_tfidf_words(texts, labels, words)
        result = []
        for c in sorted(set(labels.tolist()) - {-1}) + ([-1] if -1 in labels else []):
            members = np.flatnonzero(labels == c)
            centre = vectors[members].mean(0)
            nearest = members[np.argsort(np.linalg.norm(vectors[members] - centre, axis=1))[:examples]]
            label = "noise" if c == -1 else ", ".join(top_words.get(c, [])) or f"cluster {c}"
            result.append(
                Cluster(
                    int(c),
                    len(members),
                    label,
                    top_words.get(c, []),
                    [{"id": ids[i], "text": items[i].text} for i in nearest],
                )
            )
        if write:
            names = {c.cluster: c.label for c in result}
            self.update_metadata(
                {item_id: {"cluster": int(c), "cluster_label": names[int(c)]} for item_id, c in zip(ids, labels)}
            )
        return sorted(result, key=lambda c: (c.cluster == -1, -c.size))

    def interpolate(self, start: str, end: str, *, steps: int = 8, where: Filter | str | None = None) -> list[Step]:
        """Walk from item ``start`` to item ``end`` in ``steps`` equal steps (spherical for cosine
        collections) and give the item nearest to each point on the way."""
        steps = check_int("steps", steps, 2, MAX_STEPS)  # before any work: a huge path is refused at once
        a, b = self.vectors_of([start, end])
        points = np.stack(
            [slerp(a, b, t) if self.metric == "cosine" else (1 - t) * a + t * b for t in np.linspace(0, 1, steps)]
        ).astype(np.float32)
        if self.metric == "cosine":
            points /= np.linalg.norm(points, axis=1, keepdims=True)
        nearest = self.search_batch(points, k=1, where=where)
        return [
            Step(float(t), hits[0].id, hits[0].score, hits[0].text)
            for t, hits in zip(np.linspace(0, 1, steps), nearest)
            if hits
        ]
