"""Parquet and JSONL files in and out of a collection, streamed in batches so that neither the file nor
the collection has to fit in memory.

Adding a Parquet file reads it twice: once to check every row (ids, texts, vector dimensions, ids
already in the collection) so that bad input changes nothing, then to add it batch by batch (one
transaction each). Exporting writes the items in insertion order with their metadata as columns
(Parquet; JSONL: as fields) and, when asked, their vectors, so that a file exported with vectors adds
back into a new ``precomputed`` collection with the same ids, metadata and bit-identical vectors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentsearch.errors import ConflictError, InvalidInputError
from latentsearch.fileio import disk_full_error, is_disk_full
from latentsearch.io.ingest import Records, check_records
from latentsearch.tables import (
    MetadataKinds,
    column_name,
    items_schema,
    items_table,
    json_columns,
    table_columns,
)

if TYPE_CHECKING:
    from latentsearch.collection import Collection
    from latentsearch.records import Item

PARQUET_BATCH = 8192  # rows read or written at a time
EXPORT_SUFFIXES = (".parquet", ".jsonl")


class ParquetSource:
    """A Parquet file, read in batches of :data:`PARQUET_BATCH` rows as :class:`Records`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_field: str = "id",
        text_field: str = "text",
        vector_field: str | None = None,
        metadata_fields: Sequence[str] | None = None,
    ) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InvalidInputError("reading Parquet needs pyarrow: pip install 'latentsearch[tables]'") from None
        self.path = Path(path)
        self.source = str(self.path)
        try:
            self.file = pq.ParquetFile(self.path)
        except FileNotFoundError:
            raise InvalidInputError(f"cannot read {self.path}: no such file") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid or OSError for a file that is not Parquet
            raise InvalidInputError(f"cannot read {self.path}: not a Parquet file ({_first_line(exc)})") from None
        if vector_field is not None and vector_field not in self.file.schema_arrow.names:
            columns = ", ".join(self.file.schema_arrow.names)
            raise InvalidInputError(f"{self.path} has no {vector_field!r} column for the vectors (columns: {columns})")
        self.fields = {"id_field": id_field, "text_field": text_field, "vector_field": vector_field or "vector"}
        self.metadata_fields = metadata_fields
        self.json_fields = json_columns(self.file.schema_arrow)

    def __len__(self) -> int:
        return int(self.file.metadata.num_rows)

    @property
    def needs_encoder(self) -> bool:
        """True when the rows have texts and no vectors: adding them runs the collection's model."""
        names = self.file.schema_arrow.names
        return self.fields["text_field"] in names and self.fields["vector_field"] not in names

    def batches(self) -> Iterator[Records]:
        first = 0
        try:
            for batch in self.file.iter_batches(batch_size=PARQUET_BATCH):
                columns = table_columns(
                    batch,
                    **self.fields,
                    metadata_fields=self.metadata_fields,
                    source=self.source,
                    first_row=first,
                    json_fields=self.json_fields,
                )
                yield Records(
                    columns.ids, columns.texts, columns.vectors, columns.metadata, self.source, uris=columns.uris
                )
                first += batch.num_rows
        except InvalidInputError:
            raise
        except Exception as exc:  # a damaged page or column chunk
            raise InvalidInputError(f"cannot read {self.path} after row {first}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def ingest_parquet(
    collection: Collection,
    source: ParquetSource,
    *,
    upsert: bool = False,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Add a Parquet file's rows batch by batch (one transaction each), after checking every row."""
    total, seen, with_text = len(source), set(), set()
    for records in source.batches():  # the first pass: everything that can be refused, refused now
        with_text.add(records.texts is not None)
        if len(with_text) > 1:  # (a batch's all-empty text column counts as none: decided here for the file)
            raise InvalidInputError(
                f"{source.source}: some rows have a {source.fields['text_field']!r} text and others (from row "
                f"{len(seen)} or before) have none; give every row a text, or none"
            )
        check_records(collection, records, upsert=upsert, seen=seen)
    del seen
    write = collection.upsert if upsert else collection.add
    done = 0
    for records in source.batches():

        def encoding(d: int, t: int, at: int = done, n: int = len(records)) -> None:
            if progress:  # within a batch, as its texts are encoded
                progress(at + n * d // max(t, 1), total)

        write(
            records.ids,
            records.texts,
            vectors=records.vectors,
            metadata=records.metadata,
            uris=records.uris,
            batch_size=batch_size,
            progress=encoding,
        )
        done += len(records)
        if progress:
            progress(done, total)
    return done


def export_items(
    collection: Collection,
    path: str | os.PathLike[str],
    *,
    vectors: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write every item to ``path`` (``.parquet`` or ``.jsonl``, written to a temporary file and renamed
    into place when complete): ``id``, ``text``, ``uri``, the metadata fields and, with ``vectors``,
    ``vector``. Returns the number of items written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InvalidInputError(f"cannot export to {path}: use a .parquet or .jsonl file name")
    if path.exists() and not overwrite:
        raise ConflictError(f"{path} exists: choose another name, or pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise InvalidInputError(f"cannot export to {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise InvalidInputError(f"cannot export to {path}: it is a folder; give a file name")
    total = collection.count()
    partial = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".parquet":
            done = _write_parquet(collection, partial, vectors, total, progress)
        else:
            done = _write_jsonl(collection, partial, vectors, total, progress)
        os.replace(partial, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(str(path)) from None
        raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return done


def _batches(items: Iterator[Item]) -> Iterator[list[Item]]:
    """Items in batches, each id once: a writer's upsert during the export moves an item to a later
    row, where the reading would meet it a second time."""
    seen: set[str] = set()
    while batch := list(islice(items, PARQUET_BATCH)):
        fresh = [item for item in batch if item.id not in seen]
        seen.update(item.id for item in fresh)
        yield fresh


def _write_parquet(
    collection: Collection, path: Path, vectors: bool, total: int, progress: Callable[[int, int], None] | None
) -> int:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("writing Parquet needs pyarrow: pip install 'latentsearch[tables]'") from None
    kinds = MetadataKinds()  # a first pass learns the metadata's columns: a Parquet file has one schema
    for batch in _batches(collection.iter_items()):
        kinds.see([item.metadata for item in batch])
    schema = items_schema(kinds, dim=collection.dim, vectors=vectors)
    done = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(collection.iter_items(with_vectors=vectors)):
            writer.write_table(items_table(batch, schema, kinds))
            done += len(batch)
            if progress:
                progress(done, total)
    return done


def _write_jsonl(
    collection: Collection, path: Path, vectors: bool, total: int, progress: Callable[[int, int], None] | None
) -> int:
    done = 0
    with open(path, "w", encoding="utf-8") as out:
        for batch in _batches(collection.iter_items(with_vectors=vectors)):
            for item in batch:
                out.write(json.dumps(_jsonl_row(item, vectors), ensure_ascii=False) + "\n")
            done += len(batch)
            if progress:
                progress(done, total)
    return done


def _jsonl_row(item: Item, vectors: bool) -> dict[str, Any]:
    """One JSONL line: what ``latentsearch add`` reads back (metadata as fields, a field named like an
    item column prefixed ``metadata.``). A float32 vector's numbers are written as the exact decimal of
    each (float32 to float64 is exact), so reading them back gives the same bits."""
    row: dict[str, Any] = {"id": item.id}
    if item.text is not None:
        row["text"] = item.text
    if item.uri is not None:
        row["uri"] = item.uri
    for key, value in (item.metadata or {}).items():
        row[column_name(key)] = value
    if vectors and item.vector is not None:
        row["vector"] = item.vector.tolist()
    return row
