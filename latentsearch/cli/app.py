"""The typer app and what every command shares: the ``command()`` decorator (expected errors print
as one line), the global options (``--verbose``, ``--ray``), the ``--home``/``--json`` options, the
connection, progress bars, the model-loading note and the printing helpers.

Imports stay light at module level (no FAISS, no torch) so that ``--help`` is instant.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from latentsearch.errors import LatentSearchError

if TYPE_CHECKING:
    from latentsearch import Collection, Connection

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
LayersOption = Annotated[
    bool,
    typer.Option("--layers", help="Also print the metadata fields latentsearch derived (cluster, outlier_score, ...)."),
]


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

        wrapper.__doc__ = reflowed(fn.__doc__)
        return app.command(*args, **kwargs)(wrapper)

    return decorate


def reflowed(doc: str | None) -> str | None:
    """A docstring's paragraphs each on one line: rich help keeps a docstring's line breaks, which
    then land mid-line once the terminal wraps the text again."""
    if not doc:
        return doc
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in part.splitlines()) for part in paragraphs)


_RAY_ADDRESS: str | None = None  # set by the --ray option


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Ray cluster for sharded collections: 'auto', HOST:PORT or ray://HOST:PORT."),
    ] = None,
) -> None:
    from rich.logging import RichHandler

    global _RAY_ADDRESS
    _RAY_ADDRESS = ray
    if ctx.invoked_subcommand != "serve":
        # A one-shot command searches a few times, which gains less than moving a large index onto
        # huge pages costs (latentsearch.index.hugepages: after the open, in the background, where it
        # would compete with the command for the cores); a user's own setting stands.
        os.environ.setdefault("LATENTSEARCH_HUGE_PAGES", "0")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_time=False, show_path=False)],
    )


def connect(home: Path | None) -> Connection:
    """The connection to the data directory ``home`` and the cluster given by ``--ray``."""
    import latentsearch as ls

    return ls.connect(home, ray_address=_RAY_ADDRESS)


def open_collection(name: str, home: Path | None) -> Collection:
    """Open collection ``name`` of the data directory ``home``."""
    return connect(home).open(name)


@contextmanager
def progress_bar(description: str, *, unit: str = "items") -> Iterator[ProgressUpdate]:
    """A rich progress bar with ``unit``/s, as a ``progress(done, total)`` callback; its ``passages(done)``
    shows the passages encoded beside the count (adding long documents)."""
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
        update = ProgressUpdate(bar, task, unit)

        try:
            yield update
        except LatentSearchError:
            bar.live.transient = True  # the error's one line is all that stays on stderr
            raise


class ProgressUpdate:
    """The callback a :func:`progress_bar` yields: ``update(done, total)``, ``update.passages(done)``."""

    def __init__(self, bar: Any, task: Any, unit: str) -> None:
        self.bar, self.task, self.unit = bar, task, unit
        self.start = perf_counter()
        self.done, self.passages_done = 0, 0
        self.note = ""  # shown instead of the rate (a training loss)

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        self.bar.update(self.task, completed=done, total=total, rate=self.note or self._rate())

    def stage(self, description: str, note: str = "") -> None:
        """Show another stage of the work (its own counts), and ``note`` in place of the rate."""
        self.start, self.done, self.passages_done, self.note = perf_counter(), 0, 0, note
        self.bar.update(self.task, description=description, completed=0, total=None, rate=note)

    def passages(self, done: int) -> None:
        """Passages encoded so far (shown, with their rate, when they outnumber the documents)."""
        self.passages_done = done
        self.bar.update(self.task, rate=self._rate())

    def _rate(self) -> str:
        elapsed = max(perf_counter() - self.start, 1e-9)
        rate = f"{self.done / elapsed:,.0f} {self.unit}/s"
        if self.passages_done > self.done:
            rate += f", {self.passages_done:,} passages ({self.passages_done / elapsed:,.0f}/s)"
        return rate


LOADING_NOTE_AFTER = 0.5  # seconds: a model that loads faster than this is not worth a status line


@contextmanager
def model_loading(col: Collection, needed: bool = True) -> Iterator[None]:
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


def report_skipped(skipped: list[tuple[str, str]], what: str = "images") -> None:
    """Say on stderr which files were not readable ``what`` and why (the first five, and how many more)."""
    if not skipped:
        return
    shown = ", ".join(f"{escape(Path(f).name)} ({escape(why)})" for f, why in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    err.print(f"[yellow]skipped {len(skipped)} files that are not readable {what}:[/] {shown}{more}")


def split_ids(values: list[str] | None) -> list[str]:
    """Ids given as repeated options, each possibly comma-separated, in order."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def snippet(text: str | None, width: int = 90) -> str:
    """``text`` on one line, cut to ``width`` characters (with an ellipsis)."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def escape(text: str) -> str:
    """``text`` with rich markup escaped, to print as it is."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
