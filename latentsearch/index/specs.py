"""Index specs: the friendly names of FAISS indexes, the factory string each becomes at a collection
size, and the checks that refuse an index that could never work, before a collection is created.
FAISS itself is imported only where an index is built."""

from __future__ import annotations

import itertools
import math
import operator
import re
from array import array
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInputError

INDEX_KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq", "sq8")
METRICS = ("cosine", "ip", "l2")  # ip: raw inner product, e.g. for matrix-factorisation vectors
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64
AUTO_FLAT_LIMIT = 50_000  # below this, exact search is fast enough and needs no tuning
PQ_TRAIN_MIN = 39 * 256  # FAISS wants 39 training points per centroid; PQ codebooks have 256


def validate_spec(spec: str) -> str:
    """Return a valid index spec (a kind name, or ``faiss:FACTORY`` for a raw factory string)."""
    if isinstance(spec, str) and (spec in INDEX_KINDS or (spec.startswith("faiss:") and len(spec) > 6)):
        return spec
    raise InvalidInputError(f"unknown index {spec!r}: use one of {', '.join(INDEX_KINDS)} or faiss:FACTORY_STRING")


def check_index(spec: str, dim: int, metric: str) -> str:
    """Refuse, before a collection is created, an index that could never work for ``dim``-d ``metric``
    vectors: an unknown kind, or a FAISS factory string FAISS cannot build (or, for an index that needs
    no training, cannot add to and search). Returns the spec."""
    validate_spec(spec)
    if not spec.startswith("faiss:"):
        return spec
    factory = spec[len("faiss:") :]
    try:
        index = new_faiss_index(factory, dim, metric)
        if index.is_trained:  # a trained-on-demand index (IVF, PQ) can only be tried with data
            vectors = np.random.default_rng(0).standard_normal((2, dim)).astype(np.float32)
            index.add_with_ids(vectors, np.array([1, 2], dtype=np.int64))
            index.search(vectors[:1], 1)
    except (RuntimeError, TypeError, ValueError) as exc:
        # FAISS messages start with the C++ function and file: keep what comes after the line number.
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        reason = re.sub(r"^.*?\.(?:cpp|h):\d+: ", "", reason)
        raise InvalidInputError(
            f"index {spec!r} cannot index {dim}-d {metric} vectors ({reason}): use one of "
            f"{', '.join(INDEX_KINDS)} or a FAISS factory string that works for this dimension"
        ) from None
    return spec


def factory_for(spec: str, dim: int, n: int) -> str:
    """FAISS factory string for an index spec at collection size ``n``.

    Trained indexes need data: below the size their training wants, the collection is served by an
    exact ``Flat`` index and moves to the requested kind once enough vectors exist.
    """
    if spec.startswith("faiss:"):
        return spec[len("faiss:") :]
    if spec == "auto":
        spec = "flat" if n < AUTO_FLAT_LIMIT else "hnsw"
    if spec == "flat":
        return "Flat"
    if spec == "hnsw":
        return f"HNSW{HNSW_M}"
    if spec == "sq8":
        return "SQ8" if n >= 1 else "Flat"
    nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))
    if spec == "ivf":
        return f"IVF{nlist},Flat" if n >= 39 * 16 else "Flat"
    if spec == "ivfpq":
        m = _pq_subquantizers(dim)
        return f"IVF{nlist},PQ{m}" if n >= PQ_TRAIN_MIN else "Flat"
    raise InvalidInputError(f"unknown index {spec!r}")


def _pq_subquantizers(dim: int) -> int:
    """Largest number of PQ sub-quantizers that divides ``dim`` with at least 4 dimensions each."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0 and m <= 64:
            return m
    return 1


def faiss_metric(metric: str) -> int:
    """The FAISS metric of a collection metric (cosine is inner product on normalised vectors)."""
    import faiss

    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def to_scores(metric: str, distances: np.ndarray) -> np.ndarray:
    """FAISS distances as scores where higher is better: similarities as they are, negated L2 distances
    (computed in place: ``distances`` is a search's own array, and a query saves three allocations)."""
    if metric == "l2":
        return np.negative(np.sqrt(np.maximum(distances, 0, out=distances), out=distances), out=distances)
    return distances


_ZEROS = itertools.repeat(0.0)
SMALL_ANSWER = 64  # distances below this count are made scores in Python (see score_lists)


def score_lists(metric: str, distances: np.ndarray) -> list[list[float]]:
    """:func:`to_scores` as lists of floats, one per query. A small answer (one query's ten distances)
    is converted in Python: after a graph walk has emptied the CPU's caches, each numpy call cost more
    than the loop. The square roots are the same to the bit: a double's correctly rounded sqrt, rounded
    to float32, is float32's correctly rounded sqrt (53 >= 2 * 24 + 2 bits)."""
    if metric != "l2" or distances.size > SMALL_ANSWER:
        return to_scores(metric, distances).tolist()
    sqrt = math.sqrt
    return [array("f", [-sqrt(d) if d > 0 else -0.0 for d in row]).tolist() for row in distances.tolist()]


def row_scores(metric: str, row: list[float]) -> Iterable[float]:
    """One query's distances (:func:`score_lists`' row, the same floats) as scores, made in C loops with
    no list between. Raises ValueError on a negative l2 distance (where score_lists gives -0.0). (Adding
    +0.0 first turns a distance of -0.0 into +0.0, whose score is -0.0 as score_lists gives; it changes
    no other float.)"""
    if metric != "l2":
        return row
    return map(operator.neg, array("f", map(math.sqrt, map(operator.add, row, _ZEROS))))


@lru_cache(maxsize=64)  # (read by every search: a cached answer costs no Python frame)
def is_compressed(factory: str) -> bool:
    """True when the index stores lossy codes, so results are re-ranked on the float vectors."""
    return "PQ" in factory or "SQ" in factory


def new_faiss_index(factory: str, dim: int, metric: str) -> Any:
    """An empty FAISS index for a factory string, taking rowids as ids: IVF indexes store ids
    natively (and support remove_ids); the others sit in an ``IndexIDMap2``."""
    import faiss

    index = faiss.index_factory(dim, factory, faiss_metric(metric))
    if factory.startswith("HNSW"):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = DEFAULT_EF_SEARCH
    if factory.startswith("IVF"):
        return index
    return faiss.IndexIDMap2(index)
