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

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from latentsearch.errors import ConflictError, CorruptCollectionError, InvalidInputError, LatentSearchError
from latentsearch.fileio import disk_full_error, exclusive_lock, fsync_path, is_disk_full

DATABASE_SUFFIX = ".sqlite"
LEFT_OUT_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".tmp", ".partial")

BackupProgress = Callable[[str], None]


def backup_folder(
    source: Path,
    dest: Path,
    *,
    on_file: BackupProgress | None = None,
    lock_name: str | None = None,
    verify: Callable[[Path], None] | None = None,
) -> list[str]:
    """Copy the collection folder ``source`` into ``dest`` (which must not exist), written to a
    temporary sibling folder, checked by ``verify(folder)`` there and renamed into place. Returns the
    files copied, relative to ``source``. In a folder holding ``lock_name`` (the index's lock), the
    other files are copied under that lock, so an index and its checkpoint are copied as one pair.
    ``on_file(relative path)`` is called after each file (the databases last)."""
    source, dest = Path(source), Path(dest)
    if dest.exists():
        raise ConflictError(f"{dest} exists: back up into a new folder (or remove it first)")
    if not dest.parent.is_dir():
        raise InvalidInputError(f"cannot back up into {dest}: the folder {dest.parent} does not exist")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    copied: list[str] = []
    try:
        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(LEFT_OUT_SUFFIXES))
        by_folder: dict[Path, list[Path]] = {}
        for path in files:
            if path.suffix != DATABASE_SUFFIX:
                by_folder.setdefault(path.parent, []).append(path)
        for folder, plain in by_folder.items():
            lock = folder / lock_name if lock_name and (folder / lock_name).exists() else None
            with exclusive_lock(lock) if lock is not None else contextlib.nullcontext():
                for path in plain:
                    _copy(path, source, partial, copied, on_file)
        for path in (p for p in files if p.suffix == DATABASE_SUFFIX):
            _copy(path, source, partial, copied, on_file)
        if verify is not None:
            verify(partial)
        os.replace(partial, dest)
        fsync_path(dest.parent)
    except LatentSearchError:
        raise
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc):
            raise disk_full_error(f"the backup {dest}") from None
        raise InvalidInputError(f"cannot back up {source.name} into {dest}: {exc}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return copied


def _copy(path: Path, source: Path, partial: Path, copied: list[str], on_file: BackupProgress | None) -> None:
    relative = path.relative_to(source)
    target = partial / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == DATABASE_SUFFIX:
        backup_database(path, target)
    elif path.exists():  # (a cache file removed since the listing is not missed)
        shutil.copy2(path, target)
    copied.append(str(relative))
    if on_file:
        on_file(str(relative))


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
                raise CorruptCollectionError(
                    f"the backup of {path} does not check out ({problem}): run latentsearch doctor on the collection"
                )
        finally:
            copy.close()
    finally:
        source.close()
