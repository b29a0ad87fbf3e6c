"""Lexical, vector and hybrid search with the real MiniLM encoder."""

import json

import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.search.fusion import Fusion, fuse
from latentsearch.storage.fulltext import fts_query

from .conftest import topic_items

# Items only one mode can find. The code E-4711X sits in an unrelated sentence among printer tickets
# with look-alike codes, so the vector for the bare code lands among the tickets (lexical finds the
# exact token); the paraphrase shares no content word with its query (only vectors find it).
LOOKALIKE_CODES = ["E4712X", "E4713X", "E4710X", "E4721X", "E4811X", "E4701X", "E4719X", "E5711X"]
EXTRA = {
    **{
        f"ticket-{c}": f"Printer shows status {c} after the firmware update; power cycle it to clear."
        for c in LOOKALIKE_CODES
    },
    "err-code": "Quarterly planning moved to Thursday; quote reference E-4711X when you reply to the invitation.",
    "paraphrase": "Automobile motor will not turn over when it is freezing outside.",
}


@pytest.fixture
def corpus(topics):
    topics.add(list(EXTRA), list(EXTRA.values()), metadata=[{"topic": "support", "lang": "en"}] * len(EXTRA))
    return topics


def ids(hits):
    return [h.id for h in hits]


def test_rare_code_is_found_by_lexical_and_hybrid_not_vector(corpus):
    query = "E-4711X"
    assert ids(corpus.search(query, k=1, mode="lexical")) == ["err-code"]
    assert "err-code" not in ids(corpus.search(query, k=5, mode="vector"))
    assert ids(corpus.search(query, k=5, mode="hybrid"))[0] == "err-code"


def test_paraphrase_is_found_by_vector_and_hybrid_not_lexical(corpus):
    query = "my car engine won't start in cold weather"
    assert "paraphrase" not in ids(corpus.search(query, k=5, mode="lexical"))
    assert ids(corpus.search(query, k=1, mode="vector")) == ["paraphrase"]
    assert ids(corpus.search(query, k=3, mode="hybrid"))[0] == "paraphrase"


def test_default_mode_auto_fuses_texts_and_searches_the_rest_by_vector(corpus, topic_vectors):
    # A text with words: hybrid, with the collection's (default) fusion; the rare code is found.
    top = corpus.search("E-4711X", k=1, explain=True)[0]
    assert top.id == "err-code" and top.details["mode"] == "hybrid"
    assert top.details["fusion"] == corpus.search_fusion.to_dict()
    # A vector, an item (more like it is a question of meaning) and a query of no words: vector.
    assert corpus.search(topic_vectors[0], k=1, explain=True)[0].details["mode"] == "vector"
    assert corpus.search(like="finance-4", k=1, explain=True)[0].details["mode"] == "vector"
    assert corpus.search("?!", k=1, explain=True)[0].details["mode"] == "vector"
    with pytest.raises(ls.InvalidInputError, match="needs a text query"):
        corpus.search(topic_vectors[0], mode="lexical")


def test_filters_apply_to_every_mode(corpus):
    for mode in ("vector", "lexical", "hybrid"):
        hits = corpus.search("interest rates and bonds", k=10, mode=mode, where={"lang": "de"})
        assert hits, mode
        assert all(h.metadata["lang"] == "de" for h in hits), mode
    assert corpus.search("E-4711X", mode="lexical", where={"topic": "cooking"}) == []


def test_explain_shows_both_ranks_and_the_fused_score(corpus):
    hits = corpus.search("bond prices and interest rates", k=3, mode="hybrid", fusion="rrf", alpha=0.5, explain=True)
    top = hits[0]
    assert top.id == "finance-4"
    assert top.details["vector_rank"] >= 1 and top.details["lexical_rank"] >= 1
    # RRF on its 0-1 scale: divided by the most an item can score, 1 / (60 + 1).
    expected = (0.5 / (60 + top.details["vector_rank"]) + 0.5 / (60 + top.details["lexical_rank"])) * 61
    assert top.details["fused_score"] == pytest.approx(expected) == pytest.approx(top.score)
    assert top.details["lexical_score"] > 0 and -1 <= top.details["vector_score"] <= 1


def test_convex_scores_are_each_modes_share_over_its_floor(corpus):
    hits = corpus.search("bond prices and interest rates", k=5, mode="hybrid", explain=True)
    vector_best = corpus.search("bond prices and interest rates", k=1, mode="vector")[0].score
    lexical_best = corpus.search("bond prices and interest rates", k=1, mode="lexical")[0].score
    w = corpus.search_fusion.weight
    for hit in hits:
        d = hit.details
        vector = w * (d["vector_score"] + 1) / (vector_best + 1) if d["vector_rank"] else 0.0
        lexical = (1 - w) * d["lexical_score"] / lexical_best if d["lexical_rank"] else 0.0
        assert d["vector_contribution"] == pytest.approx(vector)
        assert d["lexical_contribution"] == pytest.approx(lexical)
        assert hit.score == pytest.approx(vector + lexical) and 0.0 <= hit.score <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_lexical_hits_carry_highlighted_snippets(corpus):
    hit = corpus.search("invitation reply", k=1, mode="lexical")[0]
    assert hit.id == "err-code"
    assert "**reply**" in hit.snippet and "**invitation**" in hit.snippet


