"""Metadata filters: a dict form for Python, a small expression language for the CLI, both compiled
to parameterised SQL over the items' JSON metadata (values are bound; validated field paths are
written in, so that expression indexes on hot fields apply).

Dict form (Mongo-like, as in Chroma and Qdrant clients)::

    {"lang": "en"}                                   # equality
    {"year": {"$gte": 2000, "$lt": 2010}}            # $eq $ne $lt $lte $gt $gte $in $nin
    {"$or": [{"lang": "en"}, {"tag": {"$in": ["a", "b"]}}]}

Expression form::

    lang = "en" and (year >= 2000 or tag in ("a", "b")) and not draft = true
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, NamedTuple

from latentsearch.errors import FilterError
from latentsearch.limits import INT64_MAX, INT64_MIN, MAX_NESTING, check_json_value, check_text

Filter = dict[str, Any]

# Matched whole (fullmatch): "$" would let a trailing newline through.
_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
_COMPARISONS = {"$eq": "=", "$ne": "!=", "$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}
_TOO_DEEP = f"filter nested deeper than {MAX_NESTING} levels of $and/$or/$not: flatten it"
_SCALARS = (str, int, float, bool, type(None))
MATCH_ALL = "1"  # the condition of no filter (or an empty one)


class CompiledFilter(NamedTuple):
    """A filter compiled to an SQL condition and its parameters. Given where a filter is taken, it is
    used as it is: a search checks (compiles) its filter once, before any work, and passes this on."""

    sql: str
    params: list[Any]


def compile_filter(where: Filter | str | CompiledFilter | None) -> CompiledFilter:
    """Compile a filter (dict or expression string) to an SQL condition and its parameters.

    The condition refers to the ``metadata`` column of the ``items`` table. An empty filter
    compiles to :data:`MATCH_ALL`.
    """
    if type(where) is CompiledFilter:
        return where
    if where is None:
        return CompiledFilter(MATCH_ALL, [])
    if isinstance(where, str):
        sql, params = _compiled_expression(where)
        return CompiledFilter(sql, list(params))
    key = _frozen(where, 2 * MAX_NESTING + 2)
    found = _compiled_dicts.get(key) if key is not None else None
    if found is not None:
        return CompiledFilter(found[0], list(found[1]))
    compiled = _compile_filter(where)
    if key is not None:
        if len(_compiled_dicts) >= COMPILED_DICTS:
            _compiled_dicts.clear()
        _compiled_dicts[key] = (compiled.sql, tuple(compiled.params))
    return compiled


COMPILED_DICTS = 256  # dict filters kept compiled: compiling one cost a filtered search 20 µs on cold caches
_compiled_dicts: dict[tuple[Any, ...], tuple[str, tuple[Any, ...]]] = {}
_FROZEN_SCALARS = frozenset((str, int, float, bool, type(None)))


def _frozen(value: Any, depth: int) -> tuple[Any, ...] | None:
    """An exact, hashable copy of a dict filter, each value tagged with its type (so that 1, 1.0 and
    True, equal as keys, stay apart); None for anything else (other types, deeper than ``depth``):
    such a filter is compiled each time."""
    kind = type(value)
    if kind in _FROZEN_SCALARS:
        return (kind, value)
    if depth <= 0:
        return None
    if kind is dict:
        items = []
        for key, item in value.items():
            frozen = _frozen(item, depth - 1)
            if type(key) is not str or frozen is None:
                return None
            items.append((key, frozen))
        return (dict, *items)
    if kind is list:
        frozen_items = [_frozen(item, depth - 1) for item in value]
        return None if None in frozen_items else (list, *frozen_items)
    return None


@functools.lru_cache(maxsize=256)
def _compiled_expression(where: str) -> tuple[str, tuple[Any, ...]]:
    """An expression string's SQL, kept: a filtered search compiles its filter when the request is
    checked and again when the matches are read, and a loop of queries repeats the same string."""
    sql, params = _compile_filter(parse_expression(where))
    return sql, tuple(params)


def _compile_filter(where: Any) -> CompiledFilter:
    if not isinstance(where, dict):
        raise FilterError(f"filter must be a dict or an expression string, got {type(where).__name__}")
    # Unicode, 64-bit integers and a first bound on depth, without recursion (a JSON body can nest
    # thousands deep); _compile_node then bounds the logical depth ($and/$or/$not) it recurses into.
    # Each logical level is an object and a list ({"$and": [...]}); a condition adds two more.
    check_json_value(where, "the filter", FilterError, max_depth=2 * MAX_NESTING + 2, too_deep=_TOO_DEEP)
    params: list[Any] = []
    sql = _compile_node(where, params, 1)
    return CompiledFilter(sql, params)


def field_expression(field: str) -> str:
    """The SQL expression of a (validated) metadata field. The JSON path is written into the SQL, not
    bound as a parameter, so that SQLite can answer it from an expression index on the same text
    (:meth:`Collection.index_field`); the field-name pattern leaves no room for quotes or SQL."""
    if not isinstance(field, str) or not _FIELD_RE.fullmatch(field):
        raise FilterError(f"invalid field name {field!r}: use letters, digits, '_' and '-', with '.' for nested fields")
    path = "$." + ".".join(f'"{part}"' for part in field.split("."))
    return f"json_extract(metadata, '{path}')"


def _scalar(value: Any, where: str) -> Any:
    if not isinstance(value, _SCALARS):
        raise FilterError(
            f"filter value for {where} must be a string, number, boolean or null, got {type(value).__name__}"
        )
    if isinstance(value, float) and value != value:
        raise FilterError(f"filter value for {where} is NaN, which matches nothing; use a number")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise FilterError(f"filter value for {where} is outside 64-bit integers: compare with a float instead")
    if isinstance(value, str):
        check_text(value, f"filter value for {where}", FilterError)
    return value


def _compile_node(node: Filter, params: list[Any], depth: int) -> str:
    if depth > MAX_NESTING:
        raise FilterError(_TOO_DEEP)
    if not node:
        return MATCH_ALL
    parts = []
    for key, value in node.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
                raise FilterError(f"{key} takes a non-empty list of filters")
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(_compile_node(v, params, depth + 1) for v in value) + ")")
        elif key == "$not":
            if not isinstance(value, dict):
                raise FilterError("$not takes a filter")
            parts.append(f"NOT ({_compile_node(value, params, depth + 1)})")
        elif key.startswith("$"):
            raise FilterError(f"unknown filter operator {key!r}: use $and, $or, $not at the top level")
        elif isinstance(value, dict):
            if not value:
                raise FilterError(f"empty condition for field {key!r}")
            parts.extend(_compile_condition(key, op, arg, params) for op, arg in value.items())
        else:
            parts.append(_compile_condition(key, "$eq", value, params))
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _compile_condition(field: str, op: str, arg: Any, params: list[Any]) -> str:
    column = field_expression(field)
    if op in ("$in", "$nin"):
        if not isinstance(arg, (list, tuple)):
            raise FilterError(f"{op} for field {field!r} takes a list of values")
        values = [_scalar(v, field) for v in arg]
        if not values:
            return "0" if op == "$in" else "1"
        params.extend(values)
        marks = ", ".join("?" * len(values))
        if op == "$in":
            return f"{column} IN ({marks})"
        # Like Mongo's $nin, items without the field match.
        return f"({column} NOT IN ({marks}) OR {column} IS NULL)"
    if op not in _COMPARISONS:
        raise FilterError(
            f"unknown operator {op!r} for field {field!r}: use one of {', '.join([*_COMPARISONS, '$in', '$nin'])}"
        )
    value = _scalar(arg, field)
    if value is None:
        if op == "$eq":
            return f"{column} IS NULL"
        if op == "$ne":
            return f"{column} IS NOT NULL"
        raise FilterError(f"cannot compare field {field!r} with null using {op}")
    params.append(value)
    if op == "$ne":
        return f"({column} != ? OR {column} IS NULL)"
    return f"{column} {_COMPARISONS[op]} ?"


# --- expression language -------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op>==|!=|<=|>=|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.-]*)
    )""",
    re.VERBOSE,
)
_EXPR_OPS = {"=": "$eq", "==": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}


