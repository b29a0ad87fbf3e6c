"""Commands that run something for a while: serve (the HTTP server) and demo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from latentsearch.cli.app import HomeOption, command, connect, console, escape, model_loading, progress_bar, snippet
from latentsearch.errors import InvalidInputError

if TYPE_CHECKING:
    from latentsearch import Collection


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
    db = connect(home)
    console.print(f"latentsearch on http://{host}:{port}/ (API docs at /docs)")
    run_server(
        db.home,
        host=host,
        port=port,
        keys_file=keys_file,
        max_body=max_body_mb * 1024 * 1024,
        max_batch=max_batch,
        cors_origins=cors_origin,
        ray_address=db.ray_address,
    )


@command()
def demo(
    home: HomeOption = None,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 3,
) -> None:
    """Build a collection from Python's own documentation (no download) and run a few searches."""
    from latentsearch.workflows.demo import demo_corpus, run_demo

    items = demo_corpus()
    console.print(f"[bold]latentsearch demo[/]: {len(items):,} help topics and docstrings of Python's standard library")

    @contextmanager
    def encoding(col: Collection) -> Iterator[Callable[[int, int], None]]:
        with model_loading(col), progress_bar("encoding with all-MiniLM-L6-v2") as update:
            yield update

    run = run_demo(connect(home), k=k, items=items, encoding=encoding)
    console.print(f"indexed {run.items:,} items in {run.elapsed:.1f}s ({run.rate:,.0f} items/s) at {run.path}")
    if run.tuning is not None:
        tuned = run.tuning.measured["pseudo"]
        console.print(
            f"tuned auto search in {run.tuning.seconds:.1f}s on {run.tuning.queries['pseudo']} pseudo-queries: "
            f"{run.tuning.chosen.describe()} (nDCG@10 {tuned['tuned']['ndcg@10']:.3f}; vector "
            f"{tuned['vector']['ndcg@10']:.3f}, lexical {tuned['lexical']['ndcg@10']:.3f})"
        )
    console.print()
    for search in run.searches:
        title = f"[bold]{search.query}[/]" + (f"  [dim]where {search.where}[/]" if search.where else "")
        table = Table("score", "id", "text", title=title, title_justify="left")
        for hit in search.hits:
            table.add_row(f"{hit.score:.4f}", hit.id, escape(snippet(hit.text, 80)))
        console.print(table)
    console.print(
        f'try it yourself: latentsearch search demo "your question" -k 5{" --home " + str(home) if home else ""}'
    )
