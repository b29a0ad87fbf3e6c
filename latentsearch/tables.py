"""Tables in and out of a collection: pandas and polars DataFrames and Arrow tables (Parquet files
are read and written through them by :mod:`latentsearch.io.parquet`).

pyarrow is the common form (pandas and polars convert to it without copying what they can share);
each library is imported only when a table of its kind is given or asked for, so none of them is
needed to use latentsearch. A table's ``id`` column names the items, ``text`` holds their texts and
``vector`` their precomputed vectors (the names are options); every other column is metadata.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from latentsearch.errors import ConflictError, InvalidInputError
from latentsearch.records import Item

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_MODULES = ("pandas", "polars", "pyarrow")
# Columns an exported table gives the item itself; metadata fields of these names are prefixed.
RESERVED_COLUMNS = ("id", "text", "uri", "vector")


def is_table(value: Any) -> bool:
    """True for a pandas or polars DataFrame or a pyarrow Table or RecordBatch."""
    module = type(value).__module__.split(".")[0]
    return module in TABLE_MODULES and type(value).__name__ in ("DataFrame", "Table", "RecordBatch")


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise InvalidInputError(
            "tables need pyarrow: pip install 'latentsearch[tables]' (pyarrow, and pandas for to_pandas)"
        ) from None
    return pyarrow


def as_arrow(table: Any) -> pa.Table:
    """A pyarrow Table of a pandas or polars DataFrame or a pyarrow Table/RecordBatch."""
    pa = _pyarrow()
    module = type(table).__module__.split(".")[0]
    try:
        if module == "pandas":
            return pa.Table.from_pandas(table, preserve_index=False)
        if module == "polars":
            return table.to_arrow()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # a column of mixed kinds, say
        raise InvalidInputError(f"cannot read the table: {str(exc).splitlines()[0]}") from None
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    return table


class TableColumns(NamedTuple):
    """What a table holds for adding: ids, texts or None, vectors or None, metadata per row."""

    ids: list[str]
    texts: list[str] | None
    vectors: np.ndarray | None
    metadata: list[dict[str, Any]]
    uris: list[str | None] | None


def table_columns(
    table: Any,
    *,
    id_field: str = "id",
    text_field: str = "text",
    vector_field: str = "vector",
    metadata_fields: Sequence[str] | None = None,
    source: str = "the table",
    first_row: int = 0,
    json_fields: Sequence[str] | None = None,
) -> TableColumns:
    """Items of a DataFrame or Arrow table: ids from ``id_field`` (required), texts from
    ``text_field`` and vectors from ``vector_field`` (at least one of the two), metadata from every
    other column (or ``metadata_fields``) but ``uri`` (the items' URIs); a missing value leaves its
    field out of that item's metadata, a text or URI column with no value at all counts as absent (an
    export writes them for every collection). Columns a latentsearch export wrote as JSON texts
    (``json_fields``, default: those its schema names) are decoded, and its ``metadata.`` prefix is
    taken off. Errors name the column and the row (counted from ``first_row``)."""
    data = as_arrow(table)
    names = data.column_names
    columns = ", ".join(names) or "none"
    if id_field not in names:
        raise InvalidInputError(
            f"{source} has no {id_field!r} column for the ids (columns: {columns}); name it with id_field"
        )
    has_text = text_field in names and data.column(text_field).null_count < data.num_rows
    has_vector = vector_field in names
    if not has_text and not has_vector:
        raise InvalidInputError(
            f"{source} has neither a {text_field!r} column nor a {vector_field!r} column (columns: {columns}); "
            "name them with text_field / vector_field"
        )
    if metadata_fields is not None:
        missing = [f for f in metadata_fields if f not in names]
        if missing:
            raise InvalidInputError(f"{source} has no column {missing[0]!r} (columns: {columns})")
    ids = []
    for row, value in enumerate(data.column(id_field).to_pylist(), first_row):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise InvalidInputError(f"{source} row {row}: no id in column {id_field!r}")
        ids.append(value if isinstance(value, str) else str(value))
    texts = None
    if has_text:
        texts = data.column(text_field).to_pylist()
        for row, text in enumerate(texts, first_row):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"{source} row {row}: empty or non-string {text_field!r}")
    vectors = vector_column(data, vector_field, source, first_row) if has_vector else None
    uris = data.column("uri").to_pylist() if "uri" in names and uri_field_used(data) else None
    item_columns = (id_field, text_field, vector_field, "uri" if uris is not None else id_field)
    kept = list(metadata_fields) if metadata_fields is not None else [n for n in names if n not in item_columns]
    decode = set(json_columns(data.schema) if json_fields is None else json_fields)
    keys = {name: metadata_key(name) for name in kept}
    metadata = []
    for row in data.select(kept).to_pylist() if kept else [{}] * data.num_rows:
        values = {name: json.loads(v) if name in decode else _json_value(v) for name, v in row.items() if v is not None}
        metadata.append({keys[name]: v for name, v in values.items() if v is not None})  # (NaN became None)
    return TableColumns(ids, texts, vectors, metadata, uris)


def uri_field_used(data: pa.Table) -> bool:
    """True when a table's ``uri`` column holds a URI (as text) for some row."""
    import pyarrow as pa

    column = data.column("uri")
    kind = column.type
    texts = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    return texts and column.null_count < data.num_rows


