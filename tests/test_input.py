"""Input readers and bad input through the Python API: clear errors, nothing changed."""

import json

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.io.ingest import ingest, read_input

from .conftest import random_vectors


def test_jsonl_reader_fields_and_generated_ids(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "first", "lang": "en"}\n\n{"body": "second", "lang": "de", "n": 2}\n')
    records = read_input(path, text_field="body")
    assert records.ids == ["d-1", "d-3"]
    assert records.texts == ["first", "second"]
    assert records.metadata == [{"lang": "en"}, {"lang": "de", "n": 2}]
    only = read_input(path, text_field="body", metadata_fields=["n"])
    assert only.metadata == [{}, {"n": 2}]


def test_csv_reader_parses_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,text,year,score,tag\na,"hello, world",2001,0.5,x\nb,bye,1999,nan,y\n')
    records = read_input(path)
    assert records.ids == ["a", "b"]
    assert records.texts == ["hello, world", "bye"]
    assert records.metadata == [{"year": 2001, "score": 0.5, "tag": "x"}, {"year": 1999, "score": "nan", "tag": "y"}]


def test_folder_reader(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("alpha text")
    (tmp_path / "docs" / "sub" / "b.md").write_text("# beta\nmarkdown")
    (tmp_path / "docs" / "skip.bin").write_bytes(b"\0\1")
    records = read_input(tmp_path / "docs")
    assert records.ids == ["a.txt", "sub/b.md"]
    source = str((tmp_path / "docs" / "sub" / "b.md").resolve())
    assert records.metadata[1] == {"path": "sub/b.md", "suffix": ".md", "source": source, "title": "beta"}
    assert records.texts == ["alpha text", "beta\n\nmarkdown"] and records.skipped == [] and records.pages is None


def test_npz_reader_and_no_pickle(tmp_path):
    vectors = random_vectors(3, 4)
    np.savez(tmp_path / "v.npz", vectors=vectors, ids=np.array(["x", "y", "z"]))
    records = read_input(tmp_path / "v.npz")
    assert records.ids == ["x", "y", "z"] and np.allclose(records.vectors, vectors)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ls.InvalidInputError, match="cannot read"):
        read_input(tmp_path / "obj.npy")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": 1, "text": "a"}\n[1, 2]\n', "line 2: expected a JSON object"),
        ('{"id": 1, "title": "a"}\n', "no 'text' field (fields: id, title)"),
        ('{"id": 1, "text": "a"}\n{"text": "b"}\n', "line 2: no 'id' field"),
        ("", "no items"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ls.InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_input(path)


def test_unknown_file_type_and_binary_text(tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(ls.InvalidInputError, match="unknown file type .xlsx"):
        read_input(tmp_path / "x.xlsx")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ls.InvalidInputError, match="not UTF-8"):
        read_input(tmp_path / "bin.jsonl")


@pytest.fixture
def vecs(home):
    col = ls.create("vecs", encoder="precomputed", dim=4, home=home)
    col.add(["a", "b"], vectors=random_vectors(2, 4), metadata=[{"x": 1}, {"x": 2}])
    yield col
    col.close()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.add(["c"], vectors=[[1.0, 2.0, 3.0]]), ls.InvalidInputError, "wrong vector dimension"),
        (lambda c: c.add(["c"], vectors=[[1.0, float("nan"), 0, 0]]), ls.InvalidInputError, "NaN"),
        (lambda c: c.add(["c"], vectors=[[0.0, 0, 0, 0]]), ls.InvalidInputError, "all zeros"),
        (lambda c: c.add(["c"], vectors=[["a", "b", "c", "d"]]), ls.InvalidInputError, "must be numbers"),
        (lambda c: c.add(["a"], vectors=random_vectors(1, 4)), ls.ConflictError, "already exists"),
        (lambda c: c.add(["c", "c"], vectors=random_vectors(2, 4)), ls.InvalidInputError, "duplicate id 'c'"),
        (lambda c: c.add(["c", ""], vectors=random_vectors(2, 4)), ls.InvalidInputError, "non-empty strings"),
        (lambda c: c.add("c", vectors=random_vectors(1, 4)), ls.InvalidInputError, "not a single string"),
        (lambda c: c.add(["c"], vectors=random_vectors(2, 4)), ls.InvalidInputError, "2 vectors for 1 items"),
        (
            lambda c: c.add(["c"], vectors=random_vectors(1, 4), metadata=[{"v": float("inf")}]),
            ls.InvalidInputError,
            "cannot be stored as JSON",
        ),
        (lambda c: c.add(["c"], vectors=random_vectors(1, 4), metadata=["x"]), ls.InvalidInputError, "not a dict"),
        (lambda c: c.add(["c"], ["some text"]), ls.InvalidInputError, "precomputed vectors"),
        (lambda c: c.add(["c"]), ls.InvalidInputError, "nothing to encode"),
        (lambda c: c.delete(["a", "ghost"]), ls.ItemNotFoundError, "unknown id 'ghost'"),
        (lambda c: c.get(["ghost"]), ls.ItemNotFoundError, "unknown id 'ghost'"),
        (lambda c: c.search(like="ghost"), ls.ItemNotFoundError, "unknown id 'ghost'"),
        (lambda c: c.search([1.0, 2.0]), ls.InvalidInputError, "wrong vector dimension"),
        (lambda c: c.search([1.0, 2.0, 3.0, float("nan")]), ls.InvalidInputError, "NaN"),
        (lambda c: c.search([1.0, 2.0, 3.0, 4.0], where="x >"), ls.FilterError, "malformed filter"),
        (lambda c: c.search([1.0, 2.0, 3.0, 4.0], k=-1), ls.InvalidInputError, "k must be"),
        (lambda c: c.search(), ls.InvalidInputError, "exactly one"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(vecs, call, error, message):
    before = [(it.id, it.metadata) for it in vecs.items()]
    seq = vecs.backend.store.seq
    with pytest.raises(error, match=message) as info:
        call(vecs)
    assert "\n" not in str(info.value)
    assert [(it.id, it.metadata) for it in vecs.items()] == before
    assert vecs.backend.store.seq == seq


def test_empty_text_is_refused_with_minilm(home):
    col = ls.create("txt", encoder="minilm", index="flat", home=home)
    with pytest.raises(ls.InvalidInputError, match="text #1 is empty"):
        col.add(["a", "b"], ["fine", "   "])
    with pytest.raises(ls.InvalidInputError, match="empty"):
        col.search("")
    assert col.count() == 0
    col.close()


def test_ingest_checks_everything_before_the_first_write(home, tmp_path):
    col = ls.create("big", encoder="precomputed", dim=4, home=home)
    col.add(["row-9"], vectors=random_vectors(1, 4))
    path = tmp_path / "rows.jsonl"
    with path.open("w") as handle:
        for i in range(10):
            handle.write(json.dumps({"id": f"row-{i}", "v": random_vectors(1, 4, i)[0].tolist()}) + "\n")
    records = read_input(path, vector_field="v")
    with pytest.raises(ls.ConflictError, match="use --upsert"):
        ingest(col, records, chunk_size=3)
    assert col.count() == 1  # the first chunks were not written either
    assert ingest(col, records, chunk_size=3, upsert=True) == 10
    assert col.count() == 10
    col.close()


def test_items_given_as_rows_are_added_as_columns(home):
    from latentsearch.io.items import add_items

    col = ls.create("rows", encoder="precomputed", dim=4, home=home)
    vectors = random_vectors(3, 4, 0)
    rows = [{"id": "a", "vector": vectors[0], "text": "first", "metadata": {"n": 1}}, {"id": "b", "vector": vectors[1]}]
    assert add_items(col, rows) == 2
    a, b = col.get(["a", "b"])
    assert (a.text, a.metadata, b.text, b.metadata) == ("first", {"n": 1}, None, {})
    assert col.search(vectors[1], k=1)[0].id == "b"
    with pytest.raises(ls.InvalidInputError, match="a vector for every item in the batch, or for none"):
        add_items(col, [{"id": "c", "vector": vectors[2]}, {"id": "d", "text": "no vector"}])
    with pytest.raises(ls.InvalidInputError, match="item 1 has no id"):
        add_items(col, [{"id": "c", "vector": vectors[2]}, {"vector": vectors[2]}])
    with pytest.raises(ls.ConflictError):
        add_items(col, [{"id": "a", "vector": vectors[2]}])
    assert col.count() == 2  # nothing of a refused batch was written
    assert add_items(col, [{"id": "a", "vector": vectors[2], "text": "replaced"}], upsert=True) == 1
    assert col.get(["a"])[0].text == "replaced" and col.count() == 2
    col.close()


def test_image_files_added_from_streams_leave_nothing_behind_when_refused(home):
    import io

    from latentsearch.io.items import UPLOADS_DIR, add_image_files

    col = ls.create("noimages", encoder="precomputed", dim=4, home=home)  # no encoder for images
    with pytest.raises(ls.InvalidInputError):
        add_image_files(col, [("../../outside.png", io.BytesIO(b"not an image"))])
    assert list((col.path / UPLOADS_DIR).iterdir()) == [] and not (home.parent / "outside.png").exists()
    assert col.count() == 0
    col.close()
