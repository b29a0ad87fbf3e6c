"""See the latent space: 2-D/3-D projections, clusters with labels, and interpolation between items.

Projections (PCA, t-SNE from scikit-learn; UMAP from umap-learn) run on the whole collection or a
filtered, sampled subset (seeded), report their trustworthiness (how well they keep each point's
neighbours: 1 is perfect) and are cached in the collection folder until the collection changes.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.analysis.layers import CLUSTERS, write_layer
from latentsearch.errors import InvalidInputError, LatentSearchError
from latentsearch.fileio import fsync_replace, remove_stale_temp_files, writing
from latentsearch.limits import MAX_CLUSTERS, MAX_LABEL_WORDS, MAX_SAMPLE, MAX_SEED, MAX_STEPS, check_int
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
        max_colors: int | None = None,
    ) -> Any:
        """This projection of ``collection`` as an interactive plotly Figure, for a notebook to show
        inline (``fig.show()``, or as a cell's value): what ``write_map`` writes as HTML
        (``max_colors``: how many values of ``color_by`` get a colour, 20 by default)."""
        from latentsearch.analysis.plots import DEFAULT_MAX_COLORS, map_figure

        colors = DEFAULT_MAX_COLORS if max_colors is None else max_colors
        return map_figure(collection, self, color_by=color_by, path=path, title=title, max_colors=colors)


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


LABEL_TOKENS = r"(?u)\b[^\W\d_][^\W\d_]+\b"  # words of two letters or more, no digits
AUTO_DIMENSIONS = 5  # UMAP's output for density clustering (BERTopic's default)
AUTO_MIN_SIZE = 5  # smallest density cluster, whatever the collection's size
# A label word is at least this many times as common among its cluster's items as among the others':
# words the whole collection shares ("package", "files") name no cluster, however frequent.
DISTINCT_RATIO = 2.0


def class_tfidf_words(
    texts: list[str],
    labels: np.ndarray,
    top: int = 5,
    *,
    bigrams: bool = False,
    distinct_ratio: float = DISTINCT_RATIO,
    reduce_frequent_words: bool = True,
) -> dict[int, list[str]]:
    """Most distinctive words per cluster (``-1``, noise, gets none) by class-based TF-IDF as BERTopic
    defines it, ``tf(t, c) * log(1 + A / f(t))`` (A: mean words per cluster, f(t): the word's frequency
    over all clusters), with its ``reduce_frequent_words`` (the square root of tf; optional, as there) and English stop
    words. A word is kept for a cluster only when the share of the cluster's items containing it is
    at least ``distinct_ratio`` times the share of the other items' (``0`` keeps every word: plain
    c-TF-IDF). ``bigrams`` adds two-word phrases; no word appears twice in a label."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    classes = sorted(set(labels.tolist()) - {-1})
    if not classes or not any(t.strip() for t in texts):
        return {}
    vectorizer = CountVectorizer(
        stop_words="english", token_pattern=LABEL_TOKENS, ngram_range=(1, 2 if bigrams else 1), dtype=np.float64
    )
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # only stop words
        return {}
    rows = np.flatnonzero(labels != -1)
    member = sparse.csr_matrix(
        (np.ones(len(rows)), (np.searchsorted(classes, labels[rows]), rows)), shape=(len(classes), len(texts))
    )
    words_in = np.asarray((member @ counts).todense())  # words of each cluster
    items_with = np.asarray((member @ (counts > 0).astype(np.float64)).todense())  # its items containing each
    tf = words_in / np.maximum(words_in.sum(1, keepdims=True), 1)
    if reduce_frequent_words:
        tf = np.sqrt(tf)
    idf = np.log(1 + words_in.sum(1).mean() / np.maximum(words_in.sum(0), 1))
    scores = tf * idf
    if distinct_ratio > 0:
        sizes = np.asarray(member.sum(1))
        share_in = items_with / sizes
        share_out = (items_with.sum(0) - items_with) / np.maximum(len(texts) - sizes, 1)
        scores = np.where(share_in >= distinct_ratio * share_out, scores, 0.0)
    vocab = vectorizer.get_feature_names_out()
    out = {}
    for i, c in enumerate(classes):
        chosen: list[str] = []
        for j in np.argsort(-scores[i]):
            if len(chosen) == top or scores[i, j] <= 0:
                break
            term = str(vocab[j])
            if not any(_overlaps(term, other) for other in chosen):
                chosen.append(term)
        out[c] = chosen
    return out