def column_name(key: str) -> str:
    """The column (or JSONL field) an export gives a metadata field: its own name, prefixed
    ``metadata.`` when it is named like one of the item's own columns."""
    return f"metadata.{key}" if key in RESERVED_COLUMNS else key


def metadata_key(column: str) -> str:
    """The metadata field a column holds (:func:`column_name` read back; a field whose own name is
    ``metadata.id`` comes back as ``id``)."""
    prefix = "metadata."
    return column[len(prefix) :] if column.startswith(prefix) and column[len(prefix) :] in RESERVED_COLUMNS else column


def vector_column(data: pa.Table, field: str, source: str, first_row: int = 0) -> np.ndarray:
    """A list column of numbers as a float32 (rows, dim) array: one length for every row, no nulls."""
    pa = _pyarrow()
    column = data.column(field).combine_chunks()
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise InvalidInputError(f"{source}: column {field!r} must hold lists of numbers (vectors), not {kind}")
    value_type = kind.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise InvalidInputError(f"{source}: column {field!r} holds lists of {value_type}, not numbers")
    if column.null_count:
        row = column.is_null().to_pylist().index(True)
        raise InvalidInputError(f"{source} row {first_row + row}: no vector in column {field!r}")
    if pa.types.is_fixed_size_list(kind):
        dim = kind.list_size
    else:
        lengths = column.value_lengths().to_numpy()
        dim = int(lengths[0]) if len(lengths) else 0
        uneven = np.flatnonzero(lengths != dim)
        if len(uneven):
            raise InvalidInputError(
                f"{source} row {first_row + int(uneven[0])}: a vector of {int(lengths[uneven[0]])} numbers "
                f"where the others have {dim}"
            )
    flat = column.flatten()
    if flat.null_count:
        raise InvalidInputError(f"{source}: column {field!r} has a vector with a missing number")
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(column), dim)


def _json_value(value: Any) -> Any:
    """A table cell as a JSON metadata value: dates and times as ISO strings, decimals as floats, NaN
    (pandas' missing number) left out by the caller as None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


# --- tables out -----------------------------------------------------------------------------------

JSON_COLUMNS_KEY = b"latentsearch.json_columns"  # schema metadata: the columns that hold JSON texts


class MetadataKinds:
    """Each metadata field's column type, learnt from the values seen (batch by batch, so a streamed
    export knows its schema before writing): bool, int64, float64 (ints and floats mixed) or string;
    a field holding lists, objects or values of different kinds becomes a JSON text column, named
    in the schema's metadata, which reading the table back decodes."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}

    def see(self, metadata: Sequence[dict[str, Any]]) -> None:
        for m in metadata:
            for key, value in m.items():
                if value is None:
                    continue
                kind = _kind_of(value)
                known = self.kinds.get(key)
                if known is None or known == kind:
                    self.kinds[key] = kind
                elif {known, kind} == {"int64", "float64"}:
                    self.kinds[key] = "float64"
                else:
                    self.kinds[key] = "json"

    def fields(self) -> list[tuple[str, str, str]]:
        """``(metadata key, column name, kind)`` in first-seen order; a key named like an item column
        is prefixed ``metadata.``."""
        return [(key, column_name(key), kind) for key, kind in self.kinds.items()]


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "json"


