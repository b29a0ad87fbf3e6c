"""Search over a collection, written once over the backend protocol: vector k-NN with a pre-filter,
BM25 lexical search, and their hybrid (fused by :mod:`latentsearch.search.fusion`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentsearch.backends.base import Ranking
from latentsearch.errors import InvalidInputError
from latentsearch.limits import MAX_K, check_int, check_tuning
from latentsearch.records import Hit, Hits, check_include
from latentsearch.search.fusion import explain_hits, fuse, score_floors
from latentsearch.search.request import HYBRID_DEPTH, SearchRequest, is_image, is_text_batch
from latentsearch.storage.filters import Filter, compile_filter
from latentsearch.storage.fulltext import fts_query, snippets_of

if TYPE_CHECKING:
    from latentsearch.collection import Collection


def search(collection: Collection, request: SearchRequest) -> Hits:
    """Run a search request; see :meth:`Collection.search`. A ranked item with no row to read
    (another thread's write or delete in flight in this process) makes it run again with writes held
    off, rather than come back short."""
    req = request.validated()
    hits, complete = _search(collection, req)
    if complete:
        return hits
    with collection.backend.without_writes():
        return _search(collection, req)[0]


def _search(collection: Collection, req: SearchRequest) -> tuple[Hits, bool]:
    """The hits of a validated request, and whether every ranked item was read."""
    backend = collection.backend
    text, exclude = req.text, []
    if req.like is not None:
        item = collection.get([req.like], with_vectors=True)[0]  # one read: its text and vector
        text, exclude = item.text, [req.like]
    match = fts_query(text) if text else None
    mode = resolved_mode(collection, req, match)
    if req.query is not None and mode != "lexical":
        collection.check_encoder()  # fail on a missing/mismatched encoder before any work
    fusion = req.fusion_for(collection.search_fusion) if mode == "hybrid" else None
    depth = max(req.k, HYBRID_DEPTH) if fusion is not None else req.k
    rankings: dict[str, Ranking] = {}
    plan = None
    if mode in ("vector", "hybrid"):
        backend.prepare_search()  # the index opens while a model loading in the background finishes
        vectors = item.vector[None, :] if req.like is not None else query_vector(collection, req.query, req.vector)
        rankings["vector"] = backend.knn(vectors, depth, req.where, exclude, req.ef_search, req.nprobe)[0]
        plan = backend.search_plan() if req.explain else None  # how a filtered vector search ran
    if mode in ("lexical", "hybrid"):
        if text is not None and match is None and mode == "lexical":
            raise InvalidInputError(f"lexical search needs words to match; the query {text!r} has none")
        rankings["lexical"] = backend.lexical(match, depth, req.where, req.like) if match else []
    floors = score_floors(collection.metric)
    ranked = fuse(rankings, fusion, floors)[: req.k] if fusion is not None else rankings[mode][: req.k]
    found = backend.hits([ranked], req.include)[0]
    complete = None not in found
    ranked, hits = _present(ranked, found)
    if req.include & {"text", "passage"}:
        cut_snippets(hits, match)
    if req.explain:
        explain_hits(hits, ranked, rankings, mode, fusion, floors)
        if plan is not None:
            for hit in hits:
                hit.details["plan"] = plan
    return Hits(hits), complete


def resolved_mode(collection: Collection, req: SearchRequest, match: str | None) -> str:
    """The mode a request runs in. ``auto`` is hybrid for a text query with words on a text collection,
    and vector for everything else: an image, a vector, ``like`` (more of an item is a question of
    meaning), a query of no words, an image collection (a joint model finds images by text), and a
    collection of precomputed vectors (whose refusal of a text names lexical mode)."""
    if req.mode != "auto":
        return req.mode
    fused = req.text is not None and req.like is None and match is not None and collection.modality == "text"
    return "hybrid" if fused else "vector"


def cut_snippets(hits: list[Hit], match: str | None) -> None:
    """For a query with words, give every hit a snippet of its matched passage (of its text when it
    has none). Both backends key every ranking at its passage, so a text hit always names one."""
    if match and hits:
        texts = [hit.passage.text if hit.passage is not None else hit.text or "" for hit in hits]
        for hit, snippet in zip(hits, snippets_of(match, texts)):
            hit.snippet = snippet


def _present(ranked: Ranking, found: list[Hit | None]) -> tuple[Ranking, list[Hit]]:
    """The ranking and its hits without the items deleted between ranking and reading."""
    kept = [(pair, hit) for pair, hit in zip(ranked, found) if hit is not None]
    return [pair for pair, _ in kept], [hit for _, hit in kept]


def search_batch(
    collection: Collection,
    queries: Any,
    *,
    k: int = 10,
    where: Filter | str | None = None,
    exclude: Sequence[str] = (),
    ef_search: int | None = None,
    nprobe: int | None = None,
    include: Sequence[str] | None = None,
) -> list[Hits]:
    """Vector search for many queries at once (one index call, one read of the hits); see
    :meth:`Collection.search_batch`."""
    k = check_int("k", k, 1, MAX_K)
    ef_search, nprobe = check_tuning(ef_search, nprobe)
    fields = check_include(include)
    if where is not None:
        where = compile_filter(where)  # refused here, before any encoding or any shard sees it; compiled once
    vectors = collection.encode(list(queries)) if is_text_batch(queries) else collection.prepare_vectors(queries)
    if not exclude:  # nothing left out: the hot path
        return [Hits(hits) for hits in collection.backend.nearest(vectors, k, ef_search, nprobe, fields, where)]
    rankings = collection.backend.knn(vectors, k, where, list(exclude), ef_search, nprobe)
    found = collection.backend.hits(rankings, fields)
    return [Hits(_present(ranking, hits)[1]) for ranking, hits in zip(rankings, found)]


def query_vector(collection: Collection, query: Any, vector: Any = None) -> np.ndarray:
    """A (1, dim) query vector from a text, an image (path object or PIL image) or a raw vector."""
    modality = collection.modality
    if vector is not None or not (isinstance(query, str) or is_image(query)):
        return collection.prepare_vectors(query if vector is None else vector, expected=1)
    if isinstance(query, str):
        if modality == "image":
            raise InvalidInputError(
                f"collection {collection.name!r} holds images encoded by {collection.encoder_name}, which cannot "
                "encode text: search with an image (--image), or use a joint text+image model (st:PATH)"
            )
        return collection.encode([query])
    if modality not in ("image", "joint"):
        raise InvalidInputError(
            f"collection {collection.name!r} encodes {modality}, not images: search it with a text or a vector"
        )
    return collection.encode([query if not isinstance(query, os.PathLike) else Path(query)])
