"""The demo corpus: Python's own documentation, which every Python install ships.

Help topics from ``pydoc_data`` and the docstrings of a set of standard-library modules and their
public functions and classes: real, varied text that needs no download.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings

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
