"""The CLI end to end (typer's CliRunner, in process), and its one-line errors."""

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from latentsearch.cli import app

from .conftest import random_vectors, topic_items

runner = CliRunner()


def run(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


@pytest.fixture
def docs_jsonl(tmp_path):
    ids, texts, metadata = topic_items()
    path = tmp_path / "docs.jsonl"
    with path.open("w") as handle:
        for i, t, m in zip(ids, texts, metadata):
            handle.write(json.dumps({"id": i, "body": t, **m}) + "\n")
    return path


def test_quick_start_flow(home, docs_jsonl):
    run("create", "notes", "--encoder", "minilm", "--index", "hnsw")
    added = run("add", "notes", docs_jsonl, "--text-field", "body", "--id-field", "id")
    assert "added 20 items" in added.stdout and "items/s" in added.stdout
    result = run("search", "notes", "how do I bake bread", "-k", "3", "--where", 'lang = "en"', "--json")
    hits = json.loads(result.stdout)
    assert len(hits) == 3
    assert all(h["metadata"]["lang"] == "en" for h in hits)
    assert hits[0]["metadata"]["topic"] == "cooking"
    table = run("search", "notes", "telescope", "-k", "2").stdout
    assert "astronomy-0" in table and "score" in table
    assert run("count", "notes").stdout.strip() == "20"
    listed = json.loads(run("list", "--json").stdout)
    assert listed == [{"name": "notes", "count": 20, "encoder": "minilm", "dim": 384, "modality": "text"}]
    got = json.loads(run("get", "notes", "finance-1", "--json").stdout)
    assert got[0]["metadata"]["topic"] == "finance" and got[0]["text"].startswith("Diversify")
    like = json.loads(run("search", "notes", "--like", "finance-1", "-k", "3", "--json").stdout)
    assert "finance-1" not in [h["id"] for h in like]
    assert "deleted 2 items" in run("delete", "notes", "finance-1", "finance-2").stdout
    assert run("count", "notes").stdout.strip() == "18"
    info = json.loads(run("info", "notes", "--json").stdout)
    assert info["count"] == 18 and info["faiss_factory"].startswith("HNSW") and info["tombstones"] == 2
    compacted = run("compact", "notes").stdout
    assert "rebuilt the index of notes" in compacted and "partition" not in compacted  # (too small for one)
    info = json.loads(run("info", "notes", "--json").stdout)
    assert info["tombstones"] == 0 and info["filter_partition_lists"] == 0
    run("drop", "notes", "--yes")
    assert json.loads(run("list", "--json").stdout) == []


def test_home_option_overrides_environment(home, tmp_path, docs_jsonl):
    other = tmp_path / "elsewhere"
    run("create", "c", "--encoder", "precomputed", "--dim", "4", "--home", other)
    assert (other / "c" / "collection.sqlite").exists()
    assert not (home / "c").exists()


def test_upsert_flag_and_numpy_input(home, tmp_path):
    vectors = random_vectors(30, 8)
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(f"id{i}" for i in range(30)))
    run("create", "vec", "--encoder", "precomputed", "--dim", "8", "--index", "flat")
    run("add", "vec", tmp_path / "v.npy", "--ids-file", tmp_path / "ids.txt")
    again = run("add", "vec", tmp_path / "v.npy", "--ids-file", tmp_path / "ids.txt", ok=False)
    assert again.exit_code == 1 and "use --upsert" in again.stderr
    run("add", "vec", tmp_path / "v.npy", "--ids-file", tmp_path / "ids.txt", "--upsert")
    assert run("count", "vec").stdout.strip() == "30"
    np.save(tmp_path / "q.npy", vectors[4])
    hits = json.loads(run("search", "vec", "--vector", tmp_path / "q.npy", "-k", "1", "--json").stdout)
    assert hits[0]["id"] == "id4"


