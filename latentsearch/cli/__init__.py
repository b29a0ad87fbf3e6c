"""The ``latentsearch`` command line: parse, call the library, print. No logic of its own.

The commands are grouped by concern, each module registering its own on the one typer ``app``
(:mod:`latentsearch.cli.app`, which also holds what they share):

- :mod:`~latentsearch.cli.collections`: create, list, info, drop, count, index-field, compact, doctor,
  backup, restore
- :mod:`~latentsearch.cli.items`: add, get, delete, update-metadata, export
- :mod:`~latentsearch.cli.search`: search, recommend
- :mod:`~latentsearch.cli.analysis`: fit-interactions, outliers, check, map, clusters, interpolate
- :mod:`~latentsearch.cli.models`: align, train-autoencoder, ae-interpolate, ae-sample
- :mod:`~latentsearch.cli.serve`: serve, demo

Imports stay light at module level (no FAISS, no torch) so that ``--help`` is instant: the commands
import the library inside their functions.
"""

from __future__ import annotations

import importlib
import os

from latentsearch.cli.app import app

# Importing a command module registers its commands; this order is their order in ``--help``.
COMMAND_MODULES = ("collections", "items", "search", "analysis", "models", "serve")
for _module in COMMAND_MODULES:
    importlib.import_module(f"latentsearch.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
