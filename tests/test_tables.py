"""DataFrames and Arrow tables in and out, Parquet and JSONL files in and out (streamed), round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.io import parquet as parquet_module

from .conftest import random_vectors, topic_items

pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()
DIM = 8


def run(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def snapshot(col):
    return sorted(
        (i.id, json.dumps(i.metadata, sort_keys=True), i.vector.tobytes()) for i in col.iter_items(with_vectors=True)
    )


# Metadata of every kind a collection holds: numbers, texts, nested values, a field of mixed kinds, a
# field named like an item column, fields some items lack.
def rich_metadata(n: int) -> list[dict]:
    out = []
    for i in range(n):
        m = {"n": i, "lang": ["en", "fr"][i % 2], "score": i / 3, "flag": i % 3 == 0}
        if i % 5 == 0:
            m["tags"] = ["a", i]
        if i % 7 == 0:
            m["author"] = {"name": f"a{i}", "born": 1900 + i}
        if i < 10:
            m["mixed"] = i if i % 2 else str(i)
        if i == 3:
            m["id"], m["vector"], m["text"] = "not the id", 1, "not the text"
        out.append(m)
    return out


def test_a_pandas_polars_or_arrow_table_adds_its_columns_as_ids_vectors_and_metadata(home):
    col = ls.create("t", encoder="precomputed", dim=DIM, metric="l2", home=home)
    vectors = random_vectors(6, DIM)
    frame = pd.DataFrame(
        {
            "id": [1, 2, 3],  # numbers become text ids
            "vector": list(vectors[:3]),
            "lang": ["en", None, "fr"],  # a missing value: no field on that item
            "when": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
        }
    )
    assert col.add(frame) == 3
    polars = pl.DataFrame({"key": ["p"], "emb": [vectors[3].tolist()], "tags": [["x", "y"]]})
    assert col.add(polars, id_field="key", vector_field="emb") == 1
    arrow = pa.table({"id": ["q", "r"], "vector": pa.array(vectors[4:].tolist(), pa.list_(pa.float32(), DIM))})
    assert col.upsert(arrow) == 2
    items = {i.id: i for i in col.iter_items(with_vectors=True)}
    assert list(items) == ["1", "2", "3", "p", "q", "r"]
    assert items["1"].metadata == {"lang": "en", "when": "2024-01-01T00:00:00"}
    assert items["2"].metadata == {"when": "2024-02-01T00:00:00"}
    assert items["p"].metadata == {"tags": ["x", "y"]}
    np.testing.assert_array_equal(np.stack([items[k].vector for k in items]), vectors)
    assert col.search(vectors[3], k=1)[0].id == "p"


def test_a_text_table_is_encoded_by_the_collections_model(home):
    ids, texts, metadata = topic_items()
    col = ls.create("topics", encoder="minilm", home=home)
    col.add(pd.DataFrame({"id": ids, "body": texts, "topic": [m["topic"] for m in metadata]}), text_field="body")
    hit = col.search("which planet has many moons", k=1, mode="vector")[0]
    assert hit.metadata == {"topic": "astronomy"} and hit.text.startswith("Jupiter")


@pytest.mark.parametrize(
    ("table", "options", "message"),
    [
        (
            lambda v: pd.DataFrame({"key": ["a"], "vector": [v[0]]}),
            {},
            "no 'id' column for the ids (columns: key, vector)",
        ),
        (lambda v: pd.DataFrame({"id": ["a"], "other": [1]}), {}, "neither a 'text' column nor a 'vector' column"),
        (lambda v: pd.DataFrame({"id": ["a"], "vector": [v[0][:3]]}), {}, "wrong vector dimension"),
        (lambda v: pd.DataFrame({"id": ["a"], "vector": ["1,2,3"]}), {}, "column 'vector' must hold lists of numbers"),
        (
            lambda v: pa.table({"id": ["a", "b"], "vector": [[1.0] * DIM, [1.0] * 3]}),
            {},
            "row 1: a vector of 3 numbers where the others have 8",
        ),
        (
            lambda v: pa.table({"id": ["a", "b"], "vector": [[1.0] * DIM, None]}),
            {},
            "row 1: no vector in column 'vector'",
        ),
        (lambda v: pa.table({"id": ["a", None], "vector": [[1.0] * DIM] * 2}), {}, "row 1: no id in column 'id'"),
        (lambda v: pa.table({"id": ["a"], "vector": [["x"] * DIM]}), {}, "holds lists of string, not numbers"),
        (
            lambda v: pd.DataFrame({"id": ["a"], "vector": [v[0]]}),
            {"vectors": np.zeros((1, DIM))},
            "a table holds the texts",
        ),
    ],
)
def test_a_bad_table_is_one_line_and_adds_nothing(home, table, options, message):
    col = ls.create("t", encoder="precomputed", dim=DIM, home=home)
    col.add(["kept"], vectors=random_vectors(1, DIM))
    before = snapshot(col)
    with pytest.raises(ls.InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        col.add(table(random_vectors(2, DIM)), **options)
    assert "\n" not in str(caught.value)
    assert snapshot(col) == before


def test_to_arrow_and_to_pandas_give_every_item_with_metadata_columns_or_structs(home):
    col = ls.create("t", encoder="precomputed", dim=DIM, metric="l2", home=home)
    vectors = random_vectors(20, DIM)
    metadata = rich_metadata(20)
    col.add([f"i{i}" for i in range(20)], vectors=vectors, metadata=metadata)
    table = col.to_arrow(vectors=True)
    assert table.column_names[:3] == ["id", "text", "uri"] and table.column_names[-1] == "vector"
    assert table.schema.field("n").type == pa.int64() and table.schema.field("score").type == pa.float64()
    assert table.schema.field("flag").type == pa.bool_()
    assert {"metadata.id", "metadata.vector", "metadata.text"} <= set(table.column_names)  # not the item's own
    assert table.column("id").to_pylist() == [f"i{i}" for i in range(20)]
    np.testing.assert_array_equal(np.stack(table.column("vector").to_numpy(zero_copy_only=False)), vectors)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert json.loads(table.column("tags")[5].as_py()) == ["a", 5]  # lists: JSON texts, named in the schema
    assert table.column("lang").to_pylist()[:2] == ["en", "fr"]
    frame = col.to_pandas()
    assert list(frame["id"]) == [f"i{i}" for i in range(20)] and "vector" not in frame
    assert frame.loc[7, "author"] == json.dumps({"name": "a7", "born": 1907})
    structs = col.to_arrow(flatten=False).column("metadata").to_pylist()
    assert structs[7]["author"] == {"name": "a7", "born": 1907} and structs[7]["n"] == 7
    empty = ls.create("empty", encoder="precomputed", dim=DIM, home=home)
    assert empty.to_arrow(vectors=True).num_rows == 0


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_export_with_vectors_then_add_gives_the_same_ids_metadata_and_bits(home, tmp_path, monkeypatch, suffix, metric):
    monkeypatch.setattr(parquet_module, "PARQUET_BATCH", 64)  # several batches each way
    n = 300
    col = ls.create("src", encoder="precomputed", dim=DIM, metric=metric, home=home)
    col.add([f"i{i}" for i in range(n)], vectors=random_vectors(n, DIM, seed=3), metadata=rich_metadata(n))
    col.close()
    out = tmp_path / f"items{suffix}"
    run("export", "src", out, "--vectors")
    run("create", "copy", "--encoder", "precomputed", "--dim", DIM, "--metric", metric)
    run("add", "copy", out, "--vector-field", "vector")
    source, copy = ls.open("src", home=home), ls.open("copy", home=home)
    assert [i.id for i in copy.iter_items()] == [i.id for i in source.iter_items()]
    assert snapshot(copy) == snapshot(source)  # metadata equal, vectors bit for bit


def test_a_parquet_file_of_texts_streams_in_batches_and_a_bad_row_late_in_it_adds_nothing(home, tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_module, "PARQUET_BATCH", 4)
    ids, texts, metadata = topic_items()
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts, "topic": [m["topic"] for m in metadata]}), path)
    read = []
    batches = parquet_module.ParquetSource.batches
    monkeypatch.setattr(parquet_module.ParquetSource, "batches", lambda self: (read.append(1), batches(self))[1])
    run("create", "docs")
    run("add", "docs", path)
    assert len(read) == 2  # read twice, in batches of 4: checked, then added
    col = ls.open("docs", home=home)
    assert col.count() == len(ids)
    assert col.search("bread dough", k=1, mode="vector")[0].metadata == {"topic": "cooking"}
    bad = pa.table({"id": [f"n{i}" for i in range(10)], "text": ["fine"] * 9 + [" "]})  # row 9, third batch
    pq.write_table(bad, tmp_path / "bad.parquet")
    result = run("add", "docs", tmp_path / "bad.parquet", ok=False)
    assert result.exit_code != 0 and "row 9: empty or non-string 'text'" in result.stderr
    again = run("add", "docs", path, ok=False)
    assert again.exit_code != 0 and "already exist" in again.stderr and "--upsert" in again.stderr
    assert ls.open("docs", home=home).count() == len(ids)


def test_files_that_are_not_what_they_claim_are_one_line_errors(home, tmp_path):
    run("create", "v", "--encoder", "precomputed", "--dim", DIM)
    fake = tmp_path / "fake.parquet"
    fake.write_text("id,text\n1,hello\n")
    result = run("add", "v", fake, ok=False)
    assert result.exit_code != 0 and f"cannot read {fake}: not a Parquet file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = run("add", "v", tmp_path / "none.parquet", ok=False)
    assert "no such file" in missing.stderr
    for name, message in (("out.csv", "use a .parquet or .jsonl file name"), ("nowhere/out.jsonl", "does not exist")):
        result = run("export", "v", tmp_path / name, ok=False)
        assert result.exit_code != 0 and message in result.stderr
    (tmp_path / "taken.jsonl").write_text("keep me\n")
    result = run("export", "v", tmp_path / "taken.jsonl", ok=False)
    assert "exists" in result.stderr and "--overwrite" in result.stderr
    assert (tmp_path / "taken.jsonl").read_text() == "keep me\n"
    run("export", "v", tmp_path / "taken.jsonl", "--overwrite")
    assert (tmp_path / "taken.jsonl").read_text() == ""  # an empty collection: an empty file


def test_polars_uris_arrow_nans_and_mixed_pandas_columns(home):
    col = ls.create("t", encoder="precomputed", dim=DIM, home=home)
    vectors = random_vectors(3, DIM)
    col.add(pl.DataFrame({"id": ["a"], "vector": [vectors[0].tolist()], "uri": ["file:///a.png"]}))  # large_string
    assert col.get(["a"])[0].uri == "file:///a.png" and col.get(["a"])[0].metadata == {}
    col.add(pa.table({"id": ["b"], "vector": [vectors[1].tolist()], "x": pa.array([float("nan")])}))
    assert col.get(["b"])[0].metadata == {}  # a NaN is a missing value: no field
    before = snapshot(col)
    with pytest.raises(ls.InvalidInputError, match="cannot read the table"):
        col.add(pd.DataFrame({"id": ["c", "d"], "vector": [vectors[2], vectors[2]], "m": [1, "two"]}))
    assert snapshot(col) == before


def test_an_upsert_during_an_export_does_not_export_an_item_twice(home, tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_module, "PARQUET_BATCH", 10)
    col = ls.create("src", encoder="precomputed", dim=DIM, home=home)
    col.add([f"i{i}" for i in range(50)], vectors=random_vectors(50, DIM), metadata=[{"n": i} for i in range(50)])
    moved = []

    def progress(done: int, total: int) -> None:
        if done == 10 and not moved:  # after the first batch: i0 is rewritten, to a row after the last
            col.upsert(["i0"], vectors=random_vectors(1, DIM, seed=7), metadata=[{"n": -1}])
            moved.append(1)

    out = tmp_path / "out.parquet"
    parquet_module.export_items(col, out, progress=progress)
    ids = pq.read_table(out).column("id").to_pylist()
    assert moved and len(ids) == len(set(ids)) == 50


def test_a_named_vector_column_must_exist_and_an_export_needs_a_file_name(home, tmp_path):
    run("create", "v", "--encoder", "precomputed", "--dim", DIM)
    pq.write_table(pa.table({"id": ["a"], "text": ["hello"]}), tmp_path / "t.parquet")
    result = run("add", "v", tmp_path / "t.parquet", "--vector-field", "emb", ok=False)
    assert result.exit_code != 0 and "no 'emb' column for the vectors (columns: id, text)" in result.stderr
    (tmp_path / "folder.jsonl").mkdir()
    result = run("export", "v", tmp_path / "folder.jsonl", "--overwrite", ok=False)
    assert result.exit_code != 0 and "it is a folder" in result.stderr


def test_a_parquet_file_whose_texts_stop_part_way_is_refused_whatever_its_batches(home, tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_module, "PARQUET_BATCH", 4)
    run("create", "v", "--encoder", "precomputed", "--dim", DIM)
    vectors = random_vectors(8, DIM)
    table = pa.table({"id": [f"r{i}" for i in range(8)], "text": ["t"] * 4 + [None] * 4, "vector": vectors.tolist()})
    pq.write_table(table, tmp_path / "half.parquet")
    result = run("add", "v", tmp_path / "half.parquet", ok=False)
    assert result.exit_code != 0 and "some rows have a 'text' text and others" in result.stderr
    assert ls.open("v", home=home).count() == 0