def test_update_metadata_from_a_file(home, tmp_path):
    run("create", "vec", "--encoder", "precomputed", "--dim", "8", "--index", "flat")
    np.save(tmp_path / "v.npy", random_vectors(5, 8))
    run("add", "vec", tmp_path / "v.npy")
    (tmp_path / "u.jsonl").write_text('{"id": "v-0", "label": "spam"}\n{"id": "v-3", "label": "ham", "score": 0.5}\n')
    assert "updated the metadata of 2 items" in run("update-metadata", "vec", tmp_path / "u.jsonl").stdout
    got = json.loads(run("get", "vec", "v-0", "v-3", "--json").stdout)
    assert [g["metadata"] for g in got] == [{"label": "spam"}, {"label": "ham", "score": 0.5}]
    (tmp_path / "u.csv").write_text("key,label\nv-0,\nv-1,eggs\n")
    run("update-metadata", "vec", tmp_path / "u.csv", "--id-field", "key")
    assert json.loads(run("get", "vec", "v-1", "--json").stdout)[0]["metadata"] == {"label": "eggs"}
    (tmp_path / "bad.jsonl").write_text('{"id": "v-2", "label": "x"}\n{"id": "ghost", "label": "x"}\n')
    bad = run("update-metadata", "vec", tmp_path / "bad.jsonl", ok=False)
    assert bad.exit_code == 1 and "unknown id 'ghost'" in bad.stderr and "nothing was updated" in bad.stderr
    assert json.loads(run("get", "vec", "v-2", "--json").stdout)[0]["metadata"] == {}
    no_id = run("update-metadata", "vec", tmp_path / "u.csv", ok=False)
    assert no_id.exit_code == 1 and "line 2: no 'id' field" in no_id.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", "missing", "x"), "collection 'missing' not found"),
        (("create", "../evil"), "invalid collection name"),
        (("create", "v", "--index", "bogus"), "unknown index 'bogus'"),
        (("create", "v", "--encoder", "nope"), "unknown encoder 'nope'"),
        (("create", "v", "--encoder", "precomputed"), "needs the vector dimension"),
        (("add", "vecs", "nowhere.jsonl"), "no such file"),
        (("search", "vecs", "--vector", "nowhere.npy"), "cannot read query vector"),
        (("search", "vecs", "--like", "ghost"), "unknown id 'ghost'"),
        (("search", "vecs", "--like", "a0", "--where", "x = "), "malformed filter"),
        (("search", "vecs", "--like", "a0", "-k", "0"), "k must be from 1"),
        (("search", "vecs", "text", "--like", "a0"), "exactly one of"),
        (("search", "vecs", "some text"), "precomputed vectors"),
        (("delete", "vecs", "a0", "ghost"), "unknown id 'ghost'"),
        (("get", "vecs", "ghost"), "unknown id 'ghost'"),
        (("drop", "vecs"), "pass --yes"),
    ],
)
def test_errors_are_one_line_and_change_nothing(home, args, message):
    run("create", "vecs", "--encoder", "precomputed", "--dim", "4")
    from latentsearch import open as ls_open

    col = ls_open("vecs")
    col.add(["a0", "a1"], vectors=random_vectors(2, 4))
    col.close()
    result = run(*args, ok=False)
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output + result.stderr
    assert run("count", "vecs").stdout.strip() == "2"


def test_bad_input_files_report_where(home, tmp_path):
    run("create", "t", "--encoder", "precomputed", "--dim", "4")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    result = run("add", "t", bad, ok=False)
    assert "bad.jsonl line 2: invalid JSON" in result.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "  "}\n')
    assert "line 2: empty" in run("add", "t", empty, ok=False).stderr
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "vec": [1,2,3,4]}\n{"id": "a", "vec": [1,2,3,4]}\n')
    assert "duplicate id 'a'" in run("add", "t", dup, "--vector-field", "vec", ok=False).stderr
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"id": "a", "vec": [1,2,3]}\n')
    assert "wrong vector dimension" in run("add", "t", wrong, "--vector-field", "vec", ok=False).stderr
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"id": "a", "vec": [1,2,3,NaN]}\n')
    assert "NaN" in run("add", "t", nan, "--vector-field", "vec", ok=False).stderr
    assert run("count", "t").stdout.strip() == "0"


