"""``include=``: a search reads only the fields asked for, and the ranking never depends on them."""

from __future__ import annotations

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.errors import InvalidInputError

from .conftest import random_vectors, topic_items
from .test_cli import run
from .test_passages import COOKING, QUERY, report

CHOICES = ([], ["text"], ["metadata"], ["passage"], ["vector"], ["text", "metadata", "passage", "vector"])


@pytest.fixture
def library(home, topic_vectors):
    """The topic corpus and one long document (several passages), on MiniLM."""
    ids, texts, metadata = topic_items()
    col = ls.create("library", home=home)
    col.add(ids, texts, vectors=topic_vectors, metadata=metadata)
    col.add(["report", "cake"], [report(), COOKING], metadata=[{"kind": "report"}, {}])
    yield col
    col.close()


@pytest.mark.parametrize("mode", ["vector", "lexical", "hybrid"])
def test_every_include_gives_the_same_ranking_and_only_the_fields_asked_for(library, mode):
    full = library.search(QUERY, k=5, mode=mode)
    assert full[0].id == "report" and full[0].passage is not None and full[0].snippet
    stored = {item.id: item for item in library.get([h.id for h in full], with_vectors=True)}
    for include in CHOICES:
        hits = library.search(QUERY, k=5, mode=mode, include=include)
        assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in full], include
        for hit, default in zip(hits, full):
            assert (hit.text, hit.uri) == ((default.text, default.uri) if "text" in include else (None, None))
            assert hit.metadata == (default.metadata if "metadata" in include else None)
            assert hit.passage == (default.passage if "passage" in include else None)
            if "vector" in include:
                np.testing.assert_array_equal(hit.vector, stored[hit.id].vector)
            else:
                assert hit.vector is None
            if "passage" in include:  # cut from the matched passage, as by default
                assert hit.snippet == default.snippet
            elif "text" in include:  # cut from the whole text
                assert (hit.snippet is None) == (default.snippet is None)
            else:
                assert hit.snippet is None


def test_the_default_is_text_metadata_and_passage_and_none_is_the_default(library):
    default = library.search(QUERY, k=3)
    assert library.search(QUERY, k=3, include=None) == default
    assert library.search(QUERY, k=3, include=["passage", "metadata", "text"]) == default
    assert library.search(QUERY, k=3, include="text,metadata,passage") == default  # the CLI's form
    assert all(hit.vector is None for hit in default)


def test_a_vector_hit_carries_its_stored_vector_in_to_dict(home):
    vectors = random_vectors(50, 8)
    col = ls.create("vecs", encoder="precomputed", dim=8, metric="l2", home=home)
    col.add([str(i) for i in range(50)], vectors=vectors, metadata=[{"i": i} for i in range(50)])
    (hit,) = col.search(vectors[7], k=1, include=["vector"])
    assert hit.id == "7" and hit.metadata is None
    np.testing.assert_array_equal(hit.vector, vectors[7])
    assert hit.to_dict() == {"id": "7", "score": hit.score, "text": None, "uri": None, "metadata": None,
                             "vector": vectors[7].tolist()}  # fmt: skip
    assert "vector" not in col.search(vectors[7], k=1)[0].to_dict()
    col.close()


def test_search_batch_takes_include_and_keeps_its_ranking(home):
    vectors = random_vectors(200, 8, seed=3)
    col = ls.create("batch", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(200)], vectors=vectors, metadata=[{"i": i} for i in range(200)])
    full = col.search_batch(vectors[:20], k=5, where="i >= 10")
    bare = col.search_batch(vectors[:20], k=5, where="i >= 10", include=[])
    assert [[(h.id, h.score) for h in hits] for hits in bare] == [[(h.id, h.score) for h in hits] for hits in full]
    assert all(h.metadata is None and h.vector is None for hits in bare for h in hits)
    assert all(h.metadata["i"] >= 10 for hits in full for h in hits)
    col.close()


@pytest.mark.parametrize("include", [["txt"], "text,vectors", 5, [["text"]]])
def test_an_unknown_include_is_refused_in_one_line_before_any_work(library, include):
    with pytest.raises(InvalidInputError, match="include") as caught:
        library.search(QUERY, include=include)
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidInputError, match="include"):
        library.search_batch(["lava"], include=include)


