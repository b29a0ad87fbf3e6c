"""The demo: a collection built from Python's own documentation, which every Python install ships,
and a few searches on it (:func:`run_demo`, what ``latentsearch demo`` prints).

Help topics from ``pydoc_data`` and the docstrings of a set of standard-library modules and their
public functions and classes: real, varied text that needs no download.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

from latentsearch.errors import InvalidInputError

if TYPE_CHECKING:
    from latentsearch.collection import Collection
    from latentsearch.connection import Connection
    from latentsearch.records import Hit
    from latentsearch.search.tuning import TuningReport

DEMO_NAME = "demo"
DEMO_ENCODER = "minilm"
DEMO_INDEX = "hnsw"
ProgressFn = Callable[[int, int], None]

DEMO_MODULES = [
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "lzma",
    "math",
    "mimetypes",
    "multiprocessing",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "platform",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "select",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "tkinter",
    "tomllib",
    "traceback",
    "typing",
    "unicodedata",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "venv",
    "warnings",
    "weakref",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
]

DEMO_QUERIES = (
    ("run a shell command and capture its output", None),
    ("read and write JSON", None),
    ("securely generate a random token for a password reset", None),
    ("compress a file", 'kind = "function"'),
    ("how does the for loop work", 'source = "help-topic"'),
)


def _first_paragraphs(text: str, limit: int = 320) -> str:
    text = inspect.cleandoc(text)
    out = ""
    for para in re.split(r"\n\s*\n", text):
        if len(out) + len(para) > limit and out:
            break
        out += ("\n\n" if out else "") + para
    return out[:limit].strip()


def demo_corpus(max_items: int = 1500) -> list[dict]:
    """Items ``{id, text, metadata}`` from Python's help topics and standard-library docstrings."""
    items: list[dict] = []
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    for name in sorted(topics):
        text = _first_paragraphs(topics[name], 400)
        if len(text) > 40:
            items.append({"id": f"topic:{name}", "text": text, "metadata": {"source": "help-topic", "kind": "topic"}})
    for module_name in DEMO_MODULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(module_name)
            except Exception:  # noqa: BLE001 - optional modules (tkinter, ...) may be missing
                continue
        if module.__doc__:
            items.append(_docstring_item(module_name, module.__doc__, "module", module_name))
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else None
            doc = inspect.getdoc(obj) if kind else None
            if doc and len(doc) > 40:
                items.append(_docstring_item(f"{module_name}.{attr}", doc, kind, module_name))
    seen: set[str] = set()
    unique = [i for i in items if not (i["id"] in seen or seen.add(i["id"]))]
    return unique[:max_items]


def _docstring_item(item_id: str, doc: str, kind: str, module: str) -> dict:
    text = f"{item_id}: {_first_paragraphs(doc)}"
    return {"id": item_id, "text": text, "metadata": {"source": "docstring", "kind": kind, "module": module}}


@dataclass
class DemoSearch:
    """One of the demo's queries (with its metadata filter, if any) and the hits it found."""

    query: str
    where: str | None
    hits: list[Hit]


@dataclass
class DemoRun:
    """What the demo did: how many ``items`` it indexed, in how many seconds (``elapsed``), into the
    collection at ``path``, and each of :data:`DEMO_QUERIES` with its hits (``searches``)."""

    items: int
    elapsed: float
    path: Path
    searches: list[DemoSearch] = field(default_factory=list)
    tuning: TuningReport | None = None  # how auto search was tuned to the collection (None: too few texts)

    @property
    def rate(self) -> float:
        """Items indexed per second."""
        return self.items / max(self.elapsed, 1e-9)


def run_demo(
    db: Connection,
    *,
    k: int = 3,
    items: list[dict] | None = None,
    progress: ProgressFn | None = None,
    encoding: Callable[[Collection], AbstractContextManager[ProgressFn | None]] | None = None,
) -> DemoRun:
    """Build collection ``demo`` in ``db`` from Python's documentation (replacing one left by an
    earlier run), then run :data:`DEMO_QUERIES` on it, ``k`` hits each.

    Between the two it tunes the collection's fusion (:meth:`Collection.tune_search`), as a user
    would after adding their texts; a corpus too small to tune keeps the default.
    ``items`` defaults to :func:`demo_corpus`; ``progress(done, total)`` follows the encoding.
    ``encoding``, if given, is entered around the encoding with the new collection and yields the
    progress callback to use (the CLI shows its model-loading note and progress bar there).
    """
    from latentsearch.io.ingest import Records, ingest
    from latentsearch.search.request import SearchRequest

    items = demo_corpus() if items is None else items
    if db.exists(DEMO_NAME):
        db.drop(DEMO_NAME)
    with db.create(DEMO_NAME, encoder=DEMO_ENCODER, index=DEMO_INDEX) as col:
        records = Records(
            ids=[i["id"] for i in items],
            texts=[i["text"] for i in items],
            metadata=[i["metadata"] for i in items],
            source="python docs",
        )
        start = perf_counter()
        around = encoding(col) if encoding is not None else contextlib.nullcontext(progress)
        with around as update:
            ingest(col, records, progress=update)
        run = DemoRun(len(items), perf_counter() - start, Path(col.path))
        try:
            run.tuning = col.tune_search()
        except InvalidInputError:  # too few texts to measure on: the default fusion stays
            run.tuning = None
        for query, where in DEMO_QUERIES:
            run.searches.append(DemoSearch(query, where, col.search(SearchRequest(query=query, k=k, where=where))))
    return run
