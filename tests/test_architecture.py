"""The package's shape: layers that run one way (import-linter), and one Collection class whatever
the backend."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import latentsearch
from latentsearch.collection import Collection

PACKAGE = Path(latentsearch.__file__).parent
ROOT = PACKAGE.parent


def test_the_layers_run_one_way():
    # In a process of its own: import-linter configures logging, which would silence this one's loggers.
    # The contracts are in pyproject.toml; --no-cache leaves nothing in the tree.
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_nothing_above_the_backends_asks_which_backend_it_has():
    backends = {"LocalBackend", "ShardedBackend"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "backends":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
                names = (
                    {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} if len(node.args) > 1 else set()
                )
                names |= (
                    {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                    if len(node.args) > 1
                    else set()
                )
                if names & backends:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []
    # What a backend lacks is an error its method raises, never an attribute fallback.
    assert "__getattr__" not in vars(Collection)
    assert not any("__getattr__" in vars(base) for base in Collection.__mro__[1:-1])
