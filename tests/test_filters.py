import sqlite3

import pytest

from latentsearch.errors import FilterError
from latentsearch.filters import compile_filter, parse_expression


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
    # Values are bound parameters; field names are validated, never pasted into SQL.
    assert matching(db, {"lang": "en' OR '1'='1"}) == []
    assert matching(db, 'lang = "x\') OR 1=1 --"') == []
    with pytest.raises(FilterError):
        compile_filter({"lang') OR 1=1 --": "x"})
    assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 4
