"""Search over a collection: vector k-NN with pre-filtering, BM25 lexical search, and their hybrid.

Hybrid search fuses the two rankings by reciprocal rank fusion (RRF, Cormack et al. 2009): an item's
score is the sum over modes of ``1 / (rrf_k + rank)``, so neither mode's score scale matters. A
weighted fusion of min-max-normalised scores is the alternative (``fusion="weighted"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from latentsearch.errors import InvalidInputError
from latentsearch.index.faiss_index import faiss_metric, is_compressed, to_scores
from latentsearch.limits import check_text
from latentsearch.records import Hit
from latentsearch.search.request import (
    HYBRID_DEPTH,
    MODES,
    check_fusion,
    check_k,
    check_tuning,
    is_image,
    is_text_batch,
)
from latentsearch.storage.filters import Filter, compile_filter
from latentsearch.storage.fulltext import fts_query

if TYPE_CHECKING:
    from latentsearch.collection import Collection

# A filter matching at most this many items is answered exactly over the matching vectors (read from
# SQLite): cheaper than a graph walk that must skip 99% of its nodes, and it always finds k results.
# Above it, the ANN index searches with an IDSelector (a flat index always does: it is exact anyway).
EXACT_SUBSET_LIMIT = 2_000
RERANK_FACTOR = 4  # compressed indexes fetch k*4 candidates and re-rank on the float vectors
SNIPPET_TOKENS = 24
SNIPPET_MARKS = ("**", "**")


def check_mode(mode: str, query: Any, like: str | None) -> str:
    """Validate the search mode; lexical and hybrid need a text query (or an item's text via like=ID)."""
    if mode not in MODES:
        raise InvalidInputError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
    if isinstance(query, str):
        check_text(query, "the query")
    if mode != "vector" and not (isinstance(query, str) or like is not None):
        raise InvalidInputError(f"{mode} search needs a text query (or like=ID); a vector query searches by vector")
    return mode


def check_request(
    query: Any, like: str | None, k: int, mode: str, fusion: str, alpha: float, rrf_k: int
) -> tuple[int, str]:
    """Validate a search's arguments (shared by single and sharded collections); returns ``(k, mode)``."""
    k = check_k(k)
    if (query is None) == (like is None):
        raise InvalidInputError("give exactly one of a query (text or vector) or like=ID")
    mode = check_mode(mode, query, like)
    check_fusion(fusion, alpha, rrf_k)
    return k, mode


def search(
    collection: Collection,
    query: Any = None,
    *,
    k: int = 10,
    where: Filter | str | None = None,
    like: str | None = None,
    mode: str = "vector",
    fusion: str = "rrf",
    alpha: float = 0.5,
    rrf_k: int = 60,
    explain: bool = False,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> list[Hit]:
    """Search; see :meth:`Collection.search`."""
    k, mode = check_request(query, like, k, mode, fusion, alpha, rrf_k)
    if mode != "vector" and is_image(query):
        raise InvalidInputError(f"{mode} search needs a text query; an image searches by vector")
    exclude, text = None, query if isinstance(query, str) else None
    if like is not None:
        item = collection.get([like], with_vectors=True)[0]  # one read: its text, vector and rowid
        exclude = collection.store.rowids_of([like])[like]
        text = item.text
    if isinstance(query, str) and mode != "lexical":
        collection.encoder  # noqa: B018 - fail on a missing/mismatched encoder before any work
    depth = k if mode != "hybrid" else max(k, HYBRID_DEPTH)
    rankings: dict[str, list[tuple[int, float]]] = {}
    if mode in ("vector", "hybrid"):
        collection.index  # noqa: B018 - opened first, while a model loading in the background (load_encoder) finishes
        vectors = item.vector[None, :] if like is not None else query_vector(collection, query)
        allowed = allowed_rowids(collection, where)
        if allowed is not None and exclude is not None:
            allowed = allowed[allowed != exclude]
        extra = 1 if exclude is not None and allowed is None else 0
        ranked = knn(collection, vectors, depth + extra, allowed, ef_search, nprobe)[0]
        rankings["vector"] = [(r, s) for r, s in ranked if r != exclude][:depth]
    match = fts_query(text) if text else None
    if mode in ("lexical", "hybrid"):
        if text is not None and match is None and mode == "lexical":
            raise InvalidInputError(f"lexical search needs words to match; the query {text!r} has none")
        where_sql, params = compile_filter(where)
        rankings["lexical"] = collection.store.lexical_search(match, depth, where_sql, params, exclude) if match else []
    ranked = fuse(rankings, fusion=fusion, alpha=alpha, rrf_k=rrf_k)[:k] if mode == "hybrid" else rankings[mode][:k]
    hits = hits_for(collection, ranked)
    if match:
        found = collection.store.snippets(match, [r for r, _ in ranked], SNIPPET_MARKS, SNIPPET_TOKENS)
        for hit, (rowid, _) in zip(hits, ranked):
            hit.snippet = found.get(rowid)
    if explain:
        explain_hits(hits, ranked, rankings, mode)
    return hits


def explain_hits(
    hits: Sequence[Hit], ranked: Sequence[tuple[Any, float]], rankings: dict[str, list[tuple[Any, float]]], mode: str
) -> None:
    """Fill each hit's ``details`` with its rank and score in every mode's ranking (and the fused score).
    ``ranked`` pairs each hit's key (rowid, or id on shards) with its final score; ``rankings`` holds
    every mode's ``(key, score)`` list, best first."""
    positions = {name: {key: (i + 1, s) for i, (key, s) in enumerate(rank)} for name, rank in rankings.items()}
    for hit, (key, score) in zip(hits, ranked):
        hit.details = {"mode": mode}
        for name, table in positions.items():
            rank, raw = table.get(key, (None, None))
            hit.details[f"{name}_rank"], hit.details[f"{name}_score"] = rank, raw
        if mode == "hybrid":
            hit.details["fused_score"] = score


def query_vector(collection: Collection, query: Any) -> np.ndarray:
    """A (1, dim) query vector from a text, an image (path object or PIL image) or a raw vector."""
    modality = collection.manifest.get("modality")
    if isinstance(query, str):
        if modality == "image":
            raise InvalidInputError(
                f"collection {collection.name!r} holds images encoded by {collection.encoder_name}, which cannot "
                "encode text: search with an image (--image), or use a joint text+image model (st:PATH)"
            )
        return collection.encode([query])
    if is_image(query):
        if modality not in ("image", "joint"):
            raise InvalidInputError(
                f"collection {collection.name!r} encodes {modality}, not images: search it with a text or a vector"
            )
        return collection.encode([query if not isinstance(query, os.PathLike) else Path(query)])
    return collection.prepare_vectors(query, expected=1)


def fuse(
    rankings: dict[str, list[tuple[int, float]]], *, fusion: str = "rrf", alpha: float = 0.5, rrf_k: int = 60
) -> list[tuple[int, float]]:
    """Fuse per-mode rankings (``{"vector": [(rowid, score)], "lexical": [...]}``), best first.

    ``rrf``: sum of ``1 / (rrf_k + rank)``. ``weighted``: ``alpha`` × the min-max-normalised vector score
    plus ``1 - alpha`` × the normalised lexical score (a mode that missed an item contributes 0).
    """
    fused: dict[int, float] = {}
    ranks: dict[int, list[float]] = {}  # each item's rank in every ranking, for breaking ties
    for position, (name, ranking) in enumerate(rankings.items()):
        for rank, (rowid, _) in enumerate(ranking, 1):
            ranks.setdefault(rowid, [math.inf] * len(rankings))[position] = rank
        if fusion == "rrf":
            for rank, (rowid, _) in enumerate(ranking, 1):
                fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (rrf_k + rank)
            continue
        weight = alpha if name == "vector" else 1.0 - alpha
        if not ranking:
            continue
        scores = np.array([s for _, s in ranking])
        low, span = scores.min(), scores.max() - scores.min()
        for rowid, score in ranking:
            normalised = (score - low) / span if span > 0 else 1.0
            fused[rowid] = fused.get(rowid, 0.0) + weight * normalised
    # Equal fused scores are ordered by the ranks themselves (vector first), never by storage order,
    # so a sharded collection orders ties exactly as a single one does.
    return sorted(fused.items(), key=lambda pair: (-pair[1], ranks[pair[0]]))


def search_batch(
    collection: Collection,
    queries: Any,
    *,
    k: int = 10,
    where: Filter | str | None = None,
    exclude: Sequence[str] = (),
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> list[list[Hit]]:
    """Vector search for many queries at once (one FAISS call, one SQLite read); see
    :meth:`Collection.search_batch`."""
    k = check_k(k)
    vectors = collection.encode(list(queries)) if is_text_batch(queries) else collection.prepare_vectors(queries)
    return vector_hits(collection, vectors, k, where, exclude, ef_search, nprobe)


def vector_hits(
    collection: Collection,
    vectors: np.ndarray,
    k: int,
    where: Filter | str | None = None,
    exclude: Sequence[str] = (),
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> list[list[Hit]]:
    """The hits of already prepared query vectors (what shards answer: the driver prepared them once)."""
    allowed = allowed_rowids(collection, where)
    skip = set(collection.store.rowids_of(list(exclude)).values()) if exclude else set()
    if allowed is not None and skip:
        allowed = allowed[~np.isin(allowed, list(skip))]
    extra = len(skip) if allowed is None else 0  # excluded items may take places in the unfiltered top k
    ranked = knn(collection, vectors, k + extra, allowed, ef_search, nprobe)
    if skip:
        ranked = [[(r, s) for r, s in ranking if r not in skip][:k] for ranking in ranked]
    rows = collection.store.rows_by_rowid(sorted({r for ranking in ranked for r, _ in ranking}))
    return [_hits(rows, ranking) for ranking in ranked]


def _hits(rows: dict[int, dict[str, Any]], ranking: Sequence[tuple[int, float]]) -> list[Hit]:
    """Hits for ``(rowid, score)`` pairs from rows read by rowid, in ranking order; a row deleted
    between the index search and the read is skipped. (Hot: one lookup per row and field.)"""
    out = []
    for rowid, score in ranking:
        row = rows.get(rowid)
        if row is not None:
            out.append(Hit(row["id"], float(score), row["text"], row["uri"], row["metadata"]))
    return out


def allowed_rowids(collection: Collection, where: Filter | str | None) -> np.ndarray | None:
    """Rowids matching a metadata filter, or None when there is no filter.

    The SQL scan is cached per filter until the collection changes: repeated filters (a facet, a
    tenant) then cost nothing; any write, from any process, changes the sequence and empties the cache.
    """
    if where is None or where == {}:
        return None
    sql, params = compile_filter(where)
    return collection.filter_cache(sql, params)


def knn(
    collection: Collection,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> list[list[tuple[int, float]]]:
    """k nearest rowids and scores for each query row, best first, optionally within ``allowed``."""
    ef_search, nprobe = check_tuning(ef_search, nprobe)  # every vector search of a collection passes here
    index = collection.index
    if allowed is not None:
        if len(allowed) == 0:
            return [[] for _ in range(len(queries))]
        if len(allowed) <= EXACT_SUBSET_LIMIT and index.factory != "Flat":
            return exact_knn(collection, queries, k, allowed)
    if index.ntotal == 0:
        return [[] for _ in range(len(queries))]
    compressed = is_compressed(index.factory)
    fetch = k * RERANK_FACTOR if compressed else k
    scores, labels = index.search(queries, fetch, allowed=allowed, ef_search=ef_search, nprobe=nprobe)
    if allowed is None and not compressed:  # the common case: every row as FAISS ranked it
        return [
            [(r, s) for r, s in zip(row_labels, row_scores) if r >= 0]
            for row_labels, row_scores in zip(labels.tolist(), scores.tolist())
        ]
    results = []
    for qi in range(len(queries)):
        found = labels[qi] >= 0
        if allowed is not None and found.sum() < min(k, len(allowed)):
            # The approximate walk ran out of allowed neighbours: answer this query exactly.
            results.append(exact_knn(collection, queries[qi : qi + 1], k, allowed)[0])
            continue
        rowids = labels[qi][found]
        if compressed:
            results.append(exact_knn(collection, queries[qi : qi + 1], k, rowids)[0])
        else:
            results.append(list(zip(rowids.tolist(), scores[qi][found].tolist())))
    return results


def exact_knn(collection: Collection, queries: np.ndarray, k: int, rowids: np.ndarray) -> list[list[tuple[int, float]]]:
    """Exact k-NN among the given rowids, on the float vectors stored in SQLite."""
    rowids = np.unique(np.asarray(rowids, dtype=np.int64))
    base = collection.store.vectors(rowids, collection.dim)
    distances, positions = faiss.knn(queries, base, min(k, len(rowids)), metric=faiss_metric(collection.metric))
    scores = to_scores(collection.metric, distances)
    return [
        [(int(rowids[p]), float(s)) for p, s in zip(positions[qi], scores[qi]) if p >= 0] for qi in range(len(queries))
    ]


def hits_for(collection: Collection, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
    """Load the items behind ``(rowid, score)`` pairs and make hits, keeping the order."""
    return _hits(collection.store.rows_by_rowid([r for r, _ in ranked]), ranked)
