"""Issue #15, items 1-3: text that is not valid Unicode, bounds on every number and nesting, and
settings checked before a collection is created. Each refusal is one line (Python: an
``InvalidInputError``; CLI: exit 1 and one line on stderr; HTTP: 4xx with ``{"error": ...}``) and
changes nothing; whatever a write accepts reads back through every interface."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch import limits
from latentsearch.cli import app
from latentsearch.server import create_app
from latentsearch.server.models import ClustersBody, CreateBody, HistoryBody, SearchBody

runner = CliRunner()
SURROGATE = "\ud800"
VECTORS = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]], dtype=np.float32)


@pytest.fixture
def vecs(home):
    """A small precomputed HNSW collection (HNSW so ef_search reaches FAISS)."""
    col = ls.create("vecs", encoder="precomputed", dim=4, index="hnsw", home=home)
    col.add(
        ["a", "b", "c", "d"],
        ["alpha text", "beta text", "gamma text", "delta text"],
        vectors=VECTORS,
        metadata=[{"n": i, "tag": "x"} for i in range(4)],
    )
    yield col
    col.close()


def state(col) -> tuple:
    """Everything a refused write must leave as it was."""
    return col.backend.store.seq, [(it.id, it.text, it.uri, it.metadata) for it in col.items()]


def nested(depth: int, leaf=1, key: str = "x") -> dict:
    """``{"x": {"x": ... leaf}}`` with ``depth`` objects, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def deep_filter(levels: int) -> dict:
    """A filter of ``levels`` logical levels that matches every item with ``n``: ``$and`` of one
    filter inside another, around one condition."""
    node: dict = {"n": {"$gte": 0}}
    for _ in range(levels - 1):
        node = {"$and": [node]}
    return node


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


# --- 1. text that is not valid Unicode -------------------------------------------------------------

SURROGATE_WRITES = [
    lambda c: c.add([SURROGATE], vectors=VECTORS[:1]),
    lambda c: c.add(["e"], [f"text {SURROGATE}"], vectors=VECTORS[:1]),
    lambda c: c.add(["e"], vectors=VECTORS[:1], uris=[f"/tmp/{SURROGATE}.jpg"]),
    lambda c: c.add(["e"], vectors=VECTORS[:1], metadata=[{"k": SURROGATE}]),
    lambda c: c.add(["e"], vectors=VECTORS[:1], metadata=[{SURROGATE: 1}]),
    lambda c: c.add(["e"], vectors=VECTORS[:1], metadata=[{"k": [1, {"deep": ["ok", SURROGATE]}]}]),
    lambda c: c.upsert(["a"], vectors=VECTORS[:1], metadata=[{"k": SURROGATE}]),
    lambda c: c.update_metadata({"a": {"k": SURROGATE}}),
    lambda c: c.update_metadata({"a": {SURROGATE: 1}}),
    lambda c: c.update_metadata({"a": {"ok": {"nested": SURROGATE}}}),
    lambda c: c.update_metadata({SURROGATE: {"k": 1}}),
    lambda c: c.delete([SURROGATE]),
    lambda c: c.put_users([(SURROGATE, VECTORS[0], [("a", None)])]),
]


@pytest.mark.parametrize("write", SURROGATE_WRITES)
def test_a_lone_surrogate_is_refused_at_every_write_and_changes_nothing(vecs, write):
    before = state(vecs)
    with pytest.raises(ls.InvalidInputError, match="not valid Unicode"):
        write(vecs)
    assert state(vecs) == before
    # Every item is still readable through a search that returns it, and serialisable as UTF-8 JSON.
    hits = vecs.search(VECTORS[0], k=4)
    json.dumps([h.to_dict() for h in hits], ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    "where",
    [
        {"tag": SURROGATE},
        {"tag": {"$in": ["x", SURROGATE]}},
        {SURROGATE: 1},
        {"$or": [{"tag": "x"}, {"tag": SURROGATE}]},
        f'tag = "{SURROGATE}"',
        'tag = "\\ud800"',  # an escape in the expression's string decodes to a lone surrogate
    ],
)
def test_a_lone_surrogate_in_a_filter_is_a_filter_error(vecs, where):
    with pytest.raises(ls.FilterError, match="not valid Unicode"):
        vecs.search(VECTORS[0], where=where)
    with pytest.raises(ls.FilterError, match="not valid Unicode"):
        vecs.matching_vectors(where)


