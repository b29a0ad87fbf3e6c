"""The ``latentsearch`` command line: parse, call the library, print. No logic of its own.

Imports stay light at module level (no FAISS, no torch) so that ``--help`` is instant.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from latentsearch.errors import InvalidInputError, LatentSearchError

app = typer.Typer(
    name="latentsearch",
    help="Embedded latent-space engine: encode text into vectors, store them in SQLite + FAISS, and search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Data directory of collections [default: $LATENTSEARCH_HOME or ./indexes]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command whose expected errors print as one line on stderr (exit code 1)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except LatentSearchError as exc:
                err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                err.print("interrupted: every batch that finished is saved")
                raise typer.Exit(130) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Ray cluster for sharded collections: 'auto', HOST:PORT or ray://HOST:PORT."),
    ] = None,
) -> None:
    from rich.logging import RichHandler

    global _RAY_ADDRESS
    _RAY_ADDRESS = ray
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_time=False, show_path=False)],
    )


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar with items/s, as a ``progress(done, total)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(description, total=None, rate="")
        start = perf_counter()

        def update(done: int, total: int) -> None:
            elapsed = max(perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:,.0f} items/s")

        try:
            yield update
        except LatentSearchError:
            bar.live.transient = True  # the error's one line is all that stays on stderr
            raise


_RAY_ADDRESS: str | None = None  # set by the --ray option


def _open(name: str, home: Path | None) -> Any:
    import latentsearch as ls

    return ls.open(name, home=home, ray_address=_RAY_ADDRESS)


LOADING_NOTE_AFTER = 0.5  # seconds: a model that loads faster than this is not worth a status line


@contextmanager
def _model_loading(col: Any, needed: bool = True) -> Iterator[None]:
    """Load the collection's model in the background while the command goes on (opening the index
    overlaps it); if it is still loading after a moment, say so in one line on stderr."""
    thread = col.load_encoder(background=True) if needed else None
    timer = None
    if thread is not None:

        def note() -> None:
            if thread.is_alive():
                from latentsearch.encoders import get_encoder

                encoder = get_encoder(col.encoder_name)
                message = getattr(encoder, "loading_message", None) or f"loading model {col.encoder_name}…"
                err.print(f"[dim]{message}[/]")

        timer = threading.Timer(LOADING_NOTE_AFTER, note)
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


def _load_npy(path: Path, what: str) -> Any:
    """A .npy array (never unpickled), or a one-line error naming the file."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc}") from None


def _snippet(text: str | None, width: int = 90) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


# --- collections ---------------------------------------------------------------------------------


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
    home: HomeOption = None,
) -> None:
    """Create an empty collection."""
    import latentsearch as ls

    col = ls.create(
        name, encoder=encoder, index=index, metric=metric, dim=dim, home=home, shards=shards, ray_address=_RAY_ADDRESS
    )
    console.print(
        f"created collection [bold]{name}[/] ({col.encoder_name}, {col.dim}-d, {col.metric}, "
        f"index {index}) in {col.path}"
    )
    col.close()


