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
from latentsearch.index.specs import SMALL_ANSWER, row_scores, score_lists, to_scores
from latentsearch.validation import MAX_SQUARED_NORM, prepare_vectors

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


def too_long(vector: np.ndarray) -> bool:
    """Whether a finite vector's length is beyond what float32 distances hold (float64: exactly)."""
    wide = vector.astype(np.float64)
    return float(np.dot(wide, wide)) > MAX_SQUARED_NORM


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, 8, elements=st.floats(width=32)))
def test_one_query_is_refused_exactly_when_it_is_not_finite_or_too_long(vector):
    if not np.isfinite(vector).all():
        with pytest.raises(InvalidInputError, match="NaN or infinity"):
            prepare_vectors(vector, dim=8, metric="l2", name="c")
    elif too_long(vector):
        with pytest.raises(InvalidInputError, match="too long for float32 distances"):
            prepare_vectors(vector, dim=8, metric="l2", name="c")
    else:
        assert np.array_equal(prepare_vectors(vector, dim=8, metric="l2", name="c")[0], vector)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_a_vector_too_long_for_float32_distances_is_refused_in_one_line(metric):
    vector = np.full(8, 3e38, dtype=np.float32)  # finite, but its float32 squared length is not
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no overflow warning either)
        with pytest.raises(InvalidInputError, match=r"vector #1 is too long .*scale the vectors down") as info:
            prepare_vectors(np.stack([np.ones(8, np.float32), vector]), dim=8, metric=metric, name="c")
        assert "\n" not in str(info.value)
        limit = np.full(8, np.sqrt(MAX_SQUARED_NORM / 8) * 0.999, dtype=np.float32)  # just within
        assert np.array_equal(prepare_vectors(limit, dim=8, metric=metric, name="c")[0], limit)


def test_a_cosine_vector_of_any_finite_length_keeps_its_direction():
    for value in (3e38, 1e19, 1e-3):
        vector = np.full(8, value, dtype=np.float32)
        vector[0] = -value
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            unit = prepare_vectors(vector, dim=8, metric="cosine", name="c")[0]
        expected = np.full(8, 1 / np.sqrt(8), dtype=np.float32)
        expected[0] *= -1
        np.testing.assert_allclose(unit, expected, rtol=1e-6)


def test_an_add_of_a_vector_too_long_is_refused_and_changes_nothing(tmp_path):
    col = ls.create("long", encoder="precomputed", dim=8, metric="l2", home=tmp_path)
    x = random_vectors(3, 8, seed=1)
    x[2, 3] = 1e20
    with pytest.raises(InvalidInputError, match="vector #2 is too long"):
        col.add(["a", "b", "c"], vectors=x)
    assert col.count() == 0
    col.close()


