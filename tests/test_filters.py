import sqlite3

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.errors import FilterError
from latentsearch.storage.filters import compile_filter, parse_expression


def test_expression_parses_to_dict_form():
    assert parse_expression('lang = "en"') == {"lang": {"$eq": "en"}}
    assert parse_expression("year >= 2000 and year < 2010") == {
        "$and": [{"year": {"$gte": 2000}}, {"year": {"$lt": 2010}}]
    }
    assert parse_expression("a = 1 or b != 'x' and c in (1, 2)") == {
        "$or": [{"a": {"$eq": 1}}, {"$and": [{"b": {"$ne": "x"}}, {"c": {"$in": [1, 2]}}]}]
    }
    assert parse_expression("not (draft = true) and tag not in ('a')") == {
        "$and": [{"$not": {"draft": {"$eq": True}}}, {"tag": {"$nin": ["a"]}}]
    }
    assert parse_expression("score > -1.5e2 and x = null") == {
        "$and": [{"score": {"$gt": -150.0}}, {"x": {"$eq": None}}]
    }


@pytest.fixture
def db():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items (rowid INTEGER PRIMARY KEY, metadata TEXT)")
    rows = [
        '{"lang": "en", "year": 1999, "tag": "a", "nested": {"k": 1}}',
        '{"lang": "de", "year": 2005, "tag": "b", "draft": true}',
        '{"lang": "en", "year": 2010}',
        '{"lang": "fr", "year": 2001, "tag": "c"}',
    ]
    conn.executemany("INSERT INTO items (rowid, metadata) VALUES (?, ?)", enumerate(rows, 1))
    return conn


def matching(db, where):
    sql, params = compile_filter(where)
    return sorted(r[0] for r in db.execute(f"SELECT rowid FROM items WHERE {sql}", params))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"lang": "en"}, [1, 3]),
        ('lang = "en"', [1, 3]),
        ("lang != 'en'", [2, 4]),
        ("year < 2001", [1]),
        ("year <= 2001", [1, 4]),
        ("year > 2005", [3]),
        ("year >= 2005", [2, 3]),
        ("tag in ('a', 'c')", [1, 4]),
        ("tag not in ('a')", [2, 3, 4]),  # items without the field match, as in Mongo
        ("tag != 'a'", [2, 3, 4]),
        ('lang = "en" and year > 2000', [3]),
        ('lang = "de" or (lang = "en" and year < 2000)', [1, 2]),
        ("draft = true", [2]),
        ("tag = null", [3]),
        ("nested.k = 1", [1]),
        ({"$or": [{"lang": "fr"}, {"year": {"$gte": 2010}}]}, [3, 4]),
        ({"year": {"$gt": 2000, "$lt": 2010}}, [2, 4]),
        ({"tag": {"$in": []}}, []),
        (None, [1, 2, 3, 4]),
    ],
)
def test_filters_select_the_right_rows(db, where, expected):
    assert matching(db, where) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "lang =",
        "lang == 'en' and",
        "(lang = 'en'",
        "lang ~ 'en'",
        "'en' = lang",
        "lang in 'en'",
        "",
        "lang = 'en' extra",
    ],
)
def test_malformed_expressions_give_one_line_errors(bad):
    with pytest.raises(FilterError) as info:
        compile_filter(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"lang": {"$regex": "x"}},
        {"$xor": []},
        {"$or": "x"},
        {"bad field": 1},
        {"lang": [1, 2]},
        {"lang": {"$in": "en"}},
        {"x": float("nan")},
        {"x": {"$lt": None}},
    ],
)
def test_malformed_dict_filters_are_rejected(bad):
    with pytest.raises(FilterError):
        compile_filter(bad)


def test_injection_attempts_stay_data(db):
    # Values are bound parameters; field names are validated against a pattern without quotes before
    # their JSON path is written into the SQL (so expression indexes apply).
    assert matching(db, {"lang": "en' OR '1'='1"}) == []
    assert matching(db, 'lang = "x\') OR 1=1 --"') == []
    with pytest.raises(FilterError):
        compile_filter({"lang') OR 1=1 --": "x"})
    assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 4