def test_help_explains_commands():
    result = run("--help")
    for name in ("create", "add", "search", "delete", "demo"):
        assert name in result.stdout
    assert "--where" in run("search", "--help").stdout


def test_help_lists_each_command_by_its_summary_and_wraps_its_paragraphs_whole():
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():
        assert all("\n" not in part for part in command.help.split("\n\n")), name  # (breaks would land mid-line)
    listing = run("--help").stdout
    assert "Rebuild the FAISS index from SQLite, and its filter" in listing and "tombstones" not in listing
    assert "tombstones" in run("compact", "--help").stdout


def test_help_does_not_import_torch_or_faiss():
    import subprocess
    import sys

    code = (
        "import sys; from latentsearch.cli import app; from typer.testing import CliRunner; "
        "CliRunner().invoke(app, ['search', '--help']); "
        "print(any(m in sys.modules for m in ('torch', 'faiss', 'sentence_transformers')))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_map_colours_the_most_frequent_values_and_refuses_bad_counts(home, tmp_path):
    run("create", "tags", "--encoder", "precomputed", "--dim", "4")
    from latentsearch import open as ls_open

    tags = ["big"] * 20 + ["mid"] * 10 + [f"t{i:02d}" for i in range(30)]
    with ls_open("tags") as col:
        col.add([f"i{i}" for i in range(60)], vectors=random_vectors(60, 4), metadata=[{"tag": t} for t in tags])
    out = tmp_path / "m.html"
    run("map", "tags", "--method", "pca", "--color-by", "tag", "--max-colors", 2, "--out", out)
    page = out.read_text()
    names = ('"name":"big (20)"', '"name":"mid (10)"', '"name":"other (30 in 30 values)"')
    assert all(name in page for name in names) and '"name":"t00 (1)"' not in page
    for bad in (0, 25):
        result = run("map", "tags", "--method", "pca", "--color-by", "tag", "--max-colors", bad, "--out", out, ok=False)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, result.stderr
        assert f"max_colors must be from 1 to 24, got {bad}" in lines[0]
    assert "--max-colors" in run("map", "--help").stdout


def test_one_shot_commands_leave_the_index_on_small_pages(home, monkeypatch):
    """A one-shot command does a few searches: it does not move its index onto huge pages (that costs
    more than it saves, and would compete with the command for the cores); a user's own setting
    stands."""
    monkeypatch.delenv("LATENTSEARCH_HUGE_PAGES", raising=False)
    run("list", "--home", home)
    assert os.environ["LATENTSEARCH_HUGE_PAGES"] == "0"
    monkeypatch.setenv("LATENTSEARCH_HUGE_PAGES", "1")
    run("list", "--home", home)
    assert os.environ["LATENTSEARCH_HUGE_PAGES"] == "1"


def test_compact_says_it_built_the_filter_partition(home):
    import latentsearch as ls
    from latentsearch.index.partition import MIN_VECTORS, list_count

    col = ls.create("big", encoder="precomputed", dim=8, index="hnsw", home=home)
    col.add([str(i) for i in range(MIN_VECTORS)], vectors=random_vectors(MIN_VECTORS, 8))
    col.close()
    compacted = run("compact", "big")
    assert f"and its filter partition ({list_count(MIN_VECTORS)} lists)" in compacted.stdout
    assert "partitioning big" in compacted.stderr and f"{MIN_VECTORS}/{MIN_VECTORS}" in compacted.stderr
    assert json.loads(run("info", "big", "--json").stdout)["filter_partition_lists"] == list_count(MIN_VECTORS)
