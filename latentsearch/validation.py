"""Checks of what users hand in: ids, texts and uris, metadata, vectors. Every write path runs them
before anything is written, so bad input gets one line and changes nothing."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInputError
from latentsearch.limits import check_json_value, check_text

FLOAT32 = np.dtype(np.float32)  # (native float32 arrays share this dtype object: others go the long way)
UNIT_TOLERANCE = 1e-6  # |norm - 1| below this: already normalised (float32 rounding is about 6e-8)
# The longest vector an l2 or inner-product collection takes, squared: a quarter of float32's largest
# value, so that no distance between two such vectors (at most (|a| + |b|)^2) overflows float32, where
# FAISS would rank nothing, silently. Lengths up to about 9.2e18.
MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 4


def query_checked_after(vector: Any, *, dim: int, metric: str) -> np.ndarray | None:
    """One query vector as a ``(1, dim)`` array that a search may take before it is checked, or None
    (check it first: :func:`prepare_vectors`). For l2 and inner-product collections a float32 vector
    of the right shape needs nothing else: a NaN or an infinity in it makes every distance FAISS
    returns non-finite (or leaves no result), and so does a length that overflows float32 distances,
    so an answer whose last score is finite proves the query sound, and only an answer without one is
    checked (:func:`prepare_vectors` on the query, which refuses it). A query just past the length
    limit whose distances all came out finite is answered, rightly. That spares the single-query hot
    path its one numpy call. A cosine query is checked first: it needs its norm."""
    if (
        metric != "cosine"
        and type(vector) is np.ndarray
        and vector.dtype is FLOAT32
        and vector.shape == (dim,)
        and vector.flags.c_contiguous
    ):
        return vector[None]
    return None


def prepare_vectors(vectors: Any, *, dim: int, metric: str, name: str, expected: int | None = None) -> np.ndarray:
    """Vectors as a contiguous float32 (n, dim) array: right dimension, finite, and L2-normalised for
    cosine; one-line errors otherwise."""
    # One float32 query: the search hot path, where every numpy call below would cost a share of a small
    # HNSW search. Its float32 dot product with itself is its squared norm, well within MAX_SQUARED_NORM
    # only when every element is finite (a NaN, an infinity, a vector too long or within a rounding of
    # the limit goes the long way, which tells them apart): a cosine query already of unit length (well
    # inside the tolerance, so the long way would keep it too) is kept as it is. One BLAS call (vdot:
    # dot would warn of an overflow), touching nothing but the vector; a float64 sum cost 2.5 times as much.
    plain = type(vectors) is np.ndarray and vectors.dtype is FLOAT32 and vectors.shape == (dim,)
    if plain and vectors.flags.c_contiguous:
        square = float(np.vdot(vectors, vectors))  # (NaN compares false: the long way)
        if square <= MAX_SQUARED_NORM / 2 and (metric != "cosine" or abs(square - 1) <= UNIT_TOLERANCE):
            return vectors[None]
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError("vectors must be numbers in a 2-D array of shape (n, dim)") from None
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise InvalidInputError(
            f"wrong vector dimension: got shape {tuple(np.shape(vectors))}, collection {name!r} stores {dim}-d vectors"
        )
    if expected is not None and matrix.shape[0] != expected:
        raise InvalidInputError(f"got {matrix.shape[0]} vectors for {expected} items")
    if not np.isfinite(matrix).all():  # (one check on the hot path; the row only for the message)
        bad = ~np.isfinite(matrix).all(axis=1)
        raise InvalidInputError(f"vector #{int(np.argmax(bad))} contains NaN or infinity")
    squares = None
    if matrix.size and float(max(matrix.max(), -matrix.min())) ** 2 * dim > MAX_SQUARED_NORM:
        # Some vector may be too long for float32 distances: its exact length, in float64.
        squares = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)[:, None]
        if metric != "cosine" and (squares > MAX_SQUARED_NORM).any():
            row = int(np.argmax(squares[:, 0] > MAX_SQUARED_NORM))
            raise InvalidInputError(
                f"vector #{row} is too long for float32 distances (length {math.sqrt(squares[row, 0]):.3g}, "
                f"at most {math.sqrt(MAX_SQUARED_NORM):.3g}): scale the vectors down"
            )
    if metric == "cosine":
        # (A length beyond float32 is computed in float64: only the direction counts.)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True) if squares is None else np.sqrt(squares)
        if (norms == 0).any():
            raise InvalidInputError(
                f"vector #{int(np.argmax(norms[:, 0] == 0))} is all zeros and has no direction for cosine"
            )
        # A vector already of unit length (one exported from a collection, say) is kept bit for bit:
        # dividing by a norm one rounding away from 1 would change its last digits.
        unit = np.abs(norms - 1) <= UNIT_TOLERANCE
        if not unit.all():
            matrix = np.where(unit, matrix, matrix / norms)
    return np.ascontiguousarray(matrix, dtype=np.float32)


def check_metadata_updates(updates: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The ids and field dicts of ``{id: {field: value}}`` metadata updates, checked before any write."""
    if not isinstance(updates, Mapping):
        raise InvalidInputError("updates must be a dict of {id: {field: value}}")
    ids = check_ids(list(updates))
    return ids, check_metadata([updates[i] for i in ids], len(ids))