def test_an_indexed_field_answers_filters_from_the_index_with_the_same_rows(home):
    from typer.testing import CliRunner

    from latentsearch.cli import app

    n = 2000
    col = ls.create("facets", encoder="precomputed", dim=4, home=home)
    vectors = np.random.default_rng(0).normal(size=(n, 4)).astype("float32")
    metadata = [
        {"lang": ["en", "de", "fr"][i % 3], "year": 1990 + i % 30, "author": {"name": f"a{i % 7}"}} for i in range(n)
    ]
    col.add([f"v{i}" for i in range(n)], vectors=vectors, metadata=metadata)
    filters = ['lang = "de"', "year >= 2015 and lang != 'fr'", {"author.name": {"$in": ["a1", "a3"]}}]

    def plan_and_rows(where):
        sql, params = compile_filter(where)
        plan = " ".join(
            str(row)
            for row in col.backend.store.conn.execute(f"EXPLAIN QUERY PLAN SELECT rowid FROM items WHERE {sql}", params)
        )
        return plan, sorted(col.backend.store.rowids_matching(sql, params).tolist())

    before = [plan_and_rows(w) for w in filters]
    assert all("field:" not in plan for plan, _ in before)  # a scan of every item's JSON
    assert col.index_field("lang") and col.index_field("author.name")
    assert not col.index_field("lang")  # already there
    after = [plan_and_rows(w) for w in filters]
    assert "field:lang" in after[0][0] and "field:author.name" in after[2][0]
    assert [rows for _, rows in after] == [rows for _, rows in before]
    assert len(after[0][1]) == sum(m["lang"] == "de" for m in metadata)
    assert col.info()["field_indexes"] == ["author.name", "lang"]
    hits = col.search(vectors[5], k=5, where='lang = "de"')
    assert len(hits) == 5 and all(h.metadata["lang"] == "de" for h in hits)

    with pytest.raises(FilterError, match="invalid field name"):
        col.index_field("lang'); DROP TABLE items; --")
    with pytest.raises(ls.InvalidInputError, match="has no index.*indexed: author.name, lang"):
        col.drop_field_index("year")
    col.drop_field_index("author.name")
    assert col.info()["field_indexes"] == ["lang"] and col.count() == n
    col.close()

    runner = CliRunner()
    made = runner.invoke(app, ["index-field", "facets", "year", "--home", str(home)])
    assert made.exit_code == 0 and "indexed field 'year'" in made.stdout
    assert "already indexed" in runner.invoke(app, ["index-field", "facets", "year", "--home", str(home)]).stdout
    dropped = runner.invoke(app, ["index-field", "facets", "year", "--drop", "--home", str(home)])
    assert dropped.exit_code == 0 and ls.open("facets", home=home).info()["field_indexes"] == ["lang"]
    bad = runner.invoke(app, ["index-field", "facets", "no such", "--home", str(home)])
    assert bad.exit_code == 1 and "invalid field name" in bad.output


def test_a_dict_filter_compiled_again_is_the_same_and_keeps_its_value_types():
    where = {"$or": [{"n": {"$in": [1, 2.5]}}, {"flag": True}, {"x": None}]}
    first = compile_filter(where)
    first.params.append("mutated")  # a caller's change to one answer is not the next one's
    again = compile_filter(where)
    assert again == compile_filter({"$or": [{"n": {"$in": [1, 2.5]}}, {"flag": True}, {"x": None}]})
    assert again.params == [1, 2.5, True] and [type(p) for p in again.params] == [int, float, bool]
    # Equal as dict keys, different filters: 1, 1.0 and True each keep their type.
    for value in (1, 1.0, True):
        (param,) = compile_filter({"n": value}).params
        assert type(param) is type(value)
    assert compile_filter(compile_filter(where)) == again  # a compiled filter passes through
    compile_filter({"$and": [{"a": 1}]})
    with pytest.raises(FilterError):  # refused still, though its list twin was compiled and kept
        compile_filter({"$and": ({"a": 1},)})
