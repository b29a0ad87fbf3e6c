"""Search quality and filters with the real MiniLM encoder, and filtered k-NN at low selectivity."""

import numpy as np
import pytest

import latentsearch as ls

from .conftest import TOPIC_DOCS, random_vectors


@pytest.mark.parametrize(
    ("query", "topic"),
    [
        ("how long should I bake a loaf", "cooking"),
        ("planets and stars in the night sky", "astronomy"),
        ("fix a bug in my code", "programming"),
        ("saving money and investing", "finance"),
    ],
)
@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_query_ranks_its_topic_first(topics, query, topic, mode):
    hits = topics.search(query, k=5, mode=mode)
    assert [h.metadata["topic"] for h in hits[:3]] == [topic] * 3
    assert sum(h.metadata["topic"] == topic for h in hits) >= 4
    assert hits[0].score > hits[-1].score


def test_search_text_with_filter(topics):
    hits = topics.search("interest rates", k=10, where={"lang": "en"})
    assert hits and all(h.metadata["lang"] == "en" for h in hits)
    assert hits[0].metadata["topic"] == "finance"
    expr_hits = topics.search("interest rates", k=10, where='lang = "en" and topic != "finance"')
    assert all(h.metadata["lang"] == "en" and h.metadata["topic"] != "finance" for h in expr_hits)
    assert len(expr_hits) == 9  # 3 English items in each of the three other topics


def test_more_like_this_by_id(topics):
    hits = topics.search(like="astronomy-0", k=4)
    assert "astronomy-0" not in [h.id for h in hits]
    assert [h.metadata["topic"] for h in hits[:3]] == ["astronomy"] * 3


def test_search_by_vector_matches_search_by_text(topics):
    from latentsearch.encoders import get_encoder

    vector = get_encoder("minilm").encode(["galaxies far away"])[0]
    by_vector = [h.id for h in topics.search(vector, k=5)]
    by_text = [h.id for h in topics.search("galaxies far away", k=5, mode="vector")]
    assert by_vector == by_text


def test_results_carry_text_and_metadata(topics):
    hit = topics.search("knead the dough", k=1, mode="vector")[0]
    assert hit.id == "cooking-1"
    assert hit.text == TOPIC_DOCS["cooking"][1]
    assert hit.metadata == {"topic": "cooking", "lang": "de", "n": 1}
    assert set(hit.to_dict()) == {"id", "score", "text", "uri", "metadata", "snippet", "passage"}
    assert hit.to_dict()["passage"] == {
        "index": 0,
        "start": 0,
        "end": len(hit.text),
        "text": hit.text,
        "score": hit.score,
        "rank": 1,
    }
    assert "**Knead**" in hit.snippet and "**dough**" in hit.snippet
    fused = topics.search("knead the dough", k=1)[0]  # auto: hybrid, scored 0-1; the same passage
    assert fused.id == "cooking-1" and fused.passage == hit.passage and 0 < fused.score <= 1


def test_k_larger_than_collection_returns_everything(topics):
    assert len(topics.search("anything at all", k=100)) == 20


def test_filter_at_one_percent_selectivity_returns_k_on_hnsw(home):
    n, dim = 20_000, 32
    vectors = random_vectors(n, dim, 3)
    col = ls.create("sel", encoder="precomputed", dim=dim, index="hnsw", home=home)
    col.add([f"v{i}" for i in range(n)], vectors=vectors, metadata=[{"bucket": i % 100} for i in range(n)])
    assert col.backend.index.factory.startswith("HNSW")
    queries = random_vectors(20, dim, 4)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    subset = np.arange(7, n, 100)  # bucket 7: 1% of the items
    for q in queries:
        hits = col.search(q, k=10, where={"bucket": 7})
        assert len(hits) == 10
        assert all(h.metadata["bucket"] == 7 for h in hits)
        # And they are the true top 10 within the subset.
        scores = normed[subset] @ (q / np.linalg.norm(q))
        truth = {f"v{subset[i]}" for i in np.argsort(-scores)[:10]}
        assert {h.id for h in hits} == truth
    # A filter matching more items than the exact-subset limit goes through the HNSW selector.
    wide = col.search(queries[0], k=10, where="bucket < 60", ef_search=128)
    assert len(wide) == 10 and all(h.metadata["bucket"] < 60 for h in wide)
    # A filter matching fewer than k items returns all of them.
    assert len(col.search(queries[0], k=500, where={"bucket": 7})) == n // 100
    col.close()


def test_filter_matching_nothing_returns_nothing(topics):
    assert topics.search("bread", k=5, where={"topic": "gardening"}) == []


def test_search_batch_matches_single_searches(topics, topic_vectors):
    batch = topics.search_batch(topic_vectors[:4], k=3)
    assert [[h.id for h in hits] for hits in batch] == [
        [h.id for h in topics.search(v, k=3)] for v in topic_vectors[:4]
    ]
    by_text = topics.search_batch(["bread and dough", "stars"], k=2, where={"lang": "en"})
    assert by_text[0][0].metadata["topic"] == "cooking" and by_text[1][0].metadata["topic"] == "astronomy"
    assert all(h.metadata["lang"] == "en" for hits in by_text for h in hits)
    with pytest.raises(ls.InvalidInputError, match="wrong vector dimension"):
        topics.search_batch(np.ones((2, 5)), k=2)


def test_benchmark_report_rewrites_only_its_section(tmp_path, monkeypatch):
    from benchmarks import report

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:x -->\nold\n<!-- /bench:x -->\nouter\n")
    monkeypatch.setattr(report, "README", readme)
    assert report.update_readme("x", report.markdown_table(["a", "b"], [[1, 0.12345]]))
    assert (
        readme.read_text() == "intro\n<!-- bench:x -->\n| a | b |\n|---|---|\n| 1 | 0.123 |\n<!-- /bench:x -->\nouter\n"
    )
    assert not report.update_readme("missing", "table")


def test_filter_cache_follows_writes_from_any_process(topics, topic_vectors, home):
    where = {"topic": "cooking"}
    before = {h.id for h in topics.search(topic_vectors[0], k=50, where=where)}
    assert before == {f"cooking-{i}" for i in range(5)}
    other = ls.open("topics", home=home)  # another handle: its writes change the sequence too
    other.upsert(["finance-0"], vectors=topic_vectors[5:6], metadata=[{"topic": "cooking"}])
    other.close()
    after = {h.id for h in topics.search(topic_vectors[0], k=50, where=where)}
    assert after == before | {"finance-0"}
    topics.backend.store.update_metadata(
        {topics.backend.store.rowids_of(["cooking-1"])["cooking-1"]: {"topic": "moved"}}
    )
    assert "cooking-1" not in {h.id for h in topics.search(topic_vectors[0], k=50, where=where)}