def check_ids(ids: Sequence[str], *, allow_duplicates: bool = False) -> list[str]:
    """Ids as a list: non-empty valid-Unicode strings, unique unless ``allow_duplicates``."""
    if isinstance(ids, str):
        raise InvalidInputError("ids must be a list of strings, not a single string")
    out = list(ids)
    seen: set[str] = set()
    for i, item_id in enumerate(out):
        if not isinstance(item_id, str) or not item_id.strip():
            raise InvalidInputError(f"id #{i} is {item_id!r}: ids must be non-empty strings")
        check_text(item_id, f"id #{i}")
        if not allow_duplicates and item_id in seen:
            raise InvalidInputError(f"duplicate id {item_id!r} in the input: ids must be unique")
        seen.add(item_id)
    return out


def _check_length(what: str, values: Sequence[Any] | None, n: int) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise InvalidInputError(f"{what} must be a list, not a single string")
    values = list(values)
    if len(values) != n:
        raise InvalidInputError(f"got {len(values)} {what} for {n} ids")
    return values


def check_texts(what: str, values: Sequence[Any] | None, n: int) -> list[Any] | None:
    """Texts or uris (paths allowed): one per id, each a valid-Unicode string or None."""
    out = _check_length(what, values, n)
    for i, value in enumerate(out or ()):
        if value is None:
            continue
        if what == "uris" and isinstance(value, os.PathLike):
            value = out[i] = os.fspath(value)
        if not isinstance(value, str):
            raise InvalidInputError(f"{what[:-1]} #{i} is a {type(value).__name__}, not a string")
        check_text(value, f"{what[:-1]} #{i}")
    return out


def check_metadata(metadata: Sequence[Mapping[str, Any] | None] | None, n: int) -> list[dict[str, Any]]:
    """One JSON-storable dict per item (``None`` entries and a missing list become empty dicts)."""
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a list with one dict per item")
    values = list(metadata)
    if len(values) != n:
        raise InvalidInputError(f"got {len(values)} metadata entries for {n} ids")
    out = []
    for i, meta in enumerate(values):
        if meta is None:
            meta = {}
        if not isinstance(meta, Mapping):
            raise InvalidInputError(f"metadata #{i} is a {type(meta).__name__}, not a dict")
        check_json_value(meta, f"metadata #{i}")  # depth, Unicode, 64-bit integers; before json.dumps recurses
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"metadata #{i} cannot be stored as JSON ({exc}): use strings, finite numbers, booleans, null"
            ) from None
        out.append(dict(meta))
    return out


def check_pages(pages: Sequence[Sequence[int] | None] | None, texts: list[Any] | None, n: int) -> list[Any] | None:
    """Page start offsets, one entry per text: None, or non-decreasing character offsets within the
    text, the first 0."""
    values = _check_length("pages", pages, n)
    if values is None:
        return None
    if texts is None:
        raise InvalidInputError("pages are character offsets into texts: pass the texts too")
    out: list[Any] = []
    for i, (starts, text) in enumerate(zip(values, texts)):
        if starts is None:
            out.append(None)
            continue
        if isinstance(starts, (str, bytes)) or not isinstance(starts, Sequence):
            raise InvalidInputError(f"pages #{i} is a {type(starts).__name__}, not a list of offsets")
        offsets = list(starts)
        bad = [o for o in offsets if isinstance(o, bool) or not isinstance(o, numbers.Integral)]
        offsets = [int(o) for o in offsets] if not bad else offsets
        # Equal neighbours are allowed: a page without text starts where the next one does.
        if bad or not offsets or offsets[0] != 0 or any(b < a for a, b in zip(offsets, offsets[1:])):
            raise InvalidInputError(
                f"pages #{i} must be increasing whole character offsets starting at 0, got {offsets[:5]!r}"
            )
        if text is not None and offsets[-1] > len(text):
            raise InvalidInputError(f"pages #{i} has an offset {offsets[-1]} beyond its text ({len(text)} characters)")
        out.append(offsets)
    return out