def test_the_cli_and_http_take_include(library, home):
    library.close()
    import json

    out = json.loads(run("search", "library", QUERY, "-k", "2", "--include", "metadata", "--json").stdout)
    assert out[0]["id"] == "report" and out[0]["metadata"] == {"kind": "report"} and out[0]["text"] is None
    assert "passage" not in out[0] and "snippet" not in out[0]
    bad = run("search", "library", QUERY, "--include", "text,colour", ok=False)
    assert bad.exit_code != 0 and "unknown field 'colour'" in bad.output + bad.stderr
    assert "Traceback" not in bad.output + bad.stderr

    from fastapi.testclient import TestClient

    from latentsearch.server import create_app

    with TestClient(create_app(home)) as client:
        answer = client.post("/api/collections/library/search", json={"query": QUERY, "k": 2, "include": []})
        assert answer.status_code == 200, answer.text
        assert answer.json()[0]["id"] == "report" and answer.json()[0]["metadata"] is None
        refused = client.post("/api/collections/library/search", json={"query": QUERY, "include": ["colour"]})
        assert refused.status_code in (400, 422) and "include" in refused.text


@pytest.mark.parametrize("index", ["flat", "hnsw", "sq8"])
def test_a_plain_vector_search_answers_as_the_general_path_through_writes(home, index):
    """A vector query with no ``like`` or ``explain`` takes the backend's shortest path (:meth:`nearest`:
    ids kept beside the index for ``include=[]``, one read of the hits otherwise, filters planned as
    ever). Its hits are the general path's (a :class:`SearchRequest`), field for field, filtered or not,
    after adds, deletes (tombstones), upserts and another connection's delete, and never name a deleted
    item."""
    vectors = random_vectors(300, 8, seed=5)
    col = ls.create("ids", encoder="precomputed", dim=8, metric="l2", index=index, home=home)
    col.add([str(i) for i in range(200)], vectors=vectors[:200], metadata=[{"i": i} for i in range(200)])

    def dicts(hits) -> list[dict]:
        return [hit.to_dict() for hit in hits]

    def same_answers() -> list[str]:
        cases = [([], None), (None, None), (["metadata", "vector"], None), ([], "i >= 50"), (None, "i < 90")]
        for include, where in cases:
            for query in vectors[::37]:
                fast = col.search(query, k=7, include=include, where=where)
                general = col.search(ls.SearchRequest(vector=query, k=7, include=include, where=where))
                assert dicts(fast) == dicts(general), (include, where)
                assert all(h.metadata is None and h.text is None for h in fast) or include != []
            batch = col.search_batch(vectors[::37], k=7, include=include, where=where)
            general = [col.search(ls.SearchRequest(vector=q, k=7, include=include, where=where)) for q in vectors[::37]]
            assert [dicts(hits) for hits in batch] == [dicts(hits) for hits in general]
        return [h.id for h in col.search(vectors[0], k=7, include=[])]

    first = same_answers()
    col.add([f"new-{i}" for i in range(20)], vectors=vectors[:20] + 0.01)  # the index appends positions
    assert {h.id for h in col.search(vectors[0], k=2, include=[])} == {"0", "new-0"}
    first = same_answers()
    col.delete(first[:3])
    assert not set(first[:3]) & set(same_answers())
    col.upsert([str(i) for i in range(150, 250)], vectors=vectors[200:300])
    same_answers()
    other = ls.connect(home).open("ids")  # another connection's write moves the sequence too
    gone = [h.id for h in col.search(vectors[74], k=2, include=[])]
    other.delete(gone)
    other.close()
    assert not set(gone) & set(same_answers())
    col.compact()  # the index rebuilt (tombstones dropped) at the same change sequence
    assert not set(gone) & set(same_answers())
    col.close()


def test_an_ids_only_vector_search_of_long_documents_ranks_items_by_their_best_passage(library):
    query = library.search(QUERY, k=1, include=["vector"])[0].vector
    bare, full = library.search(query, k=6, include=[]), library.search(query, k=6)
    assert [(h.id, h.score) for h in bare] == [(h.id, h.score) for h in full]
    assert len({h.id for h in bare}) == 6  # one hit per item though "report" has several passages