def test_a_lone_surrogate_in_a_query_or_lookup_is_refused(vecs):
    for call in (
        lambda: vecs.search(SURROGATE, mode="lexical"),
        lambda: vecs.get([SURROGATE]),
        lambda: vecs.search(like=SURROGATE),
        lambda: vecs.user_profile(SURROGATE),
        lambda: vecs.recommend_for([SURROGATE]),
    ):
        with pytest.raises(ls.InvalidInputError, match="not valid Unicode"):
            call()


any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=any_text)
def test_whatever_a_write_accepts_reads_back_as_utf8(vecs, text):
    """Any string (surrogates included) as id, text, metadata key and value: either refused with
    nothing changed, or stored and then readable by get, search and filters, as UTF-8 JSON."""
    before = state(vecs)
    item_id = "id-" + text
    try:
        vecs.upsert([item_id], [text or "empty"], vectors=VECTORS[:1], metadata=[{"k" + text: text, "v": [text]}])
    except ls.InvalidInputError as exc:
        assert any(why in str(exc) for why in ("not valid Unicode", "NUL character", "empty")), exc
        assert state(vecs) == before
        return
    vecs.update_metadata({item_id: {"u": text}})
    got = vecs.get([item_id])[0]
    assert got.metadata == {"k" + text: text, "v": [text], "u": text}
    hits = vecs.search(VECTORS[0], k=10, where={"u": text})
    assert item_id in [h.id for h in hits]
    json.dumps([got.to_dict(), *(h.to_dict() for h in hits)], ensure_ascii=False).encode("utf-8")
    vecs.delete([item_id])