@command("list")
def list_(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List the collections in the data directory."""
    import latentsearch as ls

    db = ls.connect(home)
    rows = [db.describe(name) for name in db.list()]
    if as_json:
        _print_json(rows)
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
    with _open(name, home) as col:
        data = col.info()
    if as_json:
        _print_json(data)
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
    import latentsearch as ls

    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInputError(f"refusing to drop {name!r} without confirmation: pass --yes")
        typer.confirm(f"Delete collection {name!r} and all its items?", abort=True)
    ls.drop(name, home=home)
    console.print(f"dropped collection [bold]{name}[/]")


# --- items ---------------------------------------------------------------------------------------


@command()
def add(
    name: str,
    source: Annotated[
        Path, typer.Argument(help="A .jsonl/.csv/.tsv file, a .npy/.npz of vectors, or a folder of .txt/.md.")
    ],
    text_field: Annotated[str, typer.Option(help="Field holding the text (JSONL/CSV).")] = "text",
    id_field: Annotated[str, typer.Option(help="Field holding the id; absent: ids are FILE-LINE.")] = "id",
    vector_field: Annotated[str | None, typer.Option(help="Field holding a precomputed vector.")] = None,
    metadata_fields: Annotated[
        str | None, typer.Option(help="Comma-separated fields to keep as metadata [default: all others].")
    ] = None,
    ids_file: Annotated[Path | None, typer.Option(help="For .npy input: a file with one id per line.")] = None,
    upsert: Annotated[bool, typer.Option(help="Replace items whose id exists instead of failing.")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 64,
    home: HomeOption = None,
) -> None:
    """Add items from a file or folder (encoded in batches, with a progress bar)."""
    from latentsearch.io.ingest import ingest, read_input

    fields = [f.strip() for f in metadata_fields.split(",") if f.strip()] if metadata_fields else None
    with _open(name, home) as col:
        records = read_input(
            source,
            text_field=text_field,
            id_field=id_field,
            vector_field=vector_field,
            metadata_fields=fields,
            ids_file=ids_file,
            images=col.manifest.get("modality") in ("image", "joint") and vector_field is None,
        )
        if records.skipped:
            shown = ", ".join(f"{Path(f).name} ({why})" for f, why in records.skipped[:5])
            more = f" and {len(records.skipped) - 5} more" if len(records.skipped) > 5 else ""
            err.print(f"[yellow]skipped {len(records.skipped)} files that are not readable images:[/] {shown}{more}")
        start = perf_counter()
        with _model_loading(col, records.vectors is None), progress_bar(f"adding to {name}") as update:
            done = ingest(col, records, upsert=upsert, batch_size=batch_size, progress=update)
        elapsed = perf_counter() - start
        total = col.count()
    verb = "upserted" if upsert else "added"
    console.print(
        f"{verb} {done:,} items in {elapsed:.1f}s ({done / max(elapsed, 1e-9):,.0f} items/s); {name} has {total:,}"
    )


@command()
def get(
    name: str,
    ids: Annotated[list[str], typer.Argument(help="Item ids.")],
    vectors: Annotated[bool, typer.Option("--vectors", help="Include the stored vectors.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show items by id."""
    with _open(name, home) as col:
        items = col.get(ids, with_vectors=vectors)
    if as_json:
        _print_json([item.to_dict() for item in items])
        return
    table = Table("id", "kind", "text / uri", "metadata")
    for item in items:
        metadata = json.dumps(item.metadata, ensure_ascii=False)
        table.add_row(_escape(item.id), item.kind, _escape(_snippet(item.text or item.uri)), _escape(metadata))
    console.print(table)


@command()
def delete(
    name: str,
    ids: Annotated[list[str], typer.Argument(help="Item ids to delete.")],
    home: HomeOption = None,
) -> None:
    """Delete items by id (all or nothing: an unknown id deletes none)."""
    with _open(name, home) as col:
        removed = col.delete(ids)
        total = col.count()
    console.print(f"deleted {removed} items; {name} has {total:,}")


@command()
def count(name: str, home: HomeOption = None) -> None:
    """Print the number of items."""
    with _open(name, home) as col:
        console.print(str(col.count()))


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
    with _open(name, home) as col:
        console.print(f"updated the metadata of {col.update_metadata(updates):,} items in {name}")


@command("index-field")
def index_field(
    name: str,
    field: Annotated[str, typer.Argument(help="Metadata field, '.' for nested ones (author.name).")],
    drop: Annotated[bool, typer.Option("--drop", help="Remove the field's index instead.")] = False,
    home: HomeOption = None,
) -> None:
    """Index a metadata field, so filters on it (--where) read an SQLite index instead of every item's JSON."""
    with _open(name, home) as col:
        if drop:
            col.drop_field_index(field)
            console.print(f"dropped the index of field {field!r} in {name}")
        elif col.index_field(field):
            console.print(f"indexed field {field!r} in {name}: filters on it use the index")
        else:
            console.print(f"field {field!r} of {name} was already indexed")


@command()
def compact(name: str, home: HomeOption = None) -> None:
    """Rebuild the FAISS index from SQLite (drops HNSW tombstones, retrains IVF/PQ)."""
    with _open(name, home) as col, progress_bar(f"rebuilding {name}") as update:
        col.compact(progress=update)
    console.print(f"rebuilt the index of {name}")


# --- search --------------------------------------------------------------------------------------


@command()
def search(
    name: str,
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    where: Annotated[
        str | None,
        typer.Option(help='Metadata filter, e.g. \'lang = "en" and (year >= 2000 or tag in ("a", "b"))\'.'),
    ] = None,
    like: Annotated[str | None, typer.Option(help="Find items like this item id (itself excluded).")] = None,
    vector: Annotated[Path | None, typer.Option(help="A .npy file holding one query vector.")] = None,
    image: Annotated[Path | None, typer.Option(help="An image file to search by (image collections).")] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="vector (meaning), lexical (BM25 on words) or hybrid (both, fused; best for codes and names)."
        ),
    ] = "vector",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf (reciprocal rank) or weighted (scores).")] = "rrf",
    alpha: Annotated[float, typer.Option(help="Weighted fusion: weight of the vector score (0..1).")] = 0.5,
    rrf_k: Annotated[int, typer.Option(help="RRF constant: larger flattens the rank weights.")] = 60,
    explain: Annotated[bool, typer.Option("--explain", help="Show each mode's rank and score.")] = False,
    ef_search: Annotated[int | None, typer.Option(help="HNSW: candidates explored (recall vs speed).")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF: lists probed (recall vs speed).")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search by text (vector, lexical or hybrid), by an image (--image), a vector (--vector) or an item (--like)."""
    given = [x is not None for x in (query, like, vector, image)]
    if sum(given) != 1:
        raise InvalidInputError("give exactly one of QUERY, --like ID, --image FILE or --vector FILE.npy")
    q: Any = _load_npy(vector, "query vector") if vector is not None else image if image is not None else query
    encodes = (query is not None and mode != "lexical") or image is not None
    with _open(name, home) as col, _model_loading(col, encodes):
        hits = col.search(
            q,
            k=k,
            where=where,
            like=like,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            rrf_k=rrf_k,
            explain=explain,
            ef_search=ef_search,
            nprobe=nprobe,
        )
    _print_hits(hits, as_json, explain=explain)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _highlight(hit: Any) -> str:
    """The snippet with its matched words in bold, or the start of the text."""
    if hit.snippet:
        parts = _escape(" ".join(hit.snippet.split())).split("**")
        return "".join(f"[bold yellow]{p}[/]" if i % 2 else p for i, p in enumerate(parts))
    return _escape(_snippet(hit.text or hit.uri))


def _rank_cell(details: dict[str, Any], mode: str) -> str:
    rank = details.get(f"{mode}_rank")
    return "-" if rank is None else f"{rank} ({details[f'{mode}_score']:.3g})"


# --- recommendations -----------------------------------------------------------------------------


def _split_ids(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _print_hits(hits: list[Any], as_json: bool, *, explain: bool = False) -> None:
    """Hits as JSON, or as a table (with each mode's rank when ``explain``)."""
    if as_json:
        _print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        console.print("no results")
        return
    columns = ["#", "score", "id", "text / uri", "metadata"]
    if explain:
        columns[2:2] = ["vector rank (score)", "lexical rank (score)"]
    table = Table(*columns)
    for rank, hit in enumerate(hits, 1):
        metadata = _escape(json.dumps(hit.metadata, ensure_ascii=False))
        row = [str(rank), f"{hit.score:.4g}", hit.id, _highlight(hit), metadata]
        if explain:
            details = hit.details or {}
            row[2:2] = [_rank_cell(details, "vector"), _rank_cell(details, "lexical")]
        table.add_row(*row)
    console.print(table)


@command()
def recommend(
    name: str,
    like: Annotated[list[str] | None, typer.Option(help="Item ids to find more of (repeat or comma-separate).")] = None,
    unlike: Annotated[list[str] | None, typer.Option(help="Item ids to steer away from.")] = None,
    like_text: Annotated[list[str] | None, typer.Option(help="A text describing what to find more of.")] = None,
    user: Annotated[str | None, typer.Option(help="A user learned by fit-interactions.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of recommendations.")] = 10,
    strategy: Annotated[str, typer.Option(help="average or best_score (see --help of the Python API).")] = "average",
    diversity: Annotated[float, typer.Option(help="0 = most relevant, up to 1 = most varied (MMR).")] = 0.0,
    where: Annotated[str | None, typer.Option(help="Metadata filter expression.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Item ids never to recommend.")] = None,
    blend: Annotated[
        str | None, typer.Option(help="With --user: a content collection over the same ids to blend in.")
    ] = None,
    blend_weight: Annotated[float, typer.Option(help="Weight of the blended content ranking (0..1).")] = 0.5,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recommend items like some (--like, --like-text), unlike others (--unlike), or for a --user."""
    positive: list[Any] = _split_ids(like) + [{"text": t} for t in like_text or []]
    negative = _split_ids(unlike)
    if user is None and not positive:
        raise InvalidInputError("give --like ID (or --like-text TEXT), or --user USER")
    with _open(name, home) as col:
        content = _open(blend, home) if blend else None
        try:
            hits = col.recommend(
                positive or None,
                negative or None,
                user=user,
                k=k,
                strategy=strategy,
                where=where,
                exclude=_split_ids(exclude),
                diversity=diversity,
                blend=content,
                blend_weight=blend_weight,
            )
        finally:
            if content is not None:
                content.close()
    _print_hits(hits, as_json)


@command("fit-interactions")
def fit_interactions(
    source: Annotated[Path, typer.Argument(help="CSV/TSV of interactions, one row per (user, item).")],
    into: Annotated[str, typer.Option(help="Collection to create with the learned item vectors.")],
    user: Annotated[str, typer.Option(help="User id column.")] = "user_id",
    item: Annotated[str, typer.Option(help="Item id column.")] = "item_id",
    rating: Annotated[str | None, typer.Option(help="Rating column (strength); absent: every row counts 1.")] = None,
    time: Annotated[str | None, typer.Option(help="Timestamp column (unix seconds), kept for recency.")] = None,
    factors: Annotated[int, typer.Option(help="Latent dimensions.")] = 32,
    replace: Annotated[bool, typer.Option(help="Replace the collection if it exists.")] = False,
    shards: Annotated[int | None, typer.Option(help="Split the collection over this many Ray shards.")] = None,
    home: HomeOption = None,
) -> None:
    """Learn item and user vectors from interactions (truncated SVD) and store them as a collection."""
    from latentsearch.workflows.interactions import fit_interactions as fit

    start = perf_counter()
    with progress_bar(f"storing item vectors in {into}") as update:
        col = fit(
            source,
            into=into,
            user=user,
            item=item,
            rating=rating,
            time=time,
            factors=factors,
            replace=replace,
            home=home,
            shards=shards,
            ray_address=_RAY_ADDRESS,
            progress=update,
        )
    with col:
        console.print(
            f"learned {col.dim} factors for {col.count():,} items and {col.user_count():,} users in "
            f"{perf_counter() - start:.1f}s; try: latentsearch recommend {into} --user USER"
        )


# --- outliers ------------------------------------------------------------------------------------

MethodOption = Annotated[
    str,
    typer.Option(
        help="knn (k-th neighbour distance), lof, iforest, ensemble, or reconstruction (ae:PATH collections)."
    ),
]
KOption = Annotated[int, typer.Option("-k", "--k", help="Neighbours for knn and lof.")]
ContaminationOption = Annotated[float | None, typer.Option(help="Share of the collection to flag [default: 0.01].")]
FprOption = Annotated[
    float | None, typer.Option(help="Instead: flag at this false-alarm rate (conformal p-value <= fpr).")
]


def _print_outliers(results: list[Any], as_json: bool, *, label: str = "id") -> None:
    if as_json:
        _print_json([r.to_dict() for r in results])
        return
    if not results:
        console.print("nothing flagged")
        return
    table = Table(label, "score", "percentile", "p-value", "flagged", "nearest normal items", "text")
    for i, r in enumerate(results, 1):
        near = ", ".join(f"{n['id']} ({n['distance']:.3g})" for n in r.neighbors[:3])
        table.add_row(
            _escape(str(r.id) if r.id is not None else f"#{i}"),
            f"{r.score:.4g}",
            f"{r.percentile:.1f}",
            f"{r.p_value:.3g}",
            "yes" if r.flagged else "no",
            _escape(near),
            _escape(_snippet(r.text, 50)),
        )
    console.print(table)


@command()
def outliers(
    name: str,
    method: MethodOption = "knn",
    k: KOption = 10,
    contamination: ContaminationOption = None,
    fpr: FprOption = None,
    top: Annotated[int, typer.Option(help="Show at most this many, most anomalous first.")] = 20,
    write: Annotated[
        bool, typer.Option("--write", help="Store outlier_score and outlier in every item's metadata.")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Flag the items that sit far from their neighbours, with scores and their nearest normal items."""
    with _open(name, home) as col, progress_bar(f"scoring {name}") as update:
        results = col.outliers(method, k=k, contamination=contamination, fpr=fpr, top=top, write=write, progress=update)
    _print_outliers(results, as_json)
    if write and not as_json:
        console.print(f"wrote outlier_score and outlier to the metadata of every item in {name}")


@command()
def check(
    name: str,
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts (or, for image collections, image files) to check.")
    ] = None,
    vectors: Annotated[Path | None, typer.Option(help="A .npy file of vectors to check instead.")] = None,
    method: MethodOption = "knn",
    k: KOption = 10,
    contamination: ContaminationOption = None,
    fpr: FprOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check whether new texts (or vectors) would be outliers in a collection, without adding them."""
    if bool(texts) == (vectors is not None):
        raise InvalidInputError("give texts to check, or --vectors FILE.npy")
    inputs: Any = _load_npy(vectors, "vectors") if vectors is not None else texts
    with _open(name, home) as col, _model_loading(col, vectors is None):
        if texts and col.manifest.get("modality") == "image":
            inputs = [Path(t) for t in texts]  # an image collection checks image files
        results = col.check(inputs, method=method, k=k, contamination=contamination, fpr=fpr)
    _print_outliers(results, as_json, label="input")


# --- the latent space ------------------------------------------------------------------------------


@command("map")
def map_(
    name: str,
    output: Annotated[Path, typer.Option("--out", "-o", help="map.html (interactive, offline) or map.png.")],
    method: Annotated[str, typer.Option(help="pca, tsne or umap.")] = "umap",
    dim: Annotated[int, typer.Option(help="2 or 3 (3-D in HTML; the PNG shows the first two axes).")] = 2,
    color_by: Annotated[
        str | None, typer.Option(help="Metadata field to colour by, e.g. a label, cluster or outlier_score.")
    ] = None,
    where: Annotated[str | None, typer.Option(help="Only items matching this filter.")] = None,
    sample: Annotated[int | None, typer.Option(help="At most this many items (t-SNE: 10,000, UMAP: 50,000).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and the projection.")] = 0,
    path: Annotated[str | None, typer.Option(help="Draw the interpolation path between two ids: A,B.")] = None,
    steps: Annotated[int, typer.Option(help="Steps of the path.")] = 8,
    home: HomeOption = None,
) -> None:
    """Draw the latent space as a 2-D/3-D map (PCA, t-SNE or UMAP), coloured by a field."""
    from latentsearch.analysis.plots import write_map

    with _open(name, home) as col:
        route = None
        if path is not None:
            ends = _split_ids([path])
            if len(ends) != 2:
                raise InvalidInputError(f"--path takes two ids separated by a comma, got {path!r}")
            route = col.interpolate(ends[0], ends[1], steps=steps, where=where)
        if output.suffix.lower() not in (".html", ".htm", ".png"):
            raise InvalidInputError(f"cannot write a map to {output}: use a .html or .png file name")
        with err.status(f"projecting {name} with {method}…") as status:
            projection = col.project(
                method, dim=dim, where=where, sample=sample, seed=seed, stage=lambda m: status.update(m + "…")
            )
            status.update("drawing…")
            written = write_map(col, projection, output, color_by=color_by, path=route)
    sampled = f" (sampled from {projection.sampled_from:,})" if projection.sampled_from > len(projection.ids) else ""
    console.print(
        f"wrote {written}: {len(projection.ids):,} items{sampled}, {method} trustworthiness "
        f"{projection.trustworthiness:.3f}"
    )


@command()
def clusters(
    name: str,
    n: Annotated[str, typer.Option("-n", help="Number of clusters (k-means), or 'auto' (HDBSCAN).")] = "8",
    where: Annotated[str | None, typer.Option(help="Only items matching this filter.")] = None,
    seed: Annotated[int, typer.Option(help="k-means seed.")] = 0,
    write: Annotated[bool, typer.Option(help="Store cluster and cluster_label in the metadata.")] = True,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cluster the items and label each cluster with its most distinctive words."""
    count: int | str = n
    if n != "auto":
        try:
            count = int(n)
        except ValueError:
            raise InvalidInputError(f"-n takes a number of clusters or 'auto', got {n!r}") from None
    with _open(name, home) as col:
        found = col.clusters(count, where=where, seed=seed, write=write)
    if as_json:
        _print_json([c.to_dict() for c in found])
        return
    table = Table("cluster", "size", "label", "examples")
    for c in found:
        table.add_row(
            str(c.cluster),
            str(c.size),
            _escape(c.label),
            _escape(" | ".join(_snippet(e["text"] or e["id"], 40) for e in c.examples)),
        )
    console.print(table)


@command()
def interpolate(
    name: str,
    start: Annotated[str, typer.Argument(help="Item id to start from.")],
    end: Annotated[str, typer.Argument(help="Item id to end at.")],
    steps: Annotated[int, typer.Option(help="Number of points on the path (ends included).")] = 8,
    where: Annotated[str | None, typer.Option(help="Only items matching this filter.")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Walk the latent space from one item to another and list the nearest item at each step."""
    with _open(name, home) as col:
        path = col.interpolate(start, end, steps=steps, where=where)
    if as_json:
        _print_json([s.to_dict() for s in path])
        return
    table = Table("t", "nearest item", "score", "text")
    for step in path:
        table.add_row(f"{step.t:.2f}", _escape(step.id), f"{step.score:.3f}", _escape(_snippet(step.text, 70)))
    console.print(table)


# --- images ----------------------------------------------------------------------------------------


@command()
def align(
    name: Annotated[str, typer.Argument(help="An image collection (e.g. --encoder efficientnet-lite0).")],
    out: Annotated[Path, typer.Option(help="Folder to save the learned projection in.")],
    into: Annotated[str, typer.Option(help="New collection of the images in the text space (text queries work).")],
    caption_field: Annotated[str, typer.Option(help="Metadata field holding each image's caption.")] = "caption",
    text_encoder: Annotated[str, typer.Option(help="Text encoder whose space the images are mapped into.")] = "minilm",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    home: HomeOption = None,
) -> None:
    """Learn a projection from image vectors into a text encoder's space from captioned images, so
    text queries search images without a CLIP model."""
    from latentsearch.workflows.align import align_collection

    with _open(name, home) as col, progress_bar("training the alignment (epochs)") as update:
        aligned, losses = align_collection(
            col,
            caption_field=caption_field,
            out=out,
            into=into,
            text_encoder=text_encoder,
            epochs=epochs,
            home=home,
            progress=lambda epoch, total, loss: update(epoch, total),
        )
    with aligned:
        console.print(
            f"aligned {aligned.count():,} images of {name} into {into} (loss {losses[0]:.3f} -> {losses[-1]:.3f}); "
            f'try: latentsearch search {into} "a caption"'
        )


@command("train-autoencoder")
def train_autoencoder(
    images: Annotated[Path, typer.Argument(help="Folder of images to learn from (recursive).")],
    out: Annotated[Path, typer.Option(help="Folder to save the model in (model.safetensors + config.json).")],
    latent_dim: Annotated[int, typer.Option(help="Size of the latent vectors.")] = 16,
    variational: Annotated[bool, typer.Option("--variational", help="Train a VAE (can sample new images).")] = False,
    epochs: Annotated[int, typer.Option(help="Passes over the images.")] = 20,
    image_size: Annotated[int, typer.Option(help="Images are resized to this square size (multiple of 4).")] = 32,
    rgb: Annotated[bool, typer.Option("--rgb", help="Learn colour images (default: greyscale).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train a convolutional autoencoder (or VAE) on your images; use it as encoder ae:OUT."""
    import numpy as np

    from latentsearch.encoders import autoencoder as ae

    config = ae.AutoencoderConfig(
        image_size=image_size, channels=3 if rgb else 1, latent_dim=latent_dim, variational=variational
    )
    array, kept, skipped = ae.load_images(images, config)
    if skipped:
        shown = ", ".join(f"{Path(f).name} ({why})" for f, why in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        err.print(f"[yellow]skipped {len(skipped)} files that are not readable images:[/] {shown}{more}")
    with progress_bar(f"training on {len(kept):,} images (epochs)") as update:
        model, losses = ae.train_autoencoder(
            array, config, epochs=epochs, seed=seed, progress=lambda epoch, total, loss: update(epoch, total)
        )
    folder = ae.save_autoencoder(model, config, out, losses=losses)
    ae.save_loss_curve(losses, folder / "loss.png")
    encoder = ae.AutoencoderEncoder(folder)
    # Two rows: some training images above their reconstructions.
    ae.save_grid(np.concatenate([array[:8], encoder.reconstruct(array[:8])]), folder / "reconstructions.png", cols=8)
    if variational:
        ae.save_grid(encoder.sample(32, seed=seed), folder / "samples.png")
    console.print(
        f"trained on {len(kept):,} images: loss {losses[0]:.4f} -> {losses[-1]:.4f}; saved {folder} "
        f"(loss.png, reconstructions.png{', samples.png' if variational else ''}); "
        f"use it: latentsearch create NAME --encoder ae:{folder}"
    )


@command("ae-interpolate")
def ae_interpolate(
    model: Annotated[Path, typer.Argument(help="An autoencoder folder (from train-autoencoder).")],
    start: Annotated[Path, typer.Argument(help="First image.")],
    end: Annotated[Path, typer.Argument(help="Last image.")],
    out: Annotated[Path, typer.Option(help="PNG strip to write.")] = Path("interpolation.png"),
    steps: Annotated[int, typer.Option(help="Images in the strip, ends included.")] = 8,
) -> None:
    """Decode evenly spaced points between two images' latents into a strip PNG."""
    from latentsearch.encoders import autoencoder as ae

    encoder = ae.AutoencoderEncoder(model)
    written = ae.save_strip(encoder.interpolate(start, end, steps=steps), out)
    console.print(f"wrote {written}: {steps} steps from {start.name} to {end.name}")


@command("ae-sample")
def ae_sample(
    model: Annotated[Path, typer.Argument(help="An autoencoder folder (best a --variational one).")],
    out: Annotated[Path, typer.Option(help="PNG grid to write.")] = Path("samples.png"),
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 32,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Decode random latents from the prior N(0, I) into a grid PNG of new images."""
    from latentsearch.encoders import autoencoder as ae

    written = ae.save_grid(ae.AutoencoderEncoder(model).sample(n, seed=seed), out)
    console.print(f"wrote {written}: {n} samples")


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

    report = run_doctor(name, home=home, repair=repair)
    if as_json:
        _print_json(report.to_dict())
    else:
        table = Table("check", "state", "detail")
        for f in report.findings:
            state = "[green]ok[/]" if f.ok else "[yellow]repaired[/]" if f.repaired else "[red]problem[/]"
            table.add_row(f.check, state, _escape(f.detail))
        console.print(table)
        verdict = "healthy" if report.healthy else "has problems: run with --repair" if not repair else "has problems"
        console.print(f"{name} {verdict}")
    if not report.healthy:
        raise typer.Exit(2)


# --- server ----------------------------------------------------------------------------------------


@command()
def serve(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    keys_file: Annotated[
        Path | None,
        typer.Option(help="File of 'KEY rw|ro' lines (also: $LATENTSEARCH_API_KEY, $LATENTSEARCH_READ_KEY)."),
    ] = None,
    max_body_mb: Annotated[int, typer.Option(help="Largest request body, in MiB.")] = 32,
    max_batch: Annotated[int, typer.Option(help="Most items in one request.")] = 10_000,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser calls from this origin (repeat).")
    ] = None,
) -> None:
    """Serve the collections over HTTP (API at /api, docs at /docs, a web page at /)."""
    try:
        from latentsearch.server import serve as run_server
    except ImportError:
        raise InvalidInputError('the server needs its extra: pip install "latentsearch[server]"') from None
    console.print(f"latentsearch on http://{host}:{port}/ (API docs at /docs)")
    run_server(
        home,
        host=host,
        port=port,
        keys_file=keys_file,
        max_body=max_body_mb * 1024 * 1024,
        max_batch=max_batch,
        cors_origins=cors_origin,
        ray_address=_RAY_ADDRESS,
    )


# --- demo ----------------------------------------------------------------------------------------


@command()
def demo(
    home: HomeOption = None,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 3,
) -> None:
    """Build a collection from Python's own documentation (no download) and run a few searches."""
    import latentsearch as ls
    from latentsearch.io.ingest import Records, ingest
    from latentsearch.workflows.demo import DEMO_QUERIES, demo_corpus

    items = demo_corpus()
    if "demo" in ls.list_collections(home=home):
        ls.drop("demo", home=home)
    console.print(f"[bold]latentsearch demo[/]: {len(items):,} help topics and docstrings of Python's standard library")
    with ls.create("demo", encoder="minilm", index="hnsw", home=home) as col:
        records = Records(
            ids=[i["id"] for i in items],
            texts=[i["text"] for i in items],
            metadata=[i["metadata"] for i in items],
            source="python docs",
        )
        start = perf_counter()
        with _model_loading(col), progress_bar("encoding with all-MiniLM-L6-v2") as update:
            ingest(col, records, progress=update)
        elapsed = perf_counter() - start
        console.print(
            f"indexed {len(items):,} items in {elapsed:.1f}s ({len(items) / elapsed:,.0f} items/s) at {col.path}\n"
        )
        for query, where in DEMO_QUERIES:
            hits = col.search(query, k=k, where=where)
            title = f"[bold]{query}[/]" + (f"  [dim]where {where}[/]" if where else "")
            table = Table("score", "id", "text", title=title, title_justify="left")
            for hit in hits:
                table.add_row(f"{hit.score:.3f}", hit.id, _escape(_snippet(hit.text, 80)))
            console.print(table)
    console.print(
        f'try it yourself: latentsearch search demo "your question" -k 5{" --home " + str(home) if home else ""}'
    )


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
