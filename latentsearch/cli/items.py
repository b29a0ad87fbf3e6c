"""Commands on items: add, get, delete, update-metadata."""

from __future__ import annotations

import json
from pathlib import Path
from time import perf_counter
from typing import Annotated

import typer
from rich.table import Table

from latentsearch.cli.app import (
    HomeOption,
    JsonOption,
    command,
    console,
    escape,
    model_loading,
    open_collection,
    print_json,
    progress_bar,
    report_skipped,
    snippet,
)


@command()
def add(
    name: str,
    source: Annotated[
        Path,
        typer.Argument(
            help="A .jsonl/.csv/.tsv/.parquet file, a .npy/.npz of vectors, a document (.txt, .md, .html, .pdf) or "
            "a folder of documents (or of images, for an image collection)."
        ),
    ],
    text_field: Annotated[str, typer.Option(help="Field holding the text (JSONL/CSV).")] = "text",
    id_field: Annotated[
        str, typer.Option(help="Field holding the id; absent: ids are FILE-LINE (JSONL/CSV; Parquet needs it).")
    ] = "id",
    vector_field: Annotated[
        str | None, typer.Option(help="Field holding a precomputed vector [Parquet default: vector, when present].")
    ] = None,
    metadata_fields: Annotated[
        str | None, typer.Option(help="Comma-separated fields to keep as metadata [default: all others].")
    ] = None,
    ids_file: Annotated[Path | None, typer.Option(help="For .npy input: a file with one id per line.")] = None,
    upsert: Annotated[bool, typer.Option(help="Replace items whose id exists instead of failing.")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 64,
    home: HomeOption = None,
) -> None:
    """Add items from a file or folder (encoded in batches, with a progress bar).

    Documents (.txt, .md/.markdown, .html/.htm, .pdf) are read as plain text: Markdown without its markup,
    an HTML page's main text, a PDF page by page (search hits name the page). Their metadata holds path,
    suffix, source (the absolute path), title and, for PDFs, pages. Files of a folder that cannot be read
    (encrypted or scanned PDFs, binary files, empty ones) are skipped and listed with the reason.
    A Parquet file is streamed in batches (checked whole first, then added batch by batch)."""
    from latentsearch.io.ingest import ingest
    from latentsearch.io.inputs import read_for

    fields = [f.strip() for f in metadata_fields.split(",") if f.strip()] if metadata_fields else None
    if source.suffix.lower() == ".parquet":
        _add_parquet(name, source, text_field, id_field, vector_field, fields, upsert, batch_size, home)
        return
    with open_collection(name, home) as col:
        records = read_for(
            col,
            source,
            text_field=text_field,
            id_field=id_field,
            vector_field=vector_field,
            metadata_fields=fields,
            ids_file=ids_file,
        )
        report_skipped(records.skipped, "images" if records.uris is not None else "documents")
        start = perf_counter()
        with model_loading(col, records.vectors is None), progress_bar(f"adding to {name}") as update:
            before = col.passage_count()
            done = ingest(
                col, records, upsert=upsert, batch_size=batch_size, progress=update, passage_progress=update.passages
            )
        elapsed = perf_counter() - start
        total, passages = col.count(), col.passage_count()
    _report_added(name, upsert, done, elapsed, before, total, passages)


def _report_added(name: str, upsert: bool, done: int, elapsed: float, before: int, total: int, passages: int) -> None:
    verb = "upserted" if upsert else "added"
    rate = f"{done / max(elapsed, 1e-9):,.0f} items/s"
    if passages - before > done:  # long texts: say what the encoder really did
        rate += f", {passages - before:,} new passages"
    shown = f"{total:,}" + (f" ({passages:,} passages)" if passages > total else "")
    console.print(f"{verb} {done:,} items in {elapsed:.1f}s ({rate}); {name} has {shown}")


def _add_parquet(
    name: str,
    source: Path,
    text_field: str,
    id_field: str,
    vector_field: str | None,
    fields: list[str] | None,
    upsert: bool,
    batch_size: int,
    home: Path | None,
) -> None:
    from latentsearch.io.parquet import ParquetSource, ingest_parquet

    with open_collection(name, home) as col:
        parquet = ParquetSource(
            source, id_field=id_field, text_field=text_field, vector_field=vector_field, metadata_fields=fields
        )
        start = perf_counter()
        with model_loading(col, parquet.needs_encoder), progress_bar(f"adding to {name}") as update:
            before = col.passage_count()
            done = ingest_parquet(col, parquet, upsert=upsert, batch_size=batch_size, progress=update)
        elapsed = perf_counter() - start
        _report_added(name, upsert, done, elapsed, before, col.count(), col.passage_count())


@command()
def export(
    name: str,
    dest: Annotated[Path, typer.Argument(help="The file to write: .parquet or .jsonl.")],
    vectors: Annotated[bool, typer.Option("--vectors", help="Include each item's vector.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace DEST if it exists.")] = False,
    home: HomeOption = None,
) -> None:
    """Write every item to a Parquet or JSONL file.

    Columns: id, text, uri, the metadata fields and, with --vectors, the vector. Streams in batches; the
    file appears only when complete. A file written with --vectors adds back into a precomputed
    collection (latentsearch add NEW FILE --vector-field vector) with the same ids, metadata and
    vectors, bit for bit."""
    from latentsearch.io.parquet import export_items

    with open_collection(name, home) as col:
        start = perf_counter()
        with progress_bar(f"exporting {name}") as update:
            done = export_items(col, dest, vectors=vectors, overwrite=overwrite, progress=update)
    console.print(f"exported {done:,} items to {dest} in {perf_counter() - start:.1f}s")


@command()
def get(
    name: str,
    ids: Annotated[list[str], typer.Argument(help="Item ids.")],
    vectors: Annotated[bool, typer.Option("--vectors", help="Include the stored vectors.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show items by id."""
    with open_collection(name, home) as col:
        items = col.get(ids, with_vectors=vectors)
    if as_json:
        print_json([item.to_dict() for item in items])
        return
    table = Table("id", "kind", "text / uri", "metadata")
    for item in items:
        metadata = json.dumps(item.metadata, ensure_ascii=False)
        table.add_row(escape(item.id), item.kind, escape(snippet(item.text or item.uri)), escape(metadata))
    console.print(table)


@command()
def delete(
    name: str,
    ids: Annotated[list[str], typer.Argument(help="Item ids to delete.")],
    home: HomeOption = None,
) -> None:
    """Delete items by id (all or nothing: an unknown id deletes none)."""
    with open_collection(name, home) as col:
        removed = col.delete(ids)
        total = col.count()
    console.print(f"deleted {removed} items; {name} has {total:,}")


@command("update-metadata")
def update_metadata(
    name: str,
    source: Annotated[Path, typer.Argument(help="JSONL or CSV: one item per line, its id and the fields to set.")],
    id_field: Annotated[str, typer.Option(help="Field holding each item's id.")] = "id",
    home: HomeOption = None,
) -> None:
    """Merge fields into items' metadata (a JSON null removes a field); all or nothing."""
    from latentsearch.io.ingest import read_metadata_updates

    updates = read_metadata_updates(source, id_field=id_field)
    with open_collection(name, home) as col:
        console.print(f"updated the metadata of {col.update_metadata(updates):,} items in {name}")
