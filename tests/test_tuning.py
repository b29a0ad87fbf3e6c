"""Fusion on a 0-1 scale, the auto mode, and tuning a collection's fusion (issue #18), with the real
MiniLM encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.search.fusion import DEFAULT_FUSION, Fusion, contributions, fuse
from latentsearch.search.tuning import MIN_ITEMS, LabelledQuery, read_labelled_queries

# Support tickets whose only distinguishing words are look-alike codes: a code as the query is found
# by its exact token, hardly by meaning, so labelled code queries must pull the weight to lexical.
CODES = [f"E47{n:02d}X" for n in range(10, 70)]
TICKET = "Ticket {code}: the printer on floor {floor} shows a paper jam after the firmware update."


@pytest.fixture(scope="module")
def docs_corpus():
    """80 Python documentation items of more than 20 words (several sentences each)."""
    from latentsearch.workflows.demo import demo_corpus

    return [item for item in demo_corpus() if len(item["text"].split()) > 20][:80]


@pytest.fixture
def docs(home, docs_corpus):
    col = ls.create("docs", home=home, index="flat")
    col.add(
        [d["id"] for d in docs_corpus], [d["text"] for d in docs_corpus], metadata=[d["metadata"] for d in docs_corpus]
    )
    yield col
    col.close()


@pytest.fixture
def tickets(home):
    col = ls.create("tickets", home=home, index="flat")
    col.add(CODES, [TICKET.format(code=c, floor=i % 7) for i, c in enumerate(CODES)])
    yield col
    col.close()


def snapshot(col):
    items = col.items()
    vectors = col.vectors_of([i.id for i in items])
    return [(i.id, i.text, i.metadata) for i in items], vectors, col.passage_count()


def test_tuning_measures_pseudo_queries_stores_the_fusion_and_changes_no_item(docs, home):
    before_items, before_vectors, before_passages = snapshot(docs)
    calls = []
    report = docs.tune_search(progress=lambda done, total: calls.append((done, total)))
    assert report.queries["pseudo"] >= 50
    measured = report.measured["pseudo"]
    # The candidates include weights 0 and 1 (lexical and vector orders), so the choice is never worse.
    assert measured["tuned"]["ndcg@10"] >= max(measured["vector"]["ndcg@10"], measured["lexical"]["ndcg@10"])
    assert set(measured["tuned"]) == {"ndcg@10", "mrr@10", "recall@100"}
    assert calls and calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert docs.search_fusion == report.chosen
    top = docs.search("delete a directory tree", k=1, explain=True)[0]
    assert top.details["mode"] == "hybrid" and top.details["fusion"] == report.chosen.to_dict()
    after_items, after_vectors, after_passages = snapshot(docs)
    assert after_items == before_items and after_passages == before_passages
    assert np.array_equal(after_vectors, before_vectors)
    docs.close()
    reopened = ls.open("docs", home=home)
    assert reopened.search_fusion == report.chosen
    assert reopened.manifest["search"]["tuning"]["queries"] == report.queries
    assert reopened.reset_search_tuning() is True
    assert reopened.search_fusion == DEFAULT_FUSION and reopened.reset_search_tuning() is False
    reopened.close()
    assert ls.open("docs", home=home).search_fusion == DEFAULT_FUSION


def test_labelled_code_queries_are_measured_and_ties_keep_the_default(tickets):
    queries = [LabelledQuery(code, (code,)) for code in CODES[:30]]
    report = tickets.tune_search(queries, sample=0)
    labelled = report.measured["labelled"]
    assert labelled["lexical"]["ndcg@10"] > labelled["vector"]["ndcg@10"] + 0.3
    curve = dict(report.curve)
    assert curve["convex, vector weight 1.00"] < curve[report.chosen.describe()] == labelled["tuned"]["ndcg@10"]
    assert labelled["tuned"]["ndcg@10"] == max(curve.values()) >= labelled["lexical"]["ndcg@10"]
    # Every fusion that finds all the codes ties; the tie goes to the default.
    if curve[DEFAULT_FUSION.describe()] == max(curve.values()):
        assert report.chosen == DEFAULT_FUSION
    assert tickets.search(CODES[40], k=1)[0].id == CODES[40]  # auto, with the tuned fusion


def test_a_collection_too_small_to_tune_says_so_and_keeps_the_default(topics):
    with pytest.raises(ls.InvalidInputError, match=f"tuning needs {MIN_ITEMS}"):
        topics.tune_search()
    assert "search" not in topics.manifest and topics.search_fusion == DEFAULT_FUSION


def test_tuning_refuses_collections_without_text(home):
    col = ls.create("vecs", home=home, encoder="precomputed", dim=4)
    col.add(["a", "b"], vectors=np.eye(4, dtype=np.float32)[:2])
    with pytest.raises(ls.InvalidInputError, match="needs a text encoder"):
        col.tune_search()
    assert "search" not in col.manifest


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"query": "printer jam", "relevant": ["E4710X"]}', "not json"], r"q\.jsonl line 2 is not JSON"),
        (['{"query": "  ", "relevant": ["E4710X"]}'], r"line 1: the query is empty"),
        (['{"query": "jam", "relevant": []}'], r"line 1: relevant is a non-empty list"),
        (['{"query": "jam", "relevant": ["E4710X"], "x": 1}'], r"line 1: write \{"),
        (
            ['{"query": "jam", "relevant": ["E4710X"]}', "", '{"query": "jam", "relevant": ["ghost"]}'],
            r"line 3: 1 relevant id\(s\) are not in collection 'tickets' \('ghost'\)",
        ),
    ],
)
def test_bad_queries_files_name_the_line_and_change_nothing(tickets, tmp_path, lines, message):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ls.InvalidInputError, match=message):
        tickets.tune_search(path)
    assert "search" not in tickets.manifest


def test_read_labelled_queries_accepts_one_id_or_many(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "a", "relevant": "x"}\n\n{"query": "b", "relevant": ["y", "z", "y"]}\n')
    assert read_labelled_queries(path) == [LabelledQuery("a", ("x",)), LabelledQuery("b", ("y", "z"))]


def test_cli_tune_reports_stores_and_resets(home, tickets, tmp_path):
    tickets.close()
    runner = CliRunner()
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"query": c, "relevant": [c]}) + "\n" for c in CODES[:25]))
    tuned = runner.invoke(app, ["tune", "tickets", "--queries", str(path), "--sample", "0", "--json"])
    assert tuned.exit_code == 0, tuned.output
    report = json.loads(tuned.stdout)
    assert report["queries"] == {"labelled": 25} and report["measured"]["labelled"]["tuned"]["ndcg@10"] > 0.9
    table = runner.invoke(app, ["tune", "tickets", "--queries", str(path), "--sample", "0"], env={"COLUMNS": "200"})
    assert "labelled (25)" in table.stdout and "chosen: convex" in table.stdout and "--reset" in table.stdout
    assert ls.open("tickets", home=home).search_fusion == Fusion.from_dict(report["chosen"])
    found = runner.invoke(app, ["search", "tickets", CODES[3], "-k", "3"], env={"COLUMNS": "200"})
    scores = [line.split("│")[2].strip() for line in found.stdout.splitlines() if line.startswith("│ ")]
    assert scores and all(len(s.split(".")[1]) == 4 for s in scores)  # one number of decimals for all
    reset = runner.invoke(app, ["tune", "tickets", "--reset"])
    assert reset.exit_code == 0 and "forgot the tuned fusion" in reset.stdout
    assert ls.open("tickets", home=home).search_fusion == DEFAULT_FUSION
    path.write_text('{"query": "x", "relevant": ["nope"]}\n')
    bad = runner.invoke(app, ["tune", "tickets", "--queries", str(path)])
    assert bad.exit_code == 1 and "line 1" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.output


def test_server_searches_auto_by_default(home, tickets):
    from fastapi.testclient import TestClient

    from latentsearch.server import create_app

    tickets.close()
    with TestClient(create_app(home=home, preload=False)) as client:
        hits = client.post("/api/collections/tickets/search", json={"query": CODES[7], "k": 2, "explain": True}).json()
        assert hits[0]["id"] == CODES[7] and hits[0]["details"]["mode"] == "hybrid"
        assert 0 <= hits[1]["score"] <= hits[0]["score"] <= 1
        bad = client.post("/api/collections/tickets/search", json={"query": "x", "alpha": 1.5})
        assert bad.status_code == 422 or bad.status_code == 400
        queries = [{"query": c, "relevant": [c]} for c in CODES[:12]]
        tuned = client.post("/api/collections/tickets/tune", json={"queries": queries, "sample": 0})
        assert tuned.status_code == 200 and tuned.json()["queries"] == {"labelled": 12}
        assert client.get("/api/collections/tickets").json()["search_fusion"] == tuned.json()["chosen"]
        unknown = client.post("/api/collections/tickets/tune", json={"queries": [{"query": "x", "relevant": ["no"]}]})
        assert unknown.status_code == 400 and "labelled query 1" in unknown.json()["error"]
        blank = client.post("/api/collections/tickets/tune", json={"queries": [{"query": " ", "relevant": ["E4710X"]}]})
        assert blank.status_code == 400 and "the query is empty" in blank.json()["error"]
        reset = client.post("/api/collections/tickets/tune", json={"reset": True})
        assert reset.json() == {"reset": True, "fusion": DEFAULT_FUSION.to_dict()}


rankings_strategy = st.fixed_dictionaries(
    {
        "vector": st.lists(st.floats(-1, 1), max_size=30),
        "lexical": st.lists(st.floats(0, 50), max_size=30),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    scores=rankings_strategy, weight=st.floats(0, 1), method=st.sampled_from(["convex", "rrf"]), seed=st.integers(0, 9)
)
def test_fused_scores_are_on_0_1_and_sum_each_modes_share(scores, weight, method, seed):
    rng = np.random.default_rng(seed)
    rankings = {}
    for mode, values in scores.items():
        keys = rng.choice(60, size=len(values), replace=False).tolist()
        rankings[mode] = sorted(zip(keys, values), key=lambda pair: -pair[1])
    fusion = Fusion(method, weight)
    floors = {"vector": -1.0, "lexical": 0.0}
    fused = fuse(rankings, fusion, floors)
    parts = contributions(rankings, fusion, floors)
    assert {key for key, _ in fused} == {key for r in rankings.values() for key, _ in r}
    for key, score in fused:
        assert -1e-9 <= score <= 1 + 1e-9
        assert score == pytest.approx(sum(parts[key].values()))
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)
    if weight == 1.0 and method == "convex":  # all weight on vectors: their order, then the rest
        assert [k for k, _ in fused][: len(rankings["vector"])] == [k for k, _ in rankings["vector"]] or len(
            {s for _, s in rankings["vector"]}
        ) < len(rankings["vector"])