def _overlaps(term: str, other: str) -> bool:
    """The terms share a word (``noto`` and ``noto sans``): a label does not say it twice."""
    return bool(set(term.split()) & set(other.split()))


def auto_cluster_labels(vectors: np.ndarray, metric: str, seed: int) -> np.ndarray:
    """Density clusters as BERTopic finds them: UMAP to :data:`AUTO_DIMENSIONS` dimensions (when the
    vectors have more; density is meaningless in hundreds of dimensions, where nearly every item
    was noise), then HDBSCAN with a minimum cluster size of 1% of the items (at least
    :data:`AUTO_MIN_SIZE`). Noise is ``-1``."""
    from sklearn.cluster import HDBSCAN

    n = len(vectors)
    reduced = vectors
    if vectors.shape[1] > AUTO_DIMENSIONS and n > AUTO_DIMENSIONS + 1:
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap-learn's notes on seeds and threads
            reduced = umap.UMAP(
                n_components=AUTO_DIMENSIONS,
                n_neighbors=min(15, n - 1),
                min_dist=0.0,
                metric="cosine" if metric == "cosine" else "euclidean",
                random_state=seed,
            ).fit_transform(vectors)
    min_size = min(max(AUTO_MIN_SIZE, n // 100), max(2, n // 2))
    return HDBSCAN(min_cluster_size=min_size, copy=True).fit_predict(reduced)


# --- interpolation ---------------------------------------------------------------------------------


@dataclass
class Step:
    """One point on the path between two items, at position ``t`` (0 at the start, 1 at the end), and the
    item shown there, never one of the ends: the item of the route (below) nearest to the point, or,
    when no route passes through other items, the nearest other item. ``score`` is its similarity to
    the point, ``to_start`` and ``to_end`` its similarities to the two ends (the collection's scores:
    cosine similarity, or negated Euclidean distance for l2); ``between`` is true when it is on the
    route, the shortest chain of nearest neighbours from one end to the other (Isomap's geodesic)."""

    t: float
    id: str
    score: float
    text: str | None
    to_start: float
    to_end: float
    between: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


ROUTE_NEIGHBOURS = 5  # edges of the route's neighbour graph per item (Isomap's default)
ROUTE_EXPANSIONS = 2_000  # items whose neighbours the route search reads at most
ROUTE_BATCH = 8  # items expanded per neighbour search


def neighbour_route(
    search: Callable[[np.ndarray], list[Any]], start: str, end: str, a: np.ndarray, b: np.ndarray
) -> list[str] | None:
    """The shortest chain of items from ``start`` to ``end`` in the directed graph joining each item
    to its :data:`ROUTE_NEIGHBOURS` nearest (edges weighted by Euclidean distance), found by A* with
    the straight-line distance to ``end`` as its estimate, expanding a few items per search. ``search``
    maps query vectors to their hits (with vectors). None when no chain is found within
    :data:`ROUTE_EXPANSIONS` items (the neighbour graph does not join them)."""
    vectors = {start: a, end: b}
    cost, previous, done = {start: 0.0}, {}, set()
    frontier = [(float(np.linalg.norm(a - b)), start)]
    while frontier and len(done) < ROUTE_EXPANSIONS:
        batch = []
        while frontier and len(batch) < ROUTE_BATCH:
            _, item = heapq.heappop(frontier)
            if item == end:
                frontier = []
                break
            if item not in done:
                done.add(item)
                batch.append(item)
        if not batch:
            break
        for item, hits in zip(batch, search(np.stack([vectors[i] for i in batch]))):
            for hit in hits:
                if hit.id == item:
                    continue
                vectors.setdefault(hit.id, hit.vector)
                reached = cost[item] + float(np.linalg.norm(vectors[item] - hit.vector))
                if reached < cost.get(hit.id, np.inf):
                    cost[hit.id], previous[hit.id] = reached, item
                    heapq.heappush(frontier, (reached + float(np.linalg.norm(hit.vector - b)), hit.id))
    if end not in previous:
        return None
    route = [end]
    while route[-1] != start:
        route.append(previous[route[-1]])
    return route[::-1]


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit vectors (linear when they are (anti)parallel)."""
    omega = np.arccos(np.clip(np.dot(a, b), -1.0, 1.0))
    if omega < 1e-6 or np.pi - omega < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


@dataclass
class _CacheEntry:
    folder: Path
    key: str
    seq: int
    sample: int | None
    params: dict[str, Any]


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
        entry = self._projection_entry(method, dim, where, sample, seed, params)
        writable = not self.read_only  # a read-only collection reads cached maps, writes none
        if entry.folder.exists() and writable:
            remove_stale_temp_files(entry.folder, ".*.tmp.npz")  # left by a process killed while caching
        if cache:
            cached = _read_cache(entry.folder / f"{entry.key}.npz", entry.seq)
            if cached is not None:
                return cached
        sample, params = entry.sample, entry.params
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
                _write_cache(entry.folder, entry.key, projection, entry.seq)
            except LatentSearchError as exc:  # a full disk or a read-only folder: the result stands
                log.warning("%s (projection not cached)", exc)
        return projection

    def cached_projection(
        self,
        method: str = "pca",
        *,
        dim: int = 2,
        where: Filter | str | None = None,
        sample: int | None = None,
        seed: int = 0,
        params: dict[str, Any] | None = None,
    ) -> Projection | None:
        """What :meth:`project` with these arguments would return from its cache, still current, or
        None when it would have to compute (nothing is computed). Bad arguments raise as there."""
        entry = self._projection_entry(method, dim, where, sample, seed, params)
        return _read_cache(entry.folder / f"{entry.key}.npz", entry.seq)

    def _projection_entry(
        self, method: str, dim: int, where: Filter | str | None, sample: int | None, seed: int, params: Any
    ) -> _CacheEntry:
        """The checked arguments of a projection and where its cached copy lies."""
        if method not in PROJECTIONS:
            raise InvalidInputError(f"unknown projection {method!r}: use one of {', '.join(PROJECTIONS)}")
        seed = check_int("seed", seed, 0, MAX_SEED)
        if dim not in (2, 3):
            raise InvalidInputError(f"dim must be 2 or 3, got {dim!r}")
        params = dict(params or {})
        sample = DEFAULT_SAMPLE[method] if sample is None else sample
        if sample is not None:
            sample = check_int("sample", sample, 1, MAX_SAMPLE)
        compile_filter(where)  # a bad filter is refused before it is hashed into the cache key
        key = _cache_key(method, dim, where, sample, seed, params)
        # Without a filter only the vectors matter: metadata updates (clusters, outlier scores) keep the
        # cached projection, so `clusters` then `map --color-by cluster` does not project twice.
        seq = self.vectors_seq if where is None else self.seq
        return _CacheEntry(self.path / CACHE_DIR, key, seq, sample, params)

    def clusters(
        self,
        n: int | str = 8,
        *,
        where: Filter | str | None = None,
        seed: int = 0,
        words: int = 5,
        examples: int = 3,
        bigrams: bool = False,
        write: bool = True,
    ) -> list[Cluster]:
        """Cluster the items: k-means with ``n`` clusters, or density clustering with ``n="auto"``
        (UMAP to 5 dimensions, then HDBSCAN; items in no dense region are noise, cluster ``-1``).

        Each cluster is labelled by its most distinctive words (:func:`class_tfidf_words`: words the
        whole collection shares are left out; ``bigrams`` adds two-word phrases) and shown with the
        items nearest its centre. With ``write``, the clusters become the collection's ``clusters``
        layer: each item's metadata gets ``cluster`` and ``cluster_label`` (filters and maps use them;
        result tables leave them out unless asked), replacing an earlier clustering everywhere.
        """
        if n != "auto":
            n = check_int("n", n, 1, MAX_CLUSTERS, hint=" (or 'auto' for density clustering)")
        seed = check_int("seed", seed, 0, MAX_SEED)
        words = check_int("words", words, 1, MAX_LABEL_WORDS)
        examples = check_int("examples", examples, 0, MAX_LABEL_WORDS)
        ids, vectors = self.matching_vectors(where)
        if n != "auto" and n > len(ids):
            raise InvalidInputError(f"cannot make {n} clusters of {len(ids)} items: lower -n")
        if len(ids) < 2:
            raise InvalidInputError(f"clustering needs at least 2 items, got {len(ids)}")
        if n == "auto":
            labels = auto_cluster_labels(vectors, self.metric, seed)
        else:
            from sklearn.cluster import KMeans

            labels = KMeans(n_clusters=n, random_state=seed, n_init=4).fit_predict(vectors)
        items = self.get(ids)
        top_words = class_tfidf_words([item.text or "" for item in items], labels, words, bigrams=bigrams)
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
            values = {item_id: {"cluster": int(c), "cluster_label": names[int(c)]} for item_id, c in zip(ids, labels)}
            method = "umap+hdbscan" if n == "auto" else "kmeans"
            write_layer(self, CLUSTERS, values, {"method": method, "clusters": len(set(labels.tolist()) - {-1})})
        return sorted(result, key=lambda c: (c.cluster == -1, -c.size))

    def interpolate(self, start: str, end: str, *, steps: int = 8, where: Filter | str | None = None) -> list[Step]:
        """Walk from item ``start`` to item ``end`` in ``steps`` equal steps (spherical for cosine
        collections). Each :class:`Step` shows an item other than the ends: on the route between them
        (the shortest chain of nearest neighbours, :func:`neighbour_route`) when one passes through
        other items, so a walk between distant items goes through the items in between; else the item
        nearest to the point, with ``between`` false (nothing lies between the two). ``where``
        restricts both to the items matching it."""
        steps = check_int("steps", steps, 2, MAX_STEPS)  # before any work: a huge path is refused at once
        a, b = self.vectors_of([start, end])
        ts = np.linspace(0, 1, steps)
        points = np.stack([slerp(a, b, t) if self.metric == "cosine" else (1 - t) * a + t * b for t in ts])
        points = points.astype(np.float32)
        if self.metric == "cosine":
            points /= np.linalg.norm(points, axis=1, keepdims=True)

        def neighbours(vectors: np.ndarray) -> list[Any]:
            return self.search_batch(vectors, k=ROUTE_NEIGHBOURS + 1, where=where, include=["vector"])

        route = neighbour_route(neighbours, start, end, a, b) if start != end else None
        inner = self.get(route[1:-1], with_vectors=True) if route else []
        if inner:  # each point shows the route's item nearest to it
            scores = np.stack([similarity(self.metric, points, item.vector) for item in inner])
            shown = [(inner[i], float(scores[i, p])) for p, i in enumerate(scores.argmax(0))]
        else:
            found = self.search_batch(points, k=1, where=where, exclude=[start, end], include=["text", "vector"])
            shown = [(hits[0], hits[0].score) if hits else (None, 0.0) for hits in found]
        path = []
        for t, (item, score) in zip(ts, shown):
            if item is not None:
                to_start, to_end = similarity(self.metric, np.stack([a, b]), item.vector)
                path.append(Step(float(t), item.id, score, item.text, float(to_start), float(to_end), bool(inner)))
        return path


def similarity(metric: str, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Scores between each row and ``vector``, as the collection scores hits."""
    if metric == "l2":
        return -np.linalg.norm(rows - vector, axis=1)
    return rows @ vector
