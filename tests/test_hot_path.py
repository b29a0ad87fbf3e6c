"""The single-query hot path's shortcuts give what the general code gives, to the bit: scores made in
Python, the one-call finiteness check, FAISS called through its C++ entry point."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import latentsearch as ls
from latentsearch.errors import InvalidInputError
from latentsearch.index.faiss_index import search_raw
from latentsearch.index.specs import SMALL_ANSWER, score_lists, to_scores
from latentsearch.validation import prepare_vectors

from .conftest import random_vectors

distances = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 12)),
    elements=st.floats(-(2.0**-10), 2.0**127, width=32, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200, deadline=None)
@given(distances, st.sampled_from(["l2", "cosine", "ip"]))
def test_scores_made_in_python_are_numpy_s_to_the_bit(found, metric):
    assert found.size <= SMALL_ANSWER
    expected = to_scores(metric, found.copy()).tolist()
    got = score_lists(metric, found.copy())
    assert got == expected  # (Python floats: float32's value exactly, not a double's nearer one)
    assert [math.copysign(1, s) for row in got for s in row] == [math.copysign(1, s) for row in expected for s in row]
    assert all(type(s) is float for row in got for s in row)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, 8, elements=st.floats(width=32)))
def test_one_query_is_refused_exactly_when_it_is_not_finite(vector):
    if np.isfinite(vector).all():
        assert np.array_equal(prepare_vectors(vector, dim=8, metric="l2", name="c")[0], vector)
    else:
        with pytest.raises(InvalidInputError, match="NaN or infinity"):
            prepare_vectors(vector, dim=8, metric="l2", name="c")


def test_a_sum_beyond_float32_is_still_a_finite_query():
    vector = np.full(8, 3e38, dtype=np.float32)  # finite, but its float32 sum is not
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no overflow warning either)
        assert np.array_equal(prepare_vectors(vector, dim=8, metric="l2", name="c")[0], vector)


def test_the_raw_search_answers_as_faiss_s_own_and_refuses_what_it_cannot_read(home):
    import faiss

    vectors = random_vectors(200, 16, seed=6)
    index = faiss.IndexHNSWFlat(16, 8)
    index.add(vectors)
    expected = index.search(vectors[:5], 4)
    got = search_raw(index, np.ascontiguousarray(vectors[:5]), 4)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    for bad in (vectors[:5, :8].copy(), vectors[:5].astype(np.float64), np.asfortranarray(vectors[:5])):
        with pytest.raises(ValueError, match="C-contiguous float32 of 16 columns"):
            search_raw(index, bad, 4)


def test_single_and_batch_searches_agree_to_the_bit(home):
    vectors = random_vectors(300, 16, seed=7)
    col = ls.create("agree", encoder="precomputed", dim=16, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(300)], vectors=vectors)
    batch = col.search_batch(vectors[:20], k=7, include=[])  # numpy's scores (70 distances)
    for query, hits in zip(vectors[:20], batch):
        single = col.search(query, k=7, include=[])  # Python's
        assert [(h.id, h.score) for h in single] == [(h.id, h.score) for h in hits]
    col.close()
