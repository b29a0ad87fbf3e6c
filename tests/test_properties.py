"""Property-based bad input (hypothesis): every input either works or gives a clear error, never a
traceback or a 500, and a refused input changes nothing. Over the Python API, the CLI and HTTP.

LATENTSEARCH_FUZZ_EXAMPLES raises the number of examples per property (the soak run uses 1,000);
LATENTSEARCH_FUZZ_COUNT_FILE, when set, collects how many inputs were tried.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.server import create_app
from latentsearch.storage.filters import compile_filter

EXAMPLES = int(os.environ.get("LATENTSEARCH_FUZZ_EXAMPLES", "40"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def tried(kind: str) -> None:
    path = os.environ.get("LATENTSEARCH_FUZZ_COUNT_FILE")
    if path:
        with open(path, "a") as handle:
            handle.write(kind + "\n")


@pytest.fixture(scope="module")
def col(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz")
    collection = ls.create("fuzz", encoder="precomputed", dim=4, index="hnsw", home=home)
    collection.add(["a", "b", "c"], vectors=np.eye(4, dtype=np.float32)[:3], metadata=[{"n": 1}, {"n": 2}, {"s": "x"}])
    yield collection
    collection.close()


def snapshot(collection):
    return collection.backend.store.seq, [(it.id, json.dumps(it.metadata, sort_keys=True)) for it in collection.items()]


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
vectors = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=6),
    st.lists(st.lists(st.floats(width=32), min_size=0, max_size=5), min_size=0, max_size=3),
    st.text(max_size=5),
    st.lists(st.text(max_size=3), max_size=4),
)


@fuzz
@given(
    ids=st.lists(st.one_of(st.text(max_size=30), st.integers(), st.none()), max_size=4),
    vector=vectors,
    meta=json_values,
)
def test_python_add_never_crashes_and_refusals_change_nothing(col, ids, vector, meta):
    tried("python add")
    before = snapshot(col)
    metadata = [meta if isinstance(meta, dict) else {"v": meta}] * len(ids)
    try:
        col.add(ids, vectors=vector, metadata=metadata)
    except ls.LatentSearchError as exc:
        assert "\n" not in str(exc)
        assert snapshot(col) == before
    else:
        col.delete(list(ids))  # keep the collection small for the next example


@fuzz
@given(
    query=vectors,
    k=st.one_of(st.integers(-5, 50), st.floats(), st.text(max_size=3)),
    where=st.one_of(st.none(), json_values, st.text(max_size=40)),
)
def test_python_search_never_crashes(col, query, k, where):
    tried("python search")
    try:
        hits = col.search(query, k=k, where=where)
    except ls.LatentSearchError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(hits) <= max(int(k), 0)


INJECTIONS = st.sampled_from(
    [
        "x = 1; DROP TABLE items",
        "x = '1' OR 1=1 --",
        'lang = "en") OR (1=1',
        "json_extract(metadata, '$') = 1",
        "a in (select rowid from items)",
        "a = 1 union select * from manifest",
    ]
)


@fuzz
@given(
    expression=st.one_of(
        st.text(max_size=60),
        INJECTIONS,
        st.from_regex(r"[a-z]{1,4} ?(=|!=|<|>=|in) ?[\"'0-9a-z(), ]{0,12}", fullmatch=True),
    )
)
def test_filter_expressions_never_reach_sql_as_code(col, expression):
    tried("filter expression")
    before = snapshot(col)
    try:
        sql, params = compile_filter(expression)
    except ls.FilterError as exc:
        assert "\n" not in str(exc)
        return
    col.backend.store.rowids_matching(sql, params)  # runs as parameterised SQL without error
    assert snapshot(col) == before


@fuzz
@given(
    name=st.one_of(
        st.text(max_size=70),
        st.sampled_from(["../x", "..", "/etc/passwd", "a/../../b", "C:\\x", ".", "~root", "a\x00b"]),
    )
)
def test_collection_names_stay_inside_the_data_directory(tmp_path_factory, name):
    tried("collection name")
    home = tmp_path_factory.mktemp("names")
    try:
        col = ls.create(name, encoder="precomputed", dim=2, home=home)
    except ls.LatentSearchError:
        assert [p for p in home.iterdir()] == []
        return
    assert col.path.parent == home.resolve()
    col.close()


runner = CliRunner()


@fuzz
@given(
    args=st.lists(
        st.one_of(
            st.text(max_size=20), st.sampled_from(["-k", "--where", "--mode", "--like", "--json", "0", "-1", "nan"])
        ),
        max_size=6,
    )
)
def test_cli_search_arguments_never_give_a_traceback(col, args):
    tried("cli arguments")
    result = runner.invoke(app, ["search", "fuzz", "--home", str(col.path.parent), *args])
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 1:
        assert result.stderr.startswith("error: ")


@pytest.fixture(scope="module")
def http(col):
    with TestClient(create_app(col.path.parent)) as client:
        yield client


@fuzz
@given(
    body=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["query", "vector", "like", "k", "where", "mode", "explain"]), json_values, max_size=5
        ),
    )
)
def test_http_search_bodies_never_give_a_500(http, body):
    tried("http body")
    if isinstance(body, float) and not math.isfinite(body):
        body = None
    try:
        payload = json.dumps(body, allow_nan=False)
    except ValueError:
        payload = json.dumps(body)  # NaN/Infinity literals: not JSON, the server must refuse them
    response = http.post("/api/collections/fuzz/search", content=payload, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "error" in response.json()


@fuzz
@given(
    items=st.lists(
        st.dictionaries(st.sampled_from(["id", "text", "vector", "metadata", "uri"]), json_values, max_size=5),
        max_size=4,
    )
)
def test_http_add_bodies_never_give_a_500_and_refusals_change_nothing(http, col, items):
    tried("http add")
    before = snapshot(col)
    try:
        payload = json.dumps({"items": items}, allow_nan=False)
    except ValueError:
        return
    response = http.post("/api/collections/fuzz/items", content=payload, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        added = [it["id"] for it in items]
        http.post("/api/collections/fuzz/items/delete", json={"ids": added})
    else:
        assert snapshot(col) == before


@fuzz
@given(field=st.one_of(st.text(max_size=30), INJECTIONS, st.from_regex(r"[a-z]{1,5}(\.[a-z]{1,5})?", fullmatch=True)))
def test_field_indexes_take_only_field_names(col, field):
    tried("field index")
    before = snapshot(col)
    try:
        created = col.index_field(field)
    except ls.LatentSearchError as exc:
        assert "\n" not in str(exc)
    else:
        assert field in col.backend.store.field_indexes()
        assert col.search(np.eye(4, dtype=np.float32)[0], k=3, where={field: 1}) is not None
        if created:
            col.drop_field_index(field)
    assert snapshot(col) == before and col.backend.store.field_indexes() == []
    assert col.backend.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def restore(collection, saved):
    """Put back each item's metadata as it was (a merge patch: null every field, then set the old ones)."""
    current = {it.id: it.metadata for it in collection.items()}
    collection.update_metadata({i: {key: None for key in current[i]} for i in saved})
    collection.update_metadata({i: meta for i, meta in saved.items() if meta})


