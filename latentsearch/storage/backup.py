"""Consistent copies of a collection's folder while writers run.

Every SQLite database in the folder (a collection's, each shard's, a sharded collection's lexical
store) is copied by SQLite's online backup API in one step: one read snapshot, which writers in WAL
mode do not wait for and which a write cannot tear. Every other file (the FAISS index and its
checkpoint, caches, uploaded images, a sharded collection's layout) is copied first, so an index is
never newer than the database beside it: on open, it catches up with the rows written after its
checkpoint (or is rebuilt, if it does not match). Write-ahead logs and lock files are not copied: a
backed-up database is whole in its own file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from latentsearch.errors import ConflictError, InvalidInputError
from latentsearch.fileio import fsync_path

DATABASE_SUFFIX = ".sqlite"
LEFT_OUT_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".tmp", ".partial")

BackupProgress = Callable[[str], None]


def backup_folder(source: Path, dest: Path, *, on_file: BackupProgress | None = None) -> list[str]:
    """Copy the collection folder ``source`` into ``dest`` (which must not exist), written to a
    temporary sibling folder and renamed into place when complete. Returns the files copied, relative
    to ``source``. ``on_file(relative path)`` is called after each file (the databases last)."""
    source, dest = Path(source), Path(dest)
    if dest.exists():
        raise ConflictError(f"{dest} exists: back up into a new folder (or remove it first)")
    if not dest.parent.is_dir():
        raise InvalidInputError(f"cannot back up into {dest}: the folder {dest.parent} does not exist")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(LEFT_OUT_SUFFIXES))
    databases = [p for p in files if p.suffix == DATABASE_SUFFIX]
    copied = []
    try:
        for path in [p for p in files if p.suffix != DATABASE_SUFFIX] + databases:
            relative = path.relative_to(source)
            target = partial / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == DATABASE_SUFFIX:
                backup_database(path, target)
            else:
                shutil.copy2(path, target)
            copied.append(str(relative))
            if on_file:
                on_file(str(relative))
        os.replace(partial, dest)
        fsync_path(dest.parent)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return copied


def backup_database(path: Path, target: Path) -> None:
    """One SQLite database copied by the online backup API, all pages in one step (one snapshot: a
    stepwise copy restarts whenever another connection writes, and a busy writer would starve it)."""
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=WAL")  # as the collection's own databases are
            problem = copy.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise InvalidInputError(f"the backup of {path} does not check out ({problem}): nothing was kept")
        finally:
            copy.close()
    finally:
        source.close()
