"""Plain records returned by the library: items and search hits."""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInputError

# What a search hit may carry beside its id and score (Chroma's ``include=`` convention): "text" is
# the item's text and URI, "metadata" its metadata, "passage" the matched passage (and the snippet cut
# from it), "vector" the item's stored vector. What is not included is not read.
INCLUDE_FIELDS = ("text", "metadata", "passage", "vector")
DEFAULT_INCLUDE: frozenset[str] = frozenset(("text", "metadata", "passage"))


_NOTHING: frozenset[str] = frozenset()


def check_include(include: Iterable[str] | str | None) -> frozenset[str]:
    """The fields a search reads into its hits: ``None`` gives :data:`DEFAULT_INCLUDE`; anything else
    is a list of :data:`INCLUDE_FIELDS` (or one comma-separated string of them; empty: ids and scores
    only). Raises :class:`InvalidInputError` naming an unknown field."""
    if include is None:
        return DEFAULT_INCLUDE
    if isinstance(include, list) and not include:  # ids only: the fastest search, asked for in a loop
        return _NOTHING
    if isinstance(include, frozenset) and include <= _KNOWN:
        return include
    if isinstance(include, str):
        include = [part.strip() for part in include.split(",") if part.strip()]
    try:
        fields = frozenset(include)
    except TypeError:  # not iterable, or of unhashable things
        raise InvalidInputError(
            f"include is a list of fields among {', '.join(INCLUDE_FIELDS)}, got {include!r}"
        ) from None
    unknown = sorted(map(str, fields - _KNOWN))
    if unknown:
        raise InvalidInputError(
            f"include names unknown field {unknown[0]!r}: choose among {', '.join(INCLUDE_FIELDS)} "
            "(ids and scores always come)"
        )
    return fields


_KNOWN = frozenset(INCLUDE_FIELDS)


@dataclass
class Item:
    """One stored item."""

    id: str
    kind: str
    text: str | None = None
    uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the vector as a list when present)."""
        out = asdict(self)
        out["vector"] = None if self.vector is None else self.vector.tolist()
        if self.vector is None:
            del out["vector"]
        return out


@dataclass
class Passage:
    """One passage of a document: ``text`` is the document's characters ``start:end`` (``end``
    exclusive), ``index`` its place among the document's passages (0 first), ``page`` the page it
    lies on (1-based; passages do not cross page breaks; PDFs, else None). In a search hit,
    ``score`` is the passage's own score for the query (cosine similarity, or BM25 when only lexical
    search found it) and ``rank`` its place among every passage that ranking ranked (None when the
    passage was picked after ranking)."""

    index: int
    start: int
    end: int
    text: str
    page: int | None = None
    score: float | None = None
    rank: int | None = None

    @classmethod
    def of(cls, text: str, index: int, span: tuple[int, int, int | None]) -> Passage:
        """Passage ``index`` of a document ``text``, from its ``(start, end, page)`` span."""
        start, end, page = span
        return cls(index, start, end, text[start:end], page)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``page``, ``score`` and ``rank`` only when set)."""
        return {key: value for key, value in asdict(self).items() if value is not None or key == "text"}


@dataclass(slots=True)  # no __dict__: half the objects a search makes, for the garbage collector to track
class Hit:
    """One search result: a document, ranked by its best passage. ``score`` is higher for better
    matches: cosine similarity (of the best passage), or the negated Euclidean distance for l2
    collections; in hybrid search, the fused score. ``passage`` says where in the text the match is
    (text items). ``snippet`` is the part of that passage around the query's words (matches between
    ``**``). ``details`` holds each mode's rank and score when asked for (``explain=True``).

    A search's ``include`` chooses what is read: a field left out stays ``None`` (``metadata`` too),
    and ``vector`` (the item's stored vector) is read only when included."""

    id: str
    score: float
    text: str | None = None
    uri: str | None = None
    metadata: dict[str, Any] | None = field(default_factory=dict)
    snippet: str | None = None
    details: dict[str, Any] | None = None
    passage: Passage | None = None
    vector: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``snippet``, ``details``, ``passage`` and ``vector`` only when set)."""
        out = asdict(self)
        out["passage"] = None if self.passage is None else self.passage.to_dict()
        out["vector"] = None if self.vector is None else self.vector.tolist()
        for optional in ("snippet", "details", "passage", "vector"):
            if out[optional] is None:
                del out[optional]
        return out

    def __repr__(self) -> str:
        """One readable line: the id, the score and what the hit carries (long texts cut)."""
        parts = [f"id={self.id!r}", f"score={self.score:.4f}"]
        shown = self.snippet or self.text or self.uri
        if shown:
            parts.append(f"text={_cut(shown, REPR_TEXT)!r}")
        if self.metadata:
            parts.append(f"metadata={_cut(repr(self.metadata), REPR_TEXT)}")
        if self.passage is not None:
            parts.append(
                f"passage={self.passage.index}" + (f" (page {self.passage.page})" if self.passage.page else "")
            )
        if self.vector is not None:
            parts.append(f"vector=<{len(self.vector)} floats>")
        return f"Hit({', '.join(parts)})"

    def _repr_html_(self) -> str:
        return hits_html([self])


REPR_TEXT = 60  # characters of a text or metadata a Hit's repr shows


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


_NONE = itertools.repeat(None)


def id_hits(ids: Iterable[str], scores: Iterable[float]) -> list[Hit]:
    """Hits of ids and scores only, in order. (The hot path of an ids-only search: ``map`` over the
    class makes them with no loop in Python.)"""
    return list(map(Hit, ids, scores, _NONE, _NONE, _NONE))


def found_only(ids: list[str | None], scores: list[float]) -> tuple[list[str], list[float]]:
    """``ids`` and ``scores`` without the places of no result (an id of None)."""
    if None not in ids:
        return ids, scores  # type: ignore[return-value]
    kept = [(i, s) for i, s in zip(ids, scores) if i is not None]
    return [i for i, _ in kept], [s for _, s in kept]


class Hits(list[Hit]):
    """Search results: a plain list of :class:`Hit` that a notebook shows as a table."""

    def _repr_html_(self) -> str:
        return hits_html(self)

    def to_dicts(self) -> list[dict[str, Any]]:
        """JSON-ready dicts of every hit."""
        return [hit.to_dict() for hit in self]


def hits_html(hits: Sequence[Hit]) -> str:
    """An HTML table of hits (rank, id, score, text or snippet, metadata as a small table), escaped."""
    if not hits:
        return "<p><i>no results</i></p>"
    rows = []
    for rank, hit in enumerate(hits, 1):
        text = hit.snippet or hit.text or hit.uri or ""
        text = html.escape(_cut(text, 200)).replace("**", "")  # (a snippet marks its matches with **)
        meta = "".join(
            f"<tr><td><b>{html.escape(str(k))}</b></td><td>{html.escape(_cut(str(v), 80))}</td></tr>"
            for k, v in (hit.metadata or {}).items()
        )
        rows.append(
            f"<tr><td>{rank}</td><td><code>{html.escape(hit.id)}</code></td><td>{hit.score:.4f}</td>"
            f"<td style='text-align:left'>{text}</td><td><table>{meta}</table></td></tr>"
        )
    head = "<tr><th>#</th><th>id</th><th>score</th><th>text</th><th>metadata</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"
