"""Long texts as passages: splitting by the encoder's tokenizer, search at document level by the best
passage, one document vector, per-document writes, the format upgrade of version-1 collections."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import latentsearch as ls
from latentsearch.encoders import get_encoder
from latentsearch.encoders.passages import settings_for, split_spans
from latentsearch.errors import InvalidInputError
from latentsearch.storage.store import FORMAT_VERSION
from latentsearch.workflows.doctor import doctor

from .faults import crash_points

V1_FIXTURE = Path(__file__).parent / "data" / "format-v1"  # made by latentsearch before passages
QUERY = "volcanic eruption with lava and ash"
VOLCANO = "The volcano erupted violently, sending lava flows and thick ash clouds over the nearby villages."
COOKING = "Whisk the eggs with sugar and melted butter, then bake the sponge cake for thirty minutes."


def report(paragraphs: int = 60, tail: str = VOLCANO) -> str:
    """A long committee report (about 14 words a sentence) whose last sentence is ``tail``."""
    body = " ".join(
        f"The committee reviewed budget line {i} of the quarterly report and approved the spending plan."
        for i in range(paragraphs)
    )
    return f"{body} {tail}"


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm")


@pytest.fixture
def docs(home):
    """A collection with one long report (the volcano at its end), a cooking text and a short note."""
    col = ls.create("docs", home=home)
    col.add(
        ["report", "cake", "note"],
        [report(), COOKING, "A short note about the weather: sunny, then rain."],
        metadata=[{"kind": "report"}, {"kind": "recipe"}, {"kind": "note"}],
    )
    yield col
    col.close()


# --- splitting ------------------------------------------------------------------------------------


def test_a_short_text_is_one_passage_and_a_long_one_is_split_within_the_window(minilm):
    short = "One sentence only."
    spans, cut = split_spans(short, minilm.token_spans([short])[0], settings_for(minilm.window, None, 100))
    assert [(s.start, s.end) for s in spans] == [(0, len(short))] and not cut
    text = report(120)
    settings = settings_for(minilm.window, None, 1000)
    spans, cut = split_spans(text, minilm.token_spans([text])[0], settings)
    assert len(spans) > 5 and not cut
    assert spans[0].start == 0 and spans[-1].end == len(text)
    for before, after in zip(spans, spans[1:]):
        assert before.start < after.start <= before.end  # overlapping or touching: no text skipped
    for span in spans:
        assert len(minilm.token_spans([text[span.start : span.end]])[0]) <= minilm.window
        # boundaries at sentence ends: every passage but the last ends with a full stop
    assert all(text[s.start : s.end].rstrip().endswith(".") for s in spans)
    assert all(text[s.start].isupper() for s in spans)  # and starts a sentence


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.sampled_from(["alpha", "beta.", "gamma,", "delta!", "\n", "épsilon", "x" * 30]), max_size=900),
    stride=st.integers(1, 300),
    cap=st.integers(1, 50),
)
def test_passages_cover_the_text_in_order_within_the_window(minilm, words, stride, cap):
    text = " ".join(words) or "empty"
    offsets = minilm.token_spans([text])[0]
    settings = settings_for(40, stride, cap)
    spans, cut = split_spans(text, offsets, settings)
    assert 1 <= len(spans) <= cap
    assert spans[0].start == 0
    covered: set[int] = set()
    for before, span in zip([None, *spans], spans):
        inside = {i for i, (a, b) in enumerate(offsets) if span.start <= a and b <= span.end}
        assert len(inside) <= settings.window
        if before is not None:
            assert before.start < span.start and min(inside) <= max(covered) + 1  # in order, no token skipped
        covered |= inside
    assert covered == set(range(max(covered, default=-1) + 1))  # a prefix of the tokens, all of them unless cut
    assert (len(covered) == len(offsets)) != cut


def test_bad_passage_options_are_refused_before_anything_is_made(home):
    for options, words in (
        ({"stride": 0}, "stride"),
        ({"max_passages": 0}, "max_passages"),
        ({"max_passages": 70_000}, "max_passages"),
    ):
        with pytest.raises(InvalidInputError, match=words):
            ls.create("bad", home=home, **options)
        assert not ls.connect(home).exists("bad")


# --- search ---------------------------------------------------------------------------------------


def test_an_answer_beyond_the_first_window_is_found_and_pointed_at(home):
    before = ls.create("before", home=home, max_passages=1)  # the old behaviour: only the first window
    before.add(["report", "cake"], [report(), COOKING])
    assert before.search(QUERY, k=1)[0].id == "cake"  # the volcano was cut off
    before.close()
    col = ls.create("after", home=home)
    col.add(["report", "cake"], [report(), COOKING])
    text = report()
    hit, other = col.search(QUERY, k=2)
    assert hit.id == "report" and hit.score > other.score + 0.2
    assert hit.passage is not None and hit.passage.index > 0
    assert hit.passage.text == text[hit.passage.start : hit.passage.end]
    assert hit.passage.start <= text.index(VOLCANO) and hit.passage.end == len(text)
    assert "**lava**" in hit.snippet and "volcano" in hit.snippet  # cut from the matching passage
    assert hit.text == text  # the hit is the document
    col.close()


def test_every_mode_returns_each_document_once_with_its_passage(docs):
    text = report()
    volcano_at = text.index(VOLCANO)
    for mode in ("vector", "lexical", "hybrid"):
        hits = docs.search(QUERY, k=3, mode=mode)
        ids = [h.id for h in hits]
        assert ids[0] == "report" and len(ids) == len(set(ids)), (mode, ids)
        top = hits[0].passage
        assert top.start <= volcano_at < top.end, mode  # lexical picks the passage BM25 ranks best
        assert all(h.passage is not None for h in hits)
    # The note is one passage: the whole text.
    note = next(h for h in docs.search("weather", k=3) if h.id == "note")
    assert (note.passage.index, note.passage.start, note.passage.end) == (0, 0, len(note.text))


def test_explain_shows_the_passage_its_rank_and_score(docs):
    hit = docs.search(QUERY, k=2, mode="hybrid", explain=True)[0]
    details = hit.details
    assert details["passage"] == hit.passage.index > 0
    assert details["passage_rank"] == 1
    assert details["passage_score"] == pytest.approx(details["vector_score"])
    # a lower document: its best passage's rank counts every passage ranked above it
    second = docs.search(QUERY, k=3, explain=True)[1]
    assert second.details["passage_rank"] >= 2


def test_filters_like_and_batches_work_at_document_level(docs):
    assert [h.id for h in docs.search(QUERY, k=3, where={"kind": "recipe"})] == ["cake"]
    assert "report" not in [h.id for h in docs.search(QUERY, k=3, where="kind != 'report'")]
    like = docs.search(like="report", k=3)
    assert "report" not in [h.id for h in like] and len(like) == 2  # itself left out, all its passages too
    batch = docs.search_batch([QUERY, "baking a cake"], k=3)
    assert batch[0][0].id == "report" and batch[1][0].id == "cake"
    assert batch[0][0].passage.index == docs.search(QUERY, k=1)[0].passage.index
    for hits in batch:
        assert len({h.id for h in hits}) == len(hits) == 3
    assert docs.search(QUERY, k=1, where={"kind": "report"})[0].passage.index > 0  # exact search over passages


def test_more_passages_than_k_still_give_k_documents(home):
    col = ls.create("many", home=home, index="hnsw")
    long_ones = [report(80, tail=f"Final remark number {i}.") for i in range(4)]
    col.add([f"long{i}" for i in range(4)] + ["cake"], long_ones + [COOKING])
    assert col.passage_count() > 20
    hits = col.search("committee budget report spending", k=5)
    assert sorted(h.id for h in hits) == ["cake", "long0", "long1", "long2", "long3"]
    # BM25 ranks passages too: every passage of the long texts matches, each document comes once
    lexical = col.search("committee budget report spending", k=5, mode="lexical")
    assert sorted(h.id for h in lexical) == ["long0", "long1", "long2", "long3"]
    assert col.search("final remark number 2", k=1, mode="lexical")[0].passage.index == len(col.passages("long2")) - 1
    col.close()


# --- one document ---------------------------------------------------------------------------------


def test_the_document_vector_is_the_normalised_mean_of_its_passages(docs, minilm):
    text = report()
    pieces = [p.text for p in docs.passages("report")]
    assert len(pieces) > 3 and pieces[0] == text[: len(pieces[0])]
    mean = minilm.encode(pieces).mean(axis=0)
    stored = docs.vectors_of(["report"])[0]
    assert np.allclose(stored, mean / np.linalg.norm(mean), atol=1e-5)
    assert np.allclose(docs.vectors_of(["cake"])[0], minilm.encode([COOKING])[0], atol=1e-5)  # one passage
    info = docs.info()
    assert info["count"] == 3 and info["passages"] == len(pieces) + 2


def test_writes_are_per_document_and_take_every_passage_along(docs):
    total = docs.passage_count()
    long_passages = len(docs.passages("report"))
    assert docs.count() == 3 and len(docs.get(["report"])) == 1
    docs.update_metadata({"report": {"reviewed": True}})
    assert docs.search(QUERY, k=1, where={"reviewed": True})[0].id == "report"
    docs.upsert(["report"], ["A short memo about the canteen menu."], metadata=[{"kind": "memo"}])
    assert docs.passage_count() == total - long_passages + 1 and docs.count() == 3
    assert docs.search(QUERY, k=1)[0].id != "report"  # none of the old passages is searchable
    docs.upsert(["report"], [report()])
    assert docs.passage_count() == total and docs.search(QUERY, k=1)[0].id == "report"
    docs.delete(["report"])
    assert docs.passage_count() == 2 and docs.count() == 2
    assert all(h.id != "report" for h in docs.search(QUERY, k=3))
    docs.close()
    reopened = ls.open("docs", home=docs.path.parent)  # the index on disk agrees
    assert reopened.passage_count() == 2 and [h.id for h in reopened.search(QUERY, k=3)].count("report") == 0
    reopened.close()


def test_maps_outliers_and_interpolation_use_the_document_vector(docs):
    assert sorted(docs.project("pca").ids) == ["cake", "note", "report"]  # one point a document
    scorer = docs.outlier_scorer("knn", k=1)
    assert sorted(scorer.ids_) == ["cake", "note", "report"]
    vectors = dict(zip(["report", "cake", "note"], docs.vectors_of(["report", "cake", "note"])))
    nearest = min(np.linalg.norm(vectors["report"] - vectors[other]) for other in ("cake", "note"))
    score = dict(zip(scorer.ids_, scorer.train_scores_))["report"]
    assert score == pytest.approx(nearest, rel=1e-4)  # distances between document vectors, not passages
    steps = docs.interpolate("report", "cake", steps=3)
    assert [s.id for s in steps] == ["note"] * 3  # the one document that is neither end
    assert steps[0].to_start == pytest.approx(float(vectors["note"] @ vectors["report"]), abs=1e-5)  # document vectors


def test_pages_are_kept_per_passage(home):
    pages = [report(30, tail="End of page one."), report(30, tail="End of page two."), report(30)]
    text = "\n\n".join(pages)
    starts = [0, len(pages[0]) + 2, len(pages[0]) + len(pages[1]) + 4]
    col = ls.create("paged", home=home)
    col.add(["book"], [text], pages=[starts])
    passages = col.passages("book")
    ends = [*starts[1:], len(text)]
    for passage in passages:
        expected = sum(1 for s in starts if s <= passage.start)
        assert passage.page == expected
        assert starts[expected - 1] <= passage.start < passage.end <= ends[expected - 1]  # within its page
    assert passages[-1].page == 3
    hit = col.search(QUERY, k=1)[0]
    assert hit.passage.page == 3
    assert hit.to_dict()["passage"]["page"] == 3
    for bad, words in (([[5, 10]], "starting at 0"), ([[0, 10, 5]], "increasing"), ([[0, 10**9]], "beyond")):
        with pytest.raises(InvalidInputError, match=words):
            col.add(["other"], [text], pages=bad)
    assert col.count() == 1
    col.close()


def test_a_text_beyond_the_passage_cap_is_cut_with_a_warning(home, caplog):
    col = ls.create("capped", home=home, max_passages=3)
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        col.add(["report"], [report(200)])
    assert len(col.passages("report")) == 3
    assert any("cap of 3 passages" in r.getMessage() and "'report'" in r.getMessage() for r in caplog.records)
    assert col.info()["passage_settings"] == {"stride": None, "max_passages": 3}
    col.close()


# --- the format upgrade ---------------------------------------------------------------------------


def v1_home(tmp_path: Path) -> Path:
    home = tmp_path / "v1"
    shutil.copytree(V1_FIXTURE, home)
    return home


def format_version(folder: Path) -> int:
    with sqlite3.connect(folder / "collection.sqlite") as conn:
        return int(conn.execute("SELECT value FROM manifest WHERE key = 'format_version'").fetchone()[0])


def check_upgraded(home: Path) -> None:
    col = ls.open("old", home=home)
    assert col.count() == 5 and col.passage_count() == 5
    assert col.search(QUERY, k=1)[0].id == "volcano"
    assert col.search("rain", k=1, mode="lexical")[0].id == "rain"
    assert col.search(QUERY, k=5, where={"lang": "en"})[0].passage.start == 0
    assert "gone" not in col.existing_ids(["gone", "cake"])
    assert col.backend.field_indexes() == ["lang"]
    col.add(["long"], [report()])
    assert col.passage_count() > 6 and {h.id for h in col.search(QUERY, k=2)} == {"volcano", "long"}
    col.delete(["long"])
    col.close()
    assert format_version(home / "old") == FORMAT_VERSION
    assert doctor("old", home=home).healthy


def test_a_version_1_collection_is_upgraded_once_on_open(tmp_path):
    home = v1_home(tmp_path)
    assert format_version(home / "old") == 1
    check_upgraded(home)
    check_upgraded(home)  # a second open has nothing to do


def test_a_read_only_version_1_collection_is_read_without_upgrading(tmp_path, monkeypatch):
    import latentsearch.storage.store as storage

    home = v1_home(tmp_path)
    monkeypatch.setattr(storage, "folder_writable", lambda folder: False)
    col = ls.open("old", home=home)
    assert col.read_only and col.count() == 5 and col.passage_count() == 5
    assert col.search(QUERY, k=1)[0].id == "volcano"
    assert col.search(QUERY, k=1)[0].passage.text.startswith("The volcano")
    assert col.search("flooded river", k=1, mode="lexical")[0].id == "rain"  # full text moved to passages too
    col.close()
    assert format_version(home / "old") == 1


def test_a_failed_upgrade_changes_nothing(tmp_path, monkeypatch):
    import latentsearch.storage.store as storage

    home = v1_home(tmp_path)
    real = storage.Store.upgrade

    def failing(self):
        original = self.conn

        class Failing:  # the connection fails at the deletions' move, inside the upgrade's transaction
            def __getattr__(self, name):
                return getattr(original, name)

            def execute(self, sql, *args):
                if "UPDATE deletions" in sql:
                    raise sqlite3.OperationalError("disk I/O error")
                return original.execute(sql, *args)

        self.conn = Failing()
        try:
            return real(self)
        finally:
            self.conn = original

    monkeypatch.setattr(storage.Store, "upgrade", failing)
    with pytest.raises(ls.errors.LatentSearchError):
        ls.open("old", home=home)
    assert format_version(home / "old") == 1
    with sqlite3.connect(home / "old" / "collection.sqlite") as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'passages'").fetchone()
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'items_fts'").fetchone()
    monkeypatch.undo()
    check_upgraded(home)


@pytest.mark.slow  # a process per crash point, each loading the model
def test_an_upgrade_killed_at_any_file_operation_leaves_a_collection_that_opens(tmp_path):
    home = tmp_path / "home"

    def reset():
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(V1_FIXTURE, home)

    def check(point):
        check_upgraded(home)

    prelude = f"import latentsearch as ls\nHOME = {str(home)!r}\n"
    action = "col = ls.open('old', home=HOME)\ncol.search('lava', k=1)\ncol.close()"
    assert crash_points(tmp_path, prelude, action, reset, check) >= 2


# --- interfaces -----------------------------------------------------------------------------------


def test_cli_creates_with_passage_options_and_shows_where_a_hit_matched(home, tmp_path):
    import json

    from typer.testing import CliRunner

    from latentsearch.cli import app

    runner = CliRunner()
    made = runner.invoke(app, ["create", "docs", "--stride", "100", "--max-passages", "50"])
    assert made.exit_code == 0, made.output
    source = tmp_path / "docs.jsonl"
    rows = [{"id": "report", "text": report()}, {"id": "cake", "text": COOKING}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    added = runner.invoke(app, ["add", "docs", str(source)])
    assert added.exit_code == 0, added.output
    col = ls.open("docs", home=home)
    passages = col.passage_count()
    col.close()
    assert passages > 5 and f"({passages:,} passages)" in added.stdout
    found = runner.invoke(app, ["search", "docs", QUERY, "-k", "1", "--explain"], env={"COLUMNS": "250"})
    assert found.exit_code == 0, found.output
    hit = json.loads(runner.invoke(app, ["search", "docs", QUERY, "-k", "1", "--json"]).stdout)[0]["passage"]
    where = f"passage {hit['index'] + 1}: characters {hit['start']:,}–{hit['end']:,}"
    assert "report" in found.stdout and where in found.stdout and "passage: 1 (" in found.stdout
    hits = json.loads(runner.invoke(app, ["search", "docs", QUERY, "-k", "1", "--json"]).stdout)
    assert hits[0]["passage"]["index"] > 0 and VOLCANO in hits[0]["passage"]["text"]
    info = json.loads(runner.invoke(app, ["info", "docs", "--json"]).stdout)
    assert info["count"] == 2 and info["passages"] == passages
    assert info["passage_settings"] == {"stride": 100, "max_passages": 50}
    bad = runner.invoke(app, ["create", "other", "--max-passages", "0"])
    assert bad.exit_code == 1 and "max_passages" in bad.stderr and "Traceback" not in bad.output


def test_http_creates_with_passage_options_and_returns_the_passage(home):
    from fastapi.testclient import TestClient

    from latentsearch.server import create_app

    with TestClient(create_app(home)) as client:
        made = client.post("/api/collections", json={"name": "docs", "stride": 120, "max_passages": 40})
        assert made.status_code == 201, made.text
        assert made.json()["passage_settings"] == {"stride": 120, "max_passages": 40}
        items = [{"id": "report", "text": report()}, {"id": "cake", "text": COOKING}]
        assert client.post("/api/collections/docs/items", json={"items": items}).status_code == 200
        hits = client.post("/api/collections/docs/search", json={"query": QUERY, "k": 1, "explain": True}).json()
        assert hits[0]["id"] == "report" and hits[0]["passage"]["start"] > 0
        assert hits[0]["details"]["passage_rank"] == 1
        bad = client.post("/api/collections", json={"name": "bad", "max_passages": 0})
        assert bad.status_code == 422 and "max_passages" in bad.text


def test_a_lean_index_of_documents_reads_each_passages_own_vector_back_on_open(docs, monkeypatch):
    from latentsearch.storage import store as store_module

    monkeypatch.setattr(store_module, "SCAN_MIN", 2)  # the range scans, not the lookups, for these few
    index = docs.backend.index
    ids = faiss_ids(index)
    held = index.index.reconstruct_batch(ids)  # each passage's own vector (the report's several, the others')
    before = [(h.id, h.passage.index, round(h.score, 5)) for h in docs.search(QUERY, k=3, mode="vector")]
    docs.close()
    reopened = ls.open("docs", home=docs.path.parent)
    np.testing.assert_array_equal(reopened.backend.index.index.reconstruct_batch(ids), held)
    after = [(h.id, h.passage.index, round(h.score, 5)) for h in reopened.search(QUERY, k=3, mode="vector")]
    assert after == before and after[0][:2] != ("report", 0)  # the volcano is in a later passage
    reopened.close()


def faiss_ids(index) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.index.id_map).astype(np.int64)
