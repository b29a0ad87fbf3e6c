"""The documented limits on input, and the checks every entry point (Python, CLI, HTTP) shares.

Every number a caller chooses has a range, every nested value a depth, and every string must be valid
Unicode (encodable as UTF-8: no lone UTF-16 surrogates such as ``"\\ud800"``) without NUL characters,
so that whatever a write accepts can be read back (and filtered on) through every interface. A value
outside them is refused with a one-line :class:`InvalidInputError` before anything is written. The
server's request models take their bounds from here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from latentsearch.errors import InvalidInputError

MAX_K = 10_000  # results of one search, recommendation, outlier listing or check
MAX_NESTING = 32  # levels of objects/arrays in metadata, and of $and/$or/$not/parentheses in filters
MAX_STEPS = 1_000  # points on an interpolation path (latent space and autoencoder)
MAX_EF_SEARCH = 10_000  # HNSW search depth per query
MAX_NPROBE = 65_536  # IVF lists visited per query
MAX_SAMPLE = 10_000_000  # items sampled for a map (projection)
MAX_COLORS = 24  # values of a map's colour field with a colour of their own (the palette's size)
MAX_CLUSTERS = 10_000  # k-means clusters
MAX_LABEL_WORDS = 100  # words in a cluster's label, and examples shown with it
MAX_RRF_K = 1_000_000  # reciprocal rank fusion constant
MAX_SEED = 2**32 - 1  # seeds of sampling, projections and k-means (NumPy's legacy seed range)
MAX_DIM = 65_536  # vector dimension of a collection
MAX_SHARDS = 1_024  # shards of a sharded collection
MAX_IMAGE_SIZE = 512  # side of an autoencoder's square images, in pixels
MAX_THUMBNAIL_SIZE = 1_024  # side of the JPEG thumbnails kept for image items, in pixels
MAX_GENERATED = 1_000  # images decoded at once by an autoencoder (samples)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # integers SQLite (and so metadata and filters) can hold


def check_int(name: str, value: Any, low: int, high: int, *, hint: str = "") -> int:
    """``value`` as an int if it is a whole number in ``[low, high]``, else a one-line error."""
    if type(value) is int and low <= value <= high:  # (every search checks k: the common case first)
        return value
    if isinstance(value, bool) or not isinstance(value, int) and not _is_numpy_int(value):
        raise InvalidInputError(f"{name} must be a whole number from {low:,} to {high:,}, got {value!r}{hint}")
    if not low <= value <= high:
        raise InvalidInputError(f"{name} must be from {low:,} to {high:,}, got {_short(value)}{hint}")
    return int(value)


def check_optional_int(name: str, value: Any, low: int, high: int) -> int | None:
    """:func:`check_int`, with ``None`` meaning "the default"."""
    return None if value is None else check_int(name, value, low, high)


def check_text(value: str, where: str, error: type[InvalidInputError] = InvalidInputError) -> str:
    """``value`` if it is valid Unicode without NUL characters, else a one-line error naming ``where``
    and the position: a lone surrogate cannot be encoded as UTF-8 (SQLite, JSON and HTTP could not give
    it back), and SQLite's JSON functions cut text at a NUL (a filter could never match it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(
            f"{where} is not valid Unicode: a lone surrogate {value[exc.start]!r} at character {exc.start + 1}; "
            "fix the text's encoding"
        ) from None
    if "\x00" in value:
        raise error(f"{where} contains a NUL character (U+0000) at character {value.index(chr(0)) + 1}: remove it")
    return value


def check_json_value(
    value: Any,
    where: str,
    error: type[InvalidInputError] = InvalidInputError,
    *,
    max_depth: int = MAX_NESTING,
    too_deep: str | None = None,
    floats: bool = True,
) -> None:
    """Check a JSON-like value (metadata, a filter) without recursion: objects and arrays nested at
    most ``max_depth`` levels, every string and key valid Unicode, every integer within 64 bits, every
    float finite. Types JSON cannot hold are left to the caller's own check (``json.dumps``).
    ``too_deep`` replaces the message of a value nested too deeply; ``floats=False`` leaves floats
    to a later, more specific check (a vector's NaN)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, _at(where, path), error)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                raise error(
                    f"{_at(where, path)} is {_short(node)}, outside 64-bit integers "
                    f"({INT64_MIN:,} to {INT64_MAX:,}): store it as a string or a float"
                )
        elif isinstance(node, float):
            if floats and not math.isfinite(node):
                raise error(f"{_at(where, path)} is {node}, which cannot be stored as JSON: use a number or null")
        elif isinstance(node, (Mapping, list, tuple)):
            if depth > max_depth:
                shown = f" (at {path})" if len(path) <= 60 else ""
                raise error(too_deep or f"{where} is nested deeper than {max_depth} levels{shown}: flatten it")
            if isinstance(node, Mapping):
                for key, child in node.items():
                    if isinstance(key, str):
                        check_text(key, f"the key {path + '.' if path else ''}{key!r} of {where}", error)
                    stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node))


def _at(where: str, path: str) -> str:
    return f"{where} field {path!r}" if path else where


def _short(value: int) -> str:
    text = f"{value:,}" if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
    return text


def _is_numpy_int(value: Any) -> bool:
    import numpy as np  # already imported by every caller that passes numpy integers

    return isinstance(value, np.integer)


def check_tuning(ef_search: int | None, nprobe: int | None) -> tuple[int | None, int | None]:
    """Validate the per-query index options (``None``: the index's default)."""
    return (
        check_optional_int("ef_search", ef_search, 1, MAX_EF_SEARCH),
        check_optional_int("nprobe", nprobe, 1, MAX_NPROBE),
    )