update_ids = st.one_of(st.sampled_from(["a", "b", "c"]), st.text(max_size=8), st.integers(), st.none())


@fuzz
@given(updates=st.one_of(st.dictionaries(update_ids, json_values, max_size=3), json_values))
def test_python_metadata_updates_never_crash_and_refusals_change_nothing(col, updates):
    tried("python update_metadata")
    before = snapshot(col)
    saved = {it.id: it.metadata for it in col.items()}
    try:
        col.update_metadata(updates)
    except ls.LatentSearchError as exc:
        assert "\n" not in str(exc)
        assert snapshot(col) == before
        return
    after = {it.id: it.metadata for it in col.items()}
    for item_id, fields in updates.items():
        for key, value in (fields or {}).items():  # top-level fields as given (JSON merge patch; null removes)
            if value is None:
                assert key not in after[item_id]
            elif not isinstance(value, dict):
                assert after[item_id][key] == value
    assert all(after[i] == saved[i] for i in saved if i not in updates)  # nobody else changed
    restore(col, saved)
    assert [(i, m) for i, m in snapshot(col)[1]] == before[1]


@fuzz
@given(body=st.one_of(json_values, st.fixed_dictionaries({"updates": json_values})))
def test_http_metadata_bodies_never_give_a_500_and_refusals_change_nothing(http, col, body):
    tried("http update_metadata")
    before = snapshot(col)
    saved = {it.id: it.metadata for it in col.items()}
    try:
        payload = json.dumps(body, allow_nan=False)
    except ValueError:
        return
    response = http.post(
        "/api/collections/fuzz/items/metadata", content=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        restore(col, saved)
    else:
        assert "error" in response.json() and snapshot(col) == before


@fuzz
@given(data=st.binary(max_size=400))
def test_random_bytes_as_images_are_refused_cleanly(tmp_path_factory, data):
    tried("image bytes")
    from latentsearch.encoders.image import open_image

    path = Path(tmp_path_factory.mktemp("img")) / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    try:
        open_image(path)
    except ls.InvalidInputError as exc:
        assert "cannot read image" in str(exc) or "over the" in str(exc)