def test_lexical_more_like_this_excludes_the_item(corpus):
    hits = corpus.search(like="finance-4", k=3, mode="lexical")
    assert "finance-4" not in ids(hits)
    assert hits[0].metadata["topic"] == "finance"


def test_lexical_index_follows_upserts_and_deletes(corpus):
    corpus.upsert(["err-code"], ["Scanner reports code Z-99 when the lid is open."])
    assert corpus.search("E-4711X", mode="lexical") == []
    assert ids(corpus.search("Z-99", k=1, mode="lexical")) == ["err-code"]
    corpus.delete(["err-code"])
    assert corpus.search("Z-99", mode="lexical") == []


def test_query_syntax_is_never_interpreted():
    # FTS5 operators in user text are quoted words, not syntax.
    assert fts_query('NOT "x" OR y* AND -z (col:w)') == '"x" OR "y" OR "z" OR "col" OR "w"'
    assert fts_query("the and of") == '"the" OR "and" OR "of"'  # only stop words: keep them
    assert fts_query("?!") is None


@pytest.mark.parametrize("query", ['NOT "', "AND OR", "a:b", "*", "NEAR(x y)", "'; DROP TABLE items; --"])
def test_odd_queries_do_not_break_lexical_search(corpus, query):
    corpus.search(query, mode="hybrid", k=3)
    assert corpus.count() == 20 + len(EXTRA)


def test_weighted_fusion_and_fuse_function(corpus):
    rankings = {"vector": [(1, 0.9), (2, 0.5), (3, 0.1)], "lexical": [(3, 12.0), (1, 2.0)]}
    assert [r for r, _ in fuse(rankings, Fusion("rrf", 0.5))] == [1, 3, 2]
    # Without floors, min-max over the candidates: the best 1, the last 0.
    weighted = dict(fuse(rankings, Fusion("weighted", 0.8)))
    assert weighted[1] == pytest.approx(0.8 * 1.0 + 0.2 * 0.0)
    assert weighted[3] == pytest.approx(0.8 * 0.0 + 0.2 * 1.0)
    floored = dict(fuse(rankings, Fusion("convex", 0.8), {"vector": -1.0, "lexical": 0.0}))
    assert floored[3] == pytest.approx(0.8 * 1.1 / 1.9 + 0.2 * 1.0)
    assert floored[2] == pytest.approx(0.8 * 1.5 / 1.9)  # missed by lexical: it gives 0
    only_lexical = fuse(rankings, Fusion("convex", 0.0))
    assert only_lexical[0][0] == 3
    hits = corpus.search("E-4711X", k=1, mode="hybrid", fusion="weighted", alpha=0.3)
    assert ids(hits) == ["err-code"]
    with pytest.raises(ls.InvalidInputError, match="alpha"):
        corpus.search("x", alpha=2.0)
    with pytest.raises(ls.InvalidInputError, match="unknown fusion"):
        corpus.search("x", fusion="max")
    with pytest.raises(ls.InvalidInputError, match="unknown search mode"):
        corpus.search("x", mode="fuzzy")


def test_cli_mode_and_explain(home, tmp_path):
    ids_, texts, metadata = topic_items()
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t, **m}) + "\n" for i, t, m in zip(ids_, texts, metadata)))
    runner = CliRunner()
    assert runner.invoke(app, ["create", "c", "--index", "flat"]).exit_code == 0
    assert runner.invoke(app, ["add", "c", str(path)]).exit_code == 0
    result = runner.invoke(app, ["search", "c", "parallax distance", "--mode", "lexical", "--json", "-k", "1"])
    assert json.loads(result.stdout)[0]["id"] == "astronomy-3"
    explained = runner.invoke(app, ["search", "c", "parallax distance", "--mode", "hybrid", "--explain", "--json"])
    details = json.loads(explained.stdout)[0]["details"]
    assert details["mode"] == "hybrid" and details["lexical_rank"] == 1
    table = runner.invoke(
        app, ["search", "c", "parallax distance", "--mode", "hybrid", "--explain", "-k", "2"], env={"COLUMNS": "250"}
    )
    assert "lexical: 1 (" in table.stdout and "astronomy-3" in table.stdout and "+ 0." in table.stdout
    bad = runner.invoke(app, ["search", "c", "x", "--mode", "fuzzy"])
    assert bad.exit_code == 1 and "unknown search mode" in bad.stderr