def items_schema(kinds: MetadataKinds, *, dim: int, vectors: bool) -> pa.Schema:
    """The Arrow schema of :func:`items_table` for these metadata kinds."""
    pa = _pyarrow()
    types = {
        "bool": pa.bool_(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "string": pa.string(),
        "json": pa.string(),
    }
    fields = [pa.field("id", pa.string()), pa.field("text", pa.string()), pa.field("uri", pa.string())]
    fields += [pa.field(name, types[kind]) for _, name, kind in kinds.fields()]
    if vectors:
        fields.append(pa.field("vector", pa.list_(pa.float32(), dim)))
    json_columns = [name for _, name, kind in kinds.fields() if kind == "json"]
    return pa.schema(fields, metadata={JSON_COLUMNS_KEY: json.dumps(json_columns).encode()})


def items_table(items: Sequence[Item], schema: pa.Schema, kinds: MetadataKinds | None) -> pa.Table:
    """An Arrow table of items in ``schema`` (:func:`items_schema`): ``id``, ``text``, ``uri``, a
    column per metadata field of ``kinds`` (None: no metadata columns) and, when the schema has it,
    ``vector``. A field the kinds do not know, or of another kind, is a :class:`ConflictError` (an
    export whose items changed between its passes)."""
    pa = _pyarrow()
    unknown = {key for i in items for key in (i.metadata or {})} - set(kinds.kinds) if kinds is not None else set()
    if unknown:  # (an export's second pass: a writer added the field since the first)
        raise ConflictError(
            f"metadata field {sorted(unknown)[0]!r} appeared while exporting: export again (or from a backup)"
        )
    columns: list[Any] = [
        pa.array([i.id for i in items], pa.string()),
        pa.array([i.text for i in items], pa.string()),
        pa.array([i.uri for i in items], pa.string()),
    ]
    for key, _, kind in kinds.fields() if kinds is not None else []:
        values = [(i.metadata or {}).get(key) for i in items]
        if kind == "json":
            values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
        elif kind == "float64":
            values = [None if v is None else float(v) for v in values]
        columns.append(values)
    if "vector" in schema.names:
        dim = schema.field("vector").type.list_size
        matrix = np.stack([i.vector for i in items]).astype(np.float32) if items else np.empty((0, dim), np.float32)
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), dim))
    try:
        arrays = [
            c if isinstance(c, pa.Array) else pa.array(c, schema.field(n).type) for c, n in zip(columns, schema.names)
        ]
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        raise ConflictError("a metadata field changed kind while exporting: export again (or from a backup)") from None
    return pa.Table.from_arrays(arrays, schema=schema)


def json_columns(schema: pa.Schema) -> list[str]:
    """The columns of a table latentsearch exported that hold JSON texts (none for other tables)."""
    raw = (schema.metadata or {}).get(JSON_COLUMNS_KEY)
    return list(json.loads(raw)) if raw else []


def metadata_structs(metadata: Sequence[dict[str, Any]]) -> pa.Array:
    """Each item's metadata as one struct value, a child per field (Arrow types each; a field missing
    from an item is null there); a field Arrow cannot type as one (values of mixed kinds) as JSON texts."""
    pa = _pyarrow()
    keys = list(dict.fromkeys(key for m in metadata for key in (m or {})))
    if not keys:
        return pa.nulls(len(metadata), pa.struct([]))
    children = []
    for key in keys:
        values = [(m or {}).get(key) for m in metadata]
        try:
            children.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            children.append(pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values]))
    return pa.StructArray.from_arrays(children, names=keys)