def test_unicode_is_refused_or_readable_through_cli_and_http(vecs, home, tmp_path):
    stored = "ünïcødé 🚀 𝔘"  # valid, outside the BMP too
    vecs.update_metadata({"a": {"label": stored}})
    vecs.close()
    got = cli("get", "vecs", "a", "--json")
    assert got.exit_code == 0 and json.loads(got.stdout)[0]["metadata"]["label"] == stored
    assert cli("get", "vecs", "a").exit_code == 0  # the table too
    # JSONL escapes of a lone surrogate: refused with the file and line, nothing added or updated.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "e", "text": "fine"}\n{"id": "f", "text": "x \\ud800"}\n', encoding="utf-8")
    one_line_error(cli("add", "vecs", bad), "line 2")
    updates = tmp_path / "updates.jsonl"
    updates.write_text('{"id": "a", "label": "\\udfff"}\n', encoding="utf-8")
    one_line_error(cli("update-metadata", "vecs", updates), "not valid Unicode")
    one_line_error(cli("search", "vecs", "--like", "a", "--where", 'tag = "\\ud800"'), "not valid Unicode")
    assert cli("count", "vecs").stdout.strip() == "4"
    with TestClient(create_app(home, preload=False)) as client:
        item = client.get("/api/collections/vecs/items", params={"ids": ["a"]})
        assert item.status_code == 200 and item.json()[0]["metadata"]["label"] == stored
        for url, body in (
            ("/api/collections/vecs/items", '{"items": [{"id": "\\ud800", "vector": [1, 0, 0, 0]}]}'),
            ("/api/collections/vecs/items", '{"items": [{"id": "e", "vector": [1, 0, 0, 0], "text": "\\ud83d"}]}'),
            ("/api/collections/vecs/items/metadata", '{"updates": {"a": {"label": "\\ud800"}}}'),
            ("/api/collections/vecs/items/metadata", '{"updates": {"a": {"\\ud800": 1}}}'),
            ("/api/collections/vecs/search", '{"vector": [1, 0, 0, 0], "where": {"tag": "\\ud800"}}'),
        ):
            response = client.post(url, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400 and "not valid Unicode" in response.json()["error"], response.text
        assert client.get("/api/collections/vecs").json()["count"] == 4
        hits = client.post("/api/collections/vecs/search", json={"vector": [1, 0, 0, 0], "k": 4})
        assert hits.status_code == 200 and stored in [h["metadata"].get("label") for h in hits.json()]


# --- 2. bounds on every number and every nesting ---------------------------------------------------

BIG = 10**30


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.search(VECTORS[0], k=limits.MAX_K + 1), "k must be from 1 to 10,000"),
        (lambda c: c.search(VECTORS[0], k=BIG), "k must be from"),
        (lambda c: c.search(VECTORS[0], k=0), "k must be from"),
        (lambda c: c.search(VECTORS[0], k=2.0), "k must be a whole number"),
        (lambda c: c.search(VECTORS[0], ef_search=BIG), "ef_search must be from"),
        (lambda c: c.search(VECTORS[0], ef_search=0), "ef_search must be from"),
        (lambda c: c.search(VECTORS[0], nprobe=BIG), "nprobe must be from"),
        (lambda c: c.search("alpha", mode="hybrid", rrf_k=10**400), "rrf_k must be from"),
        (lambda c: c.search_batch(VECTORS, k=BIG), "k must be from"),
        (lambda c: c.search_batch(VECTORS, ef_search=limits.MAX_EF_SEARCH + 1), "ef_search must be from"),
        (lambda c: c.recommend(["a"], k=BIG), "k must be from"),
        (lambda c: c.outliers(k=BIG), "k must be from"),
        (lambda c: c.outliers(top=BIG), "top must be from"),
        # Checked before the ids are even looked up: a huge path is refused at once.
        (lambda c: c.interpolate("ghost", "ghost", steps=10**9), "steps must be from 2 to 1,000"),
        (lambda c: c.interpolate("a", "b", steps=1), "steps must be from"),
        (lambda c: c.clusters(BIG), "n must be from 1 to 10,000"),
        (lambda c: c.clusters(2, seed=2**40), "seed must be from"),
        (lambda c: c.project("pca", sample=BIG), "sample must be from"),
        (lambda c: c.project("pca", seed=-1), "seed must be from"),
        (lambda c: c.search(VECTORS[0], where={"n": 2**63}), "outside 64-bit integers"),
        (lambda c: c.search(VECTORS[0], where={"n": {"$in": [1, -(2**63) - 1]}}), "outside 64-bit integers"),
        (lambda c: c.search(VECTORS[0], where="n > 100000000000000000000"), "outside 64-bit integers"),
        (lambda c: c.search(VECTORS[0], where=deep_filter(5_000)), "nested deeper than 32"),
        (lambda c: c.search(VECTORS[0], where=deep_filter(limits.MAX_NESTING + 1)), "nested deeper than 32"),
        (lambda c: c.search(VECTORS[0], where="not " * 5_000 + "n = 1"), "nested deeper than 32"),
        (lambda c: c.search(VECTORS[0], where="(" * 5_000 + "n = 1" + ")" * 5_000), "nested deeper than 32"),
        (lambda c: c.project("pca", where=deep_filter(5_000)), "nested deeper than 32"),
        (lambda c: c.recommend_for([("a",)]), "history entry #0"),
        (lambda c: c.recommend_for([("a", "heavy")]), "has weight 'heavy'"),
        (lambda c: c.recommend_for([("a", 10**400)]), "has weight"),
        (lambda c: c.recommend_for([(5, 1.0)]), "has id 5"),
        (lambda c: c.recommend_for([{"id": "a", "wieght": 2}]), "history entry #0"),
        (lambda c: c.recommend_for([{"id": ["a"]}]), "has id ['a']"),
        (lambda c: c.recommend_for([("a", 1, "yesterday")]), "timestamp 'yesterday'"),
        (lambda c: c.recommend_for([("a", 1, 10**400)]), "timestamp"),
        (lambda c: c.recommend_for([("a", 1, 5)], half_life="long"), "half_life"),
    ],
)
def test_numbers_and_nesting_out_of_bounds_give_one_line(vecs, call, message):
    before = state(vecs)
    with pytest.raises(ls.InvalidInputError) as info:
        call(vecs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert state(vecs) == before


@pytest.mark.parametrize(
    "metadata",
    [
        nested(5_000),
        nested(limits.MAX_NESTING + 1),
        {"list": json.loads("[" * 40 + "]" * 40)},
        {"big": 2**63},
        {"small": -(2**63) - 1},
        {"nested": {"big": [2**64]}},
    ],
)
def test_metadata_out_of_bounds_is_refused_by_add_and_update(vecs, metadata):
    before = state(vecs)
    for write in (
        lambda: vecs.add(["e"], vectors=VECTORS[:1], metadata=[metadata]),
        lambda: vecs.update_metadata({"a": metadata}),
    ):
        with pytest.raises(ls.InvalidInputError, match="nested deeper than 32|outside 64-bit integers") as info:
            write()
        assert "\n" not in str(info.value)
    assert state(vecs) == before


def test_values_at_the_limits_are_accepted_and_read_back(vecs):
    deepest = nested(limits.MAX_NESTING - 1, leaf="bottom")  # the item's own object is level 1
    vecs.add(["e"], vectors=VECTORS[:1], metadata=[{"deep": deepest, "top": limits.INT64_MAX, "low": limits.INT64_MIN}])
    assert vecs.get(["e"])[0].metadata == {"deep": deepest, "top": limits.INT64_MAX, "low": limits.INT64_MIN}
    assert [h.id for h in vecs.search(VECTORS[0], where={"top": limits.INT64_MAX})] == ["e"]
    assert [h.id for h in vecs.search(VECTORS[0], where=f"low = {limits.INT64_MIN}")] == ["e"]
    # Filters of exactly MAX_NESTING levels run (the new item has no "n", so four match).
    assert len(vecs.search(VECTORS[0], k=10, where=deep_filter(limits.MAX_NESTING))) == 4
    assert len(vecs.search(VECTORS[0], k=10, where="(" * 32 + "n >= 0" + ")" * 32)) == 4
    assert len(vecs.search(VECTORS[0], k=10, where="not " * 31 + "n < 0")) == 4
    assert len(vecs.search(VECTORS[0], k=limits.MAX_K, ef_search=limits.MAX_EF_SEARCH)) == 5
    assert len(vecs.search(VECTORS[0], k=limits.MAX_K, nprobe=limits.MAX_NPROBE)) == 5
    assert len(vecs.interpolate("a", "b", steps=limits.MAX_STEPS)) == limits.MAX_STEPS
    # Internal candidate pools (k * 10) stay within the limit the public k is checked against.
    assert len(vecs.recommend(["a"], k=limits.MAX_K, diversity=0.5)) == 4
    assert len(vecs.recommend(["a"], k=limits.MAX_K, strategy="best_score")) == 4


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=st.integers(min_value=-(2**80), max_value=2**80), op=st.sampled_from(["$eq", "$lt", "$gte", "$ne"]))
def test_any_integer_in_a_filter_compiles_or_gives_one_line(vecs, number, op):
    """Never OverflowError: inside 64 bits a filter runs, outside it is a FilterError."""
    inside = limits.INT64_MIN <= number <= limits.INT64_MAX
    for where in (
        {"n": {op: number}},
        f"n {dict(zip(['$eq', '$lt', '$gte', '$ne'], ['=', '<', '>=', '!=']))[op]} {number}",
    ):
        if inside:
            vecs.search(VECTORS[0], where=where)
        else:
            with pytest.raises(ls.FilterError, match="outside 64-bit integers"):
                vecs.search(VECTORS[0], where=where)


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(min_value=1, max_value=3_000))
def test_any_nesting_depth_compiles_or_gives_one_line(depth):
    """Dicts and expressions of any depth: compiled when within the limit, else a FilterError, never a
    RecursionError."""
    from latentsearch.storage.filters import compile_filter

    for where in (deep_filter(depth), "not " * (depth - 1) + "n = 1", "(" * depth + "n = 1" + ")" * depth):
        if depth <= limits.MAX_NESTING:
            compile_filter(where)
        else:
            with pytest.raises(ls.FilterError, match="nested deeper than 32"):
                compile_filter(where)