def _tokenize(text: str) -> list[tuple[str, Any, int]]:
    tokens: list[tuple[str, Any, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise FilterError(f"cannot read filter at character {pos + 1}: {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        raw = match.group(kind)
        start = match.start(kind)
        if kind == "string":
            value: Any = json.loads('"' + raw[1:-1].replace('"', '\\"').replace("\\'", "'") + '"')
        elif kind == "number":
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        elif kind == "word" and raw.lower() in ("and", "or", "not", "in", "true", "false", "null"):
            kind, value = "keyword", raw.lower()
        else:
            value = raw
        tokens.append((kind, value, start))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0  # parentheses and 'not's open: bounded, so a hostile filter cannot exhaust the stack

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nested deeper than {MAX_NESTING} levels of parentheses and 'not'")

    def error(self, message: str) -> FilterError:
        where = self.tokens[self.pos][2] + 1 if self.pos < len(self.tokens) else len(self.text) + 1
        return FilterError(f"malformed filter {self.text!r}: {message} at character {where}")

    def peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def accept(self, kind: str, value: Any = None) -> bool:
        token = self.peek()
        if token and token[0] == kind and (value is None or token[1] == value):
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, value: Any = None, what: str = "") -> Any:
        token = self.peek()
        if not token or token[0] != kind or (value is not None and token[1] != value):
            raise self.error(f"expected {what or value or kind}")
        self.pos += 1
        return token[1]

    def parse(self) -> Filter:
        if not self.tokens:
            raise FilterError("empty filter: write a condition such as 'lang = \"en\"'")
        node = self.parse_or()
        if self.peek() is not None:
            raise self.error("unexpected text")
        return node

    def parse_or(self) -> Filter:
        nodes = [self.parse_and()]
        while self.accept("keyword", "or"):
            nodes.append(self.parse_and())
        return nodes[0] if len(nodes) == 1 else {"$or": nodes}

    def parse_and(self) -> Filter:
        nodes = [self.parse_not()]
        while self.accept("keyword", "and"):
            nodes.append(self.parse_not())
        return nodes[0] if len(nodes) == 1 else {"$and": nodes}

    def parse_not(self) -> Filter:
        if self.accept("keyword", "not"):
            self.nest()
            node = {"$not": self.parse_not()}
            self.depth -= 1
            return node
        return self.parse_atom()

    def parse_atom(self) -> Filter:
        if self.accept("punct", "("):
            self.nest()
            node = self.parse_or()
            self.expect("punct", ")", "')'")
            self.depth -= 1
            return node
        field = self.expect("word", what="a field name")
        negate = self.accept("keyword", "not")
        if self.accept("keyword", "in"):
            self.expect("punct", "(", "'(' after 'in'")
            values = [self.parse_value()]
            while self.accept("punct", ","):
                values.append(self.parse_value())
            self.expect("punct", ")", "')'")
            return {field: {"$nin" if negate else "$in": values}}
        if negate:
            raise self.error("expected 'in' after 'not'")
        op = self.expect("op", what="a comparison (=, !=, <, <=, >, >=, in)")
        return {field: {_EXPR_OPS[op]: self.parse_value()}}

    def parse_value(self) -> Any:
        token = self.peek()
        if token is None:
            raise self.error("expected a value")
        kind, value, _ = token
        if kind in ("string", "number"):
            self.pos += 1
            return value
        if kind == "keyword" and value in ("true", "false", "null"):
            self.pos += 1
            return {"true": True, "false": False, "null": None}[value]
        raise self.error('expected a value (a "string", a number, true, false or null)')


def parse_expression(text: str) -> Filter:
    """Parse a CLI filter expression such as ``lang = "en" and year >= 2000`` into the dict form."""
    check_text(text, "the filter", FilterError)
    return _Parser(text).parse()
