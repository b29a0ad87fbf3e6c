"""Commands on whole collections: create, list, info, drop, count, index-field, compact, doctor,
backup, restore."""

from __future__ import annotations

import sys
from pathlib import Path
from time import perf_counter
from typing import Annotated

import typer
from rich.table import Table

from latentsearch.cli.app import (
    HomeOption,
    JsonOption,
    command,
    connect,
    console,
    err,
    escape,
    open_collection,
    print_json,
    progress_bar,
)
from latentsearch.encoders.passages import DEFAULT_MAX_PASSAGES
from latentsearch.errors import InvalidInputError


@command()
def create(
    name: Annotated[str, typer.Argument(help="Collection name (letters, digits, '_', '-', '.').")],
    encoder: Annotated[
        str,
        typer.Option(
            help="minilm (text), efficientnet-lite0 (images), st:PATH (local sentence-transformers folder, CLIP too), "
            "ae:PATH (your autoencoder), precomputed."
        ),
    ] = "minilm",
    index: Annotated[
        str, typer.Option(help="auto, flat, hnsw, ivf, ivfpq, sq8, or faiss:FACTORY (a FAISS factory string).")
    ] = "auto",
    metric: Annotated[str, typer.Option(help="cosine, ip (inner product, unnormalised) or l2.")] = "cosine",
    dim: Annotated[int | None, typer.Option(help="Vector dimension (required with --encoder precomputed).")] = None,
    shards: Annotated[
        int | None, typer.Option(help="Split over this many shards held by Ray actors (see --ray).")
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            help="Long texts are split into passages of the encoder's window (MiniLM: 254 word pieces): "
            "tokens from one passage's start to the next. Default: 3/4 of the window (passages overlap by a quarter)."
        ),
    ] = None,
    max_passages: Annotated[
        int,
        typer.Option(
            help="At most this many passages per text (1 to 65,536); a longer text's end is not searchable "
            "(a warning names it)."
        ),
    ] = DEFAULT_MAX_PASSAGES,
    home: HomeOption = None,
) -> None:
    """Create an empty collection."""
    db = connect(home)
    options = {"stride": stride, "max_passages": max_passages}
    with db.create(name, encoder=encoder, index=index, metric=metric, dim=dim, shards=shards, **options) as col:
        console.print(
            f"created collection [bold]{name}[/] ({col.encoder_name}, {col.dim}-d, {col.metric}, "
            f"index {index}) in {col.path}"
        )


@command("list")
def list_(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List the collections in the data directory."""
    db = connect(home)
    rows = [db.describe(name) for name in db.list()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no collections yet: create one with [bold]latentsearch create NAME[/]")
        return
    table = Table("name", "items", "encoder", "dim", "shards")
    for row in rows:
        if "problem" in row:
            table.add_row(row["name"], "[red]cannot be opened[/]", "", "", "")
            continue
        table.add_row(row["name"], f"{row['count']:,}", row["encoder"], str(row["dim"]), str(row.get("shards", "")))
    console.print(table)
    for row in rows:
        if "problem" in row:
            err.print(f"[bold red]{row['name']}:[/] {row['problem']}", soft_wrap=True)


@command()
def info(name: str, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show a collection's settings, size and index state."""
    with open_collection(name, home) as col:
        data = col.info()
    if as_json:
        print_json(data)
        return
    table = Table("setting", "value", show_header=False)
    for key, value in data.items():
        shown = ", ".join(map(str, value)) or "none" if isinstance(value, list) else str(value)
        table.add_row(key, shown)
    console.print(table)


@command()
def drop(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    home: HomeOption = None,
) -> None:
    """Delete a collection and all its files."""
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInputError(f"refusing to drop {name!r} without confirmation: pass --yes")
        typer.confirm(f"Delete collection {name!r} and all its items?", abort=True)
    connect(home).drop(name)
    console.print(f"dropped collection [bold]{name}[/]")


@command()
def count(name: str, home: HomeOption = None) -> None:
    """Print the number of items."""
    with open_collection(name, home) as col:
        console.print(str(col.count()))


@command("index-field")
def index_field(
    name: str,
    field: Annotated[str, typer.Argument(help="Metadata field, '.' for nested ones (author.name).")],
    drop: Annotated[bool, typer.Option("--drop", help="Remove the field's index instead.")] = False,
    home: HomeOption = None,
) -> None:
    """Index a metadata field, so filters on it (--where) read an SQLite index instead of every item's JSON."""
    with open_collection(name, home) as col:
        if drop:
            col.drop_field_index(field)
            console.print(f"dropped the index of field {field!r} in {name}")
        elif col.index_field(field):
            console.print(f"indexed field {field!r} in {name}: filters on it use the index")
        else:
            console.print(f"field {field!r} of {name} was already indexed")


@command()
def compact(name: str, home: HomeOption = None) -> None:
    """Rebuild the FAISS index from SQLite, and its filter partition.

    Drops HNSW tombstones, retrains IVF/PQ and, for an HNSW index of 10,000 vectors or more, builds the
    filter partition: filtered searches use it from the first."""
    with open_collection(name, home) as col:
        with progress_bar(f"rebuilding {name}", unit="vectors") as update:

            def staged(done: int, total: int) -> None:
                if done < update.done:  # (counting again from 0: the partition's pass, see Collection.compact)
                    update.stage(f"partitioning {name}")
                update(done, total)

            col.compact(progress=staged)
        lists = col.info().get("filter_partition_lists")
    partition = f" and its filter partition ({lists} lists)" if lists else ""
    console.print(f"rebuilt the index of {name}{partition}")


@command()
def doctor(
    name: str,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fix what can be fixed (rebuild indexes, salvage items).")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a collection's files (SQLite, vectors, full-text and FAISS indexes) and repair them."""
    from latentsearch.workflows.doctor import doctor as run_doctor

    report = run_doctor(name, home=connect(home).home, repair=repair)
    if as_json:
        print_json(report.to_dict())
    else:
        table = Table("check", "state", "detail")
        for f in report.findings:
            state = "[green]ok[/]" if f.ok else "[yellow]repaired[/]" if f.repaired else "[red]problem[/]"
            table.add_row(f.check, state, escape(f.detail))
        console.print(table)
        verdict = "healthy" if report.healthy else "has problems: run with --repair" if not repair else "has problems"
        console.print(f"{name} {verdict}")
    if not report.healthy:
        raise typer.Exit(2)


@command()
def backup(
    name: str,
    dest: Annotated[Path, typer.Argument(help="A new folder for the copy (it must not exist).")],
    home: HomeOption = None,
) -> None:
    """Copy a collection into a new folder, consistently while writers run.

    SQLite's online backup takes one snapshot per database; the index, checkpointed first, catches up on
    open. The copy appears only when complete, and is checked by opening it. Bring it back with
    `latentsearch restore DEST NAME`."""
    start = perf_counter()
    with open_collection(name, home) as col:
        col.backup(dest, on_file=lambda path: err.print(f"[dim]copied {path}[/]"))
    console.print(f"backed up {name} into {dest} in {perf_counter() - start:.1f}s")


@command()
def restore(
    backup: Annotated[Path, typer.Argument(help="A folder `latentsearch backup` wrote.")],
    name: Annotated[str, typer.Argument(help="The collection to restore it as (it must not exist).")],
    home: HomeOption = None,
) -> None:
    """Bring a backup back as a collection of the data directory, then open it to check it."""
    with connect(home).restore(backup, name) as col:
        total = col.count()
    console.print(f"restored {name} ({total:,} items) from {backup}")