def test_the_server_models_take_their_bounds_from_limits():
    search = SearchBody.model_json_schema()["properties"]
    assert search["k"]["maximum"] == limits.MAX_K and search["k"]["minimum"] == 1
    assert search["ef_search"]["anyOf"][0]["maximum"] == limits.MAX_EF_SEARCH
    assert search["nprobe"]["anyOf"][0]["maximum"] == limits.MAX_NPROBE
    assert HistoryBody.model_json_schema()["properties"]["k"]["maximum"] == limits.MAX_K
    assert ClustersBody.model_json_schema()["properties"]["n"]["anyOf"][0]["maximum"] == limits.MAX_CLUSTERS
    assert CreateBody.model_json_schema()["properties"]["dim"]["anyOf"][0]["maximum"] == limits.MAX_DIM


def test_bounds_through_http(vecs, home):
    vecs.close()
    deep = '{"$not": ' * 5_000 + '{"n": 1}' + "}" * 5_000
    with TestClient(create_app(home, preload=False)) as client:
        for method, url, body, status, message in (
            ("post", "search", {"vector": [1, 0, 0, 0], "k": limits.MAX_K + 1}, 422, "body.k"),
            ("post", "search", {"vector": [1, 0, 0, 0], "k": BIG}, 422, "body.k"),
            ("post", "search", {"vector": [1, 0, 0, 0], "ef_search": BIG}, 422, "body.ef_search"),
            ("post", "search", {"vector": [1, 0, 0, 0], "nprobe": 0}, 422, "body.nprobe"),
            ("post", "search", {"vector": [1, 0, 0, 0], "where": {"n": 2**70}}, 400, "outside 64-bit integers"),
            ("post", "search", {"vector": [1, 0, 0, 0], "where": "n = 99999999999999999999"}, 400, "64-bit"),
            ("post", "search", {"vector": [1, 0, 0, 0], "where": deep_filter(40)}, 400, "nested deeper than 32"),
            ("post", "search", {"vector": [1, 0, 0, 0], "where": "not " * 3_000 + "n = 1"}, 400, "nested deeper"),
            ("post", "search", f'{{"vector": [1, 0, 0, 0], "where": {deep}}}', 400, "nested too deeply"),
            ("post", "items", {"items": [{"id": "e", "vector": [1, 0, 0, 0], "metadata": nested(40)}]}, 400, "32"),
            ("post", "items", {"items": [{"id": "e", "vector": [1, 0, 0, 0], "metadata": {"n": 2**64}}]}, 400, "64"),
            ("post", "items/metadata", {"updates": {"a": nested(40)}}, 400, "nested deeper than 32"),
            ("post", "recommend/history", {"history": [["a", "heavy"]]}, 400, "weight"),
            ("post", "recommend/history", {"history": [["a", 1, 2, 3]]}, 400, "history entry #0"),
            ("post", "recommend/history", {"history": [{"id": 7}]}, 400, "has id 7"),
            ("post", "recommend", {"positive": ["a"], "k": BIG}, 422, "body.k"),
            ("post", "clusters", {"n": 10**9}, 422, "body.n"),
            ("post", "clusters", {"n": 2, "seed": 2**40}, 422, "body.seed"),
            ("get", "interpolate?start=a&end=b&steps=1000000000", None, 422, "query.steps"),
            ("get", "map?sample=0", None, 422, "query.sample"),
            ("get", f"outliers?k={BIG}", None, 422, "query.k"),
        ):
            url = f"/api/collections/vecs/{url}"
            if method == "get":
                response = client.get(url)
            elif isinstance(body, str):
                response = client.post(url, content=body, headers={"content-type": "application/json"})
            else:
                response = client.post(url, json=body)
            assert response.status_code == status, (url, body if not isinstance(body, str) else "deep", response.text)
            assert message in response.json()["error"], response.text
        assert client.get("/api/collections/vecs").json()["count"] == 4
        assert "cluster" not in client.get("/api/collections/vecs/items", params={"ids": ["a"]}).json()[0]["metadata"]