@pytest.mark.parametrize("through_proxy", [False, True])
def test_the_raw_search_answers_as_faiss_s_own_and_refuses_what_it_cannot_read(through_proxy, monkeypatch):
    import faiss

    from latentsearch.index import faiss_index

    if through_proxy:  # a FAISS build whose SWIG entry point is named otherwise
        monkeypatch.setattr(faiss_index, "_INDEX_SEARCH", None)
    vectors = random_vectors(200, 16, seed=6)
    queries = np.ascontiguousarray(vectors[:5])
    index = faiss.IndexHNSWFlat(16, 8)
    index.add(vectors)
    expected = index.search(queries, 4)
    got = search_raw(index, queries, 4, None, 16)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    params = faiss.SearchParametersHNSW()  # parameters reach FAISS: a selector of the even positions
    bitmap = np.packbits(np.arange(200) % 2 == 0, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # (kept alive by the name)
    params.efSearch, params.sel = 32, selector
    expected = index.search(queries, 4, params=params)
    got = search_raw(index, queries, 4, params, 16)
    assert np.array_equal(got[1], expected[1]) and (got[1] % 2 == 0).all()
    flat = faiss.IndexFlatL2(16)  # any index: FAISS's virtual call
    flat.add(vectors)
    assert np.array_equal(search_raw(flat, queries, 3, None, 16)[1], flat.search(queries, 3)[1])
    for bad in (vectors[:5, :8].copy(), vectors[:5].astype(np.float64), np.asfortranarray(vectors[:5])):
        with pytest.raises(ValueError, match="C-contiguous float32 of 16 columns"):
            search_raw(index, bad, 4, None, 16)


def test_a_unit_cosine_query_is_kept_to_the_bit_and_any_other_normalised_as_a_batch_is():
    rng = np.random.default_rng(3)
    for _ in range(200):
        vector = rng.normal(size=24).astype(np.float32) * np.float32(rng.choice([1e-3, 1.0, 7.0]))
        unit = (vector / np.linalg.norm(vector)).astype(np.float32)
        for query in (vector, unit, unit * np.float32(1 + 1e-6), unit * np.float32(1 - 3e-7)):
            alone = prepare_vectors(query, dim=24, metric="cosine", name="c")
            in_batch = prepare_vectors(np.stack([query, unit]), dim=24, metric="cosine", name="c")[:1]
            assert np.array_equal(alone, in_batch)
        assert np.array_equal(prepare_vectors(unit, dim=24, metric="cosine", name="c")[0], unit)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("index", ["hnsw", "flat"])
def test_single_and_batch_searches_agree_to_the_bit(home, metric, index):
    vectors = random_vectors(300, 16, seed=7)
    col = ls.create("agree", encoder="precomputed", dim=16, metric=metric, index=index, home=home)
    col.add([str(i) for i in range(300)], vectors=vectors)
    batch = col.search_batch(vectors[:20], k=7, include=[])  # numpy's scores (70 distances)
    full = col.search_batch(vectors[:20], k=7)  # scores beside the fields read from SQLite
    for query, hits, read in zip(vectors[:20], batch, full):
        single = col.search(query, k=7, include=[])  # one pass of C loops
        assert [(h.id, h.score) for h in single] == [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in read]
        assert all(type(h.score) is float and h.metadata is None and h.text is None for h in single)
    col.close()


def test_a_single_query_with_fewer_results_than_k_leaves_out_the_empty_places(home):
    vectors = random_vectors(5, 8, seed=8)
    col = ls.create("few", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add([f"v{i}" for i in range(5)], vectors=vectors)
    hits = col.search(vectors[2], k=10, include=[])
    assert [h.id for h in hits][0] == "v2" and sorted(h.id for h in hits) == [f"v{i}" for i in range(5)]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    col.close()


@settings(max_examples=200, deadline=None)
@given(distances, st.sampled_from(["l2", "cosine", "ip"]))
def test_one_query_s_scores_made_in_c_loops_are_score_lists_to_the_bit(found, metric):
    row = found[:1].tolist()[0]
    expected = score_lists(metric, found[:1].copy())[0]
    if metric == "l2" and min(row) < 0:
        with pytest.raises(ValueError):  # (the caller then takes score_lists, which gives -0.0)
            list(row_scores(metric, row))
    else:
        got = list(row_scores(metric, row))
        assert got == expected
        assert [math.copysign(1, s) for s in got] == [math.copysign(1, s) for s in expected]


@pytest.fixture
def two_threads():
    """FAISS on two OpenMP threads in this thread (what a 2-core machine starts with), restored after."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    yield
    faiss.omp_set_num_threads(before)


def test_one_thread_runs_the_call_on_one_thread_and_restores_only_this_thread_s_setting(two_threads):
    import threading

    import faiss

    from latentsearch.index.faiss_index import one_thread

    inside, release, seen = threading.Event(), threading.Event(), {}

    def search() -> int:
        inside.set()
        release.wait(timeout=30)
        return faiss.omp_get_max_threads()

    worker = threading.Thread(target=lambda: seen.update(threads=one_thread(search)))
    worker.start()
    assert inside.wait(timeout=30)
    seen["other thread, meanwhile"] = faiss.omp_get_max_threads()  # (OpenMP's setting is per thread)
    release.set()
    worker.join()
    assert seen == {"threads": 1, "other thread, meanwhile": 2}

    def fails() -> None:
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        one_thread(fails)
    assert faiss.omp_get_max_threads() == 2


@pytest.mark.parametrize(
    ("index", "where", "one_thread_searches"), [("flat", None, 1), ("hnsw", None, 0), ("hnsw", "b = 0", 1)]
)
def test_a_single_query_scan_runs_on_one_thread_and_a_batch_on_all(
    home, two_threads, monkeypatch, index, where, one_thread_searches
):
    """A flat index's scan and a filter's exact plan split one query over threads, which costs more
    than it saves (see one_thread); an HNSW walk does not split and is left alone, and a batch keeps
    FAISS's threads (it splits the queries)."""
    from latentsearch.backends import local
    from latentsearch.index import faiss_index

    calls, one_thread = [], faiss_index.one_thread

    def counting(search, *args, **kwargs):
        calls.append(search)
        return one_thread(search, *args, **kwargs)

    monkeypatch.setattr(faiss_index, "one_thread", counting)
    monkeypatch.setattr(local, "one_thread", counting)
    x = random_vectors(300, 8, seed=4)
    col = ls.create("threads", encoder="precomputed", dim=8, index=index, home=home)
    col.add([str(i) for i in range(300)], vectors=x, metadata=[{"b": i % 10} for i in range(300)])
    single = col.search(x[0], k=5, where=where)
    assert len(calls) == one_thread_searches
    batch = col.search_batch(x[:3], k=5, where=where)
    assert len(calls) == one_thread_searches  # (a batch: none more)
    assert [h.id for h in single] == [h.id for h in batch[0]]
    col.close()


@pytest.fixture(scope="module")
def unchecked_collections(tmp_path_factory):
    """l2 and inner-product collections of every index kind (IVF and IVF-PQ trained, SQ8 compressed;
    IVF-PQ l2 only), whose single unfiltered queries are checked after the search (see
    query_checked_after), and an empty one."""
    home = tmp_path_factory.mktemp("unchecked")
    found = {}
    for metric in ("l2", "ip"):
        for index in ("hnsw", "flat", "ivf", "ivfpq", "sq8"):
            if index == "ivfpq" and metric == "ip":
                continue  # (its training takes seconds; its re-ranking is the same code for both metrics)
            x = random_vectors(PQ_ROWS if index == "ivfpq" else 1_000, 8, seed=5)  # (IVF from 624 rows)
            col = ls.create(f"{index}-{metric}", encoder="precomputed", dim=8, metric=metric, index=index, home=home)
            col.add([str(i) for i in range(len(x))], vectors=x)
            found[index, metric] = col
    found["empty", "l2"] = ls.create("empty", encoder="precomputed", dim=8, metric="l2", home=home)
    yield found
    for col in found.values():
        col.close()


PQ_ROWS = 39 * 256  # enough for IVF-PQ's codebooks: the collections really are IVF, IVF-PQ


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, 8, elements=st.floats(width=32)),
    st.sampled_from(["hnsw", "flat", "ivf", "ivfpq", "sq8", "empty"]),
    st.sampled_from(["l2", "ip"]),
    st.sampled_from([[], None, ["vector"]]),
)
def test_a_query_checked_after_its_search_is_refused_exactly_when_it_is_not_finite(
    unchecked_collections, vector, index, metric, include
):
    """NaN or infinity anywhere in the query: the one-line error of every other search, for every index
    kind and field choice; a finite one is answered, unless it is too long for float32 distances, which
    its answer shows (then refused as every other search refuses it)."""
    col = unchecked_collections[index, "l2" if index in ("empty", "ivfpq") else metric]
    kinds = {"hnsw": "HNSW", "ivf": "IVF", "ivfpq": "IVF", "sq8": "SQ8"}
    assert col.backend.index.factory.startswith(kinds.get(index, ""))
    if np.isfinite(vector).all():
        try:
            hits = col.search(vector, k=5, include=include)
        except InvalidInputError as error:  # only a query too long for float32 distances
            assert too_long(vector) and "too long for float32 distances" in str(error)
            return
        if index == "empty":
            assert hits == []
        else:  # (one past the limit is answered only where its distances all came out finite)
            assert len(hits) == 5 and all(math.isfinite(h.score) for h in hits)
    else:
        with pytest.raises(InvalidInputError, match="NaN or infinity") as info:
            col.search(vector, k=5, include=include)
        assert "\n" not in str(info.value)
