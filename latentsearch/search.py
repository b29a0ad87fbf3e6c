"""Vector search over a collection: pre-filtering, exact fall-backs and re-ranking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from .errors import InvalidInputError
from .filters import Filter, compile_filter
from .index import is_compressed
from .records import Hit

if TYPE_CHECKING:
    from .collection import Collection

# A filter matching at most this many items is answered exactly over the matching vectors: cheaper
# than a graph walk that must skip 99% of its nodes, and it always finds k results.
EXACT_SUBSET_LIMIT = 20_000
RERANK_FACTOR = 4  # compressed indexes fetch k*4 candidates and re-rank on the float vectors


def check_k(k: int) -> int:
    """Validate the number of results asked for."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive whole number, got {k!r}")
    return int(k)


def query_vectors(collection: Collection, query: Any, like: str | None) -> tuple[np.ndarray, str | None]:
    """Turn a search's query (text, vector or ``like`` id) into a (1, dim) array."""
    if (query is None) == (like is None):
        raise InvalidInputError("give exactly one of a query (text or vector) or like=ID")
    if like is not None:
        return collection.vectors_of([like]), like
    if isinstance(query, str):
        return collection.encode([query]), None
    return collection.prepare_vectors(query, expected=1), None


def search(
    collection: Collection,
    query: Any = None,
    *,
    k: int = 10,
    where: Filter | str | None = None,
    like: str | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> list[Hit]:
    """Vector search; see :meth:`Collection.search`."""
    k = check_k(k)
    vectors, exclude_id = query_vectors(collection, query, like)
    exclude = collection.store.rowids_of([exclude_id]).get(exclude_id) if exclude_id else None
    allowed = allowed_rowids(collection, where)
    if allowed is not None and exclude is not None:
        allowed = allowed[allowed != exclude]
    ranked = knn(collection, vectors, k + (exclude is not None and allowed is None), allowed, ef_search, nprobe)[0]
    ranked = [(rowid, score) for rowid, score in ranked if rowid != exclude][:k]
    return hits_for(collection, ranked)


def allowed_rowids(collection: Collection, where: Filter | str | None) -> np.ndarray | None:
    """Rowids matching a metadata filter, or None when there is no filter."""
    if where is None or where == {}:
        return None
    sql, params = compile_filter(where)
    return collection.store.rowids_matching(sql, params)


def knn(
    collection: Collection,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> list[list[tuple[int, float]]]:
    """k nearest rowids and scores for each query row, best first, optionally within ``allowed``."""
    if allowed is not None:
        if len(allowed) == 0:
            return [[] for _ in range(len(queries))]
        if len(allowed) <= EXACT_SUBSET_LIMIT:
            return exact_knn(collection, queries, k, allowed)
    index = collection.index
    if index.ntotal == 0:
        return [[] for _ in range(len(queries))]
    compressed = is_compressed(index.factory)
    fetch = k * RERANK_FACTOR if compressed else k
    scores, labels = index.search(queries, fetch, allowed=allowed, ef_search=ef_search, nprobe=nprobe)
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
    metric = faiss.METRIC_INNER_PRODUCT if collection.metric == "cosine" else faiss.METRIC_L2
    distances, positions = faiss.knn(queries, base, min(k, len(rowids)), metric=metric)
    scores = distances if collection.metric == "cosine" else -np.sqrt(np.maximum(distances, 0))
    return [
        [(int(rowids[p]), float(s)) for p, s in zip(positions[qi], scores[qi]) if p >= 0] for qi in range(len(queries))
    ]


def hits_for(collection: Collection, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
    """Load the items behind ``(rowid, score)`` pairs and make hits, keeping the order."""
    rows = collection.store.rows_by_rowid([r for r, _ in ranked])
    return [
        Hit(id=rows[r]["id"], score=float(s), text=rows[r]["text"], uri=rows[r]["uri"], metadata=rows[r]["metadata"])
        for r, s in ranked
        if r in rows  # a row deleted between the index search and this read is skipped
    ]