def test_bounds_through_the_cli(vecs, tmp_path):
    vecs.close()
    deep = tmp_path / "deep.jsonl"
    deep.write_text(json.dumps({"id": "e", "text": "x", "meta": nested(40)}) + "\n")
    deeper = tmp_path / "deeper.jsonl"
    deeper.write_text('{"id": "e", "text": "x", "m": ' + '{"x": ' * 5_000 + "1" + "}" * 5_001 + "\n")
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"id": "e", "text": "x", "n": 123456789012345678901234567890}\n')
    for args, message in (
        (("search", "vecs", "--like", "a", "-k", limits.MAX_K + 1), "k must be from 1 to 10,000"),
        (("search", "vecs", "--like", "a", "--ef-search", BIG), "ef_search must be from"),
        (("search", "vecs", "--like", "a", "--where", "n = 99999999999999999999999"), "outside 64-bit integers"),
        (("search", "vecs", "--like", "a", "--where", "not " * 5_000 + "n = 1"), "nested deeper than 32"),
        (("search", "vecs", "--like", "a", "--where", "(" * 5_000 + "n = 1" + ")" * 5_000), "nested deeper"),
        (("interpolate", "vecs", "a", "b", "--steps", 10**9), "steps must be from 2 to 1,000"),
        (("clusters", "vecs", "-n", 10**6), "n must be from"),
        (("map", "vecs", "--out", tmp_path / "m.html", "--method", "pca", "--sample", 0), "sample must be from"),
        (("map", "vecs", "--out", tmp_path / "m.html", "--max-colors", BIG), "max_colors must be from 1 to 24"),
        (("outliers", "vecs", "-k", BIG), "k must be from"),
        (("add", "vecs", deep), "nested deeper than 32"),
        (("add", "vecs", deeper), "nested deeper than 32"),
        (("add", "vecs", huge), "outside 64-bit integers"),
    ):
        one_line_error(cli(*args), message)
    assert cli("count", "vecs").stdout.strip() == "4"


