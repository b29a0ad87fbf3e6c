"""One search request, validated in one place: Python, the CLI and HTTP all build a
:class:`SearchRequest`, and the server's request model is derived from its fields (their bounds and
descriptions live in each field's metadata), so a new option is added here once."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from latentsearch.errors import InvalidInputError
from latentsearch.limits import MAX_EF_SEARCH, MAX_K, MAX_NPROBE, MAX_RRF_K, check_int, check_text, check_tuning
from latentsearch.records import DEFAULT_INCLUDE, INCLUDE_FIELDS, check_include
from latentsearch.search.fusion import Fusion
from latentsearch.storage.filters import Filter, compile_filter

MODES = ("auto", "vector", "lexical", "hybrid")


def _option(default: Any, description: str, **bounds: Any) -> Any:
    """A request field: its default, what it means, and the bounds the server's schema states."""
    return field(default=default, metadata={"description": description, **bounds})


@dataclass(frozen=True)
class SearchRequest:
    """What to search for and how. Give exactly one of ``query`` (a text, or in Python an image: a
    path object or PIL image), ``vector`` or ``like`` (an item id: more like it, itself excluded).

    :meth:`validated` checks every field and returns the request with its values normalised; a bad
    value raises :class:`~latentsearch.errors.InvalidInputError` with a one-line reason.
    """

    query: Any = _option(None, "A text to search for.")
    vector: Any = _option(None, "A query vector, of the collection's dimension.")
    like: str | None = _option(None, "An item id: items like it (the item itself is left out).")
    k: int = _option(10, f"Number of results, 1 to {MAX_K:,}.", ge=1, le=MAX_K)
    where: Filter | str | None = _option(None, "A metadata filter: a dict, or an expression such as \"lang = 'en'\".")
    mode: str = _option(
        "auto",
        "auto (hybrid for a text query, with the collection's tuned fusion; vector for anything else), "
        "vector (k-NN), lexical (BM25 full text) or hybrid (both, fused).",
    )
    fusion: str | None = _option(
        None,
        "How hybrid search fuses its rankings: convex (weighted scores) or rrf (reciprocal rank); "
        "default: the collection's tuned fusion.",
    )
    alpha: float | None = _option(
        None, "The vector side's weight in fusion, 0 to 1; default: the collection's tuned weight.", ge=0.0, le=1.0
    )
    rrf_k: int = _option(60, "The rank offset of reciprocal rank fusion.", ge=0, le=MAX_RRF_K)
    explain: bool = _option(False, "Fill each hit's details with every mode's rank, score and contribution.")
    ef_search: int | None = _option(None, "HNSW search breadth (more: better recall, slower).", ge=1, le=MAX_EF_SEARCH)
    nprobe: int | None = _option(None, "IVF lists visited (more: better recall, slower).", ge=1, le=MAX_NPROBE)
    include: Sequence[str] | None = _option(
        None,
        f"What each hit carries beside its id and score: any of {', '.join(INCLUDE_FIELDS)} "
        f"(default: {', '.join(f for f in INCLUDE_FIELDS if f in DEFAULT_INCLUDE)}; [] for ids and scores only).",
    )

    @property
    def text(self) -> str | None:
        """The query when it is a text."""
        return self.query if isinstance(self.query, str) else None

    @property
    def needs_encoder(self) -> bool:
        """True when running this request runs the collection's model: a text query searched by
        meaning (auto, vector or hybrid mode), or an image query; lexical search, vectors and ``like`` need
        none."""
        return self.query is not None and (self.mode != "lexical" or is_image(self.query))

    def fusion_for(self, tuned: Fusion) -> Fusion:
        """The fusion this request runs: ``tuned`` (the collection's), with the request's own ``fusion``
        and ``alpha`` in its place where they are given."""
        if self.fusion is None and self.alpha is None and self.rrf_k == tuned.rrf_k:
            return tuned
        method = tuned.method if self.fusion is None else self.fusion
        weight = tuned.weight if self.alpha is None else self.alpha
        return Fusion(method, weight, self.rrf_k)

    def validated(self) -> SearchRequest:
        """This request checked and normalised (see the class docstring)."""
        given = [name for name in ("query", "vector", "like") if getattr(self, name) is not None]
        if len(given) != 1:
            raise InvalidInputError("give exactly one of query, vector or like (an item id)")
        k = check_int("k", self.k, 1, MAX_K)
        if self.mode not in MODES:
            raise InvalidInputError(f"unknown search mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.text is not None:
            check_text(self.text, "the query")
        if self.like is not None and not (isinstance(self.like, str) and self.like.strip()):
            raise InvalidInputError(f"like is an item id (a non-empty string), got {self.like!r}")
        if self.mode in ("lexical", "hybrid") and self.text is None and self.like is None:
            what = "an image" if is_image(self.query) else "a vector query"
            raise InvalidInputError(f"{self.mode} search needs a text query (or like=ID); {what} searches by vector")
        self.fusion_for(Fusion())  # a bad fusion, weight or rrf_k is refused here
        # A malformed filter is refused before any work; compiled once, for every mode that applies it.
        where = None if self.where is None else compile_filter(self.where)
        if not isinstance(self.explain, bool):
            raise InvalidInputError(f"explain is true or false, got {self.explain!r}")
        ef_search, nprobe = check_tuning(self.ef_search, self.nprobe)
        include = check_include(self.include)
        return dataclasses.replace(self, k=k, where=where, ef_search=ef_search, nprobe=nprobe, include=include)


HYBRID_DEPTH = 100  # candidates taken from each mode before fusing


def check_k(k: int) -> int:
    """Validate the number of results asked for (1 to :data:`~latentsearch.limits.MAX_K`)."""
    return check_int("k", k, 1, MAX_K)


def is_text_batch(queries: Any) -> bool:
    """A batch of text queries (a non-empty list of strings), as opposed to an array of vectors."""
    return isinstance(queries, (list, tuple)) and bool(queries) and all(isinstance(q, str) for q in queries)


def is_image(value: Any) -> bool:
    """An image query or example: a path object or a PIL image (a plain string is a text)."""
    return isinstance(value, os.PathLike) or type(value).__module__.startswith("PIL.")