# --- 3. validate before creating; names matched whole ----------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"index": "faiss:garbage"}, "could not parse index string garbage"),
        ({"index": "faiss:PQ3"}, "cannot index 4-d"),  # 4 is not a multiple of 3 sub-quantizers
        ({"index": "faiss:LSH", "metric": "cosine"}, "cannot index 4-d cosine"),  # LSH is L2-only
        ({"index": "nonsense"}, "unknown index"),
        ({"index": 7}, "unknown index"),
        ({"metric": "manhattan"}, "unknown metric"),
        ({"dim": 0}, "dim must be from 1 to 65,536"),
        ({"dim": 10**12}, "dim must be from 1 to 65,536"),
        ({"dim": "4"}, "dim must be a whole number"),
        ({"dim": None}, "needs the vector dimension"),
        ({"encoder": "nonsense"}, "unknown encoder"),
        ({"encoder": "minilm", "dim": 5}, "makes 384-d vectors"),
    ],
)
def test_impossible_settings_create_nothing(home, settings_, message):
    options = {"encoder": "precomputed", "dim": 4, **settings_}
    for shards in (None, 2):  # the sharded path checks them too, before its folder exists
        with pytest.raises(ls.InvalidInputError, match=message):
            ls.create("bad", home=home, shards=shards, **options)
        assert not home.exists() or list(home.iterdir()) == []


def test_a_working_faiss_factory_is_still_accepted(home):
    """A factory that needs training serves exact search until it has the data to train on."""
    with ls.create("ok", encoder="precomputed", dim=8, index="faiss:IVF4,Flat", metric="l2", home=home) as col:
        assert col.search(np.ones(8), k=3) == [] and col.info()["faiss_factory"] == "Flat"
        col.add(["first"], vectors=np.ones((1, 8)))
        assert [h.id for h in col.search(np.ones(8), k=3)] == ["first"]
        col.add([f"i{n}" for n in range(300)], vectors=np.random.default_rng(0).standard_normal((300, 8)))
        assert len(col.search(np.ones(8), k=3)) == 3 and col.info()["faiss_factory"] == "IVF4,Flat"


def test_impossible_settings_through_cli_and_http(home):
    one_line_error(cli("create", "bad", "--encoder", "precomputed", "--dim", 4, "--index", "faiss:garbage"), "garbage")
    one_line_error(cli("create", "bad", "--encoder", "precomputed", "--dim", 10**9), "dim must be from")
    assert not home.exists() or list(home.iterdir()) == []
    with TestClient(create_app(home, preload=False)) as client:
        for body, status in (
            ({"name": "bad", "encoder": "precomputed", "dim": 4, "index": "faiss:garbage"}, 400),
            ({"name": "bad", "encoder": "precomputed", "dim": 4, "index": "faiss:PQ3"}, 400),
            ({"name": "bad", "encoder": "precomputed", "dim": 10**9}, 422),
            ({"name": "bad\n", "encoder": "precomputed", "dim": 4}, 400),
        ):
            response = client.post("/api/collections", json=body)
            assert response.status_code == status and response.json()["error"], response.text
        assert client.get("/api/collections").json() == []
    assert not home.exists() or list(home.iterdir()) == []


@pytest.mark.parametrize("name", ["notes\n", "notes\r\n", "\nnotes", "no\ntes", "a" * 65])
def test_collection_names_are_matched_whole(home, name):
    with pytest.raises(ls.InvalidInputError, match="invalid collection name"):
        ls.create(name, encoder="precomputed", dim=4, home=home)
    with pytest.raises(ls.InvalidInputError, match="invalid collection name"):
        ls.open(name, home=home)
    one_line_error(cli("create", name, "--encoder", "precomputed", "--dim", 4), "invalid collection name")
    assert not home.exists() or list(home.iterdir()) == []


@pytest.mark.parametrize("field", ["tag\n", "tag\r", "\ntag", "a.b\n"])
def test_field_names_are_matched_whole(vecs, field):
    with pytest.raises(ls.FilterError, match="invalid field name"):
        vecs.search(VECTORS[0], where={field: "x"})
    with pytest.raises(ls.FilterError, match="invalid field name"):
        vecs.index_field(field)
    assert vecs.backend.store.field_indexes() == []
