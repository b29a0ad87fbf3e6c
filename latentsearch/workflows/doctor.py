"""Check a collection's files and repair what can be repaired (``latentsearch doctor``).

Checks: SQLite's integrity check, the manifest, every vector blob's size and values, the full-text
index, the FAISS index against SQLite (checksum, the same ids), and leftover temp files. Repairs:
rebuild the full-text index and the FAISS index from SQLite, remove temp files, and, when the SQLite
file itself is damaged, salvage every readable item into a fresh file (the damaged one is kept beside
it as ``collection.sqlite.damaged-TIMESTAMP``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch import paths
from latentsearch.analysis.latent import CACHE_DIR
from latentsearch.errors import CollectionNotFoundError, FilterError
from latentsearch.fileio import folder_writable, fsync_replace, process_alive, read_only_error
from latentsearch.storage.filters import field_expression
from latentsearch.storage.store import DB_FILE, FIELD_INDEX_PREFIX, PASSAGE_BITS

SALVAGE_CHUNK = 256


@dataclass
class Finding:
    """One thing doctor looked at."""

    check: str
    ok: bool
    detail: str
    repaired: bool = False


@dataclass
class Report:
    """What doctor found (and did)."""

    collection: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when every check passed or was repaired."""
        return all(f.ok or f.repaired for f in self.findings)

    def add(self, check: str, ok: bool, detail: str, repaired: bool = False) -> None:
        self.findings.append(Finding(check, ok, detail, repaired))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"collection": self.collection, "healthy": self.healthy, "findings": [f.__dict__ for f in self.findings]}


SALVAGE_PREFIX = ".salvage-"  # + the repairing process's id


def doctor(name: str, *, home: str | os.PathLike[str] | None = None, repair: bool = False) -> Report:
    """Check collection ``name``; with ``repair``, fix what can be fixed. Returns a report."""
    folder = paths.collection_dir(name, home)
    db = folder / DB_FILE
    if not db.exists():
        raise CollectionNotFoundError(f"collection {name!r} not found in {folder.parent}")
    if repair and not folder_writable(folder):
        raise read_only_error(name, folder)
    report = Report(name)
    _check_temp_files(folder, report, repair)
    if not _check_sqlite(db, report, repair):
        return report  # nothing more can be checked on a file SQLite cannot read
    _check_contents(db, report, repair)
    _check_index(folder, report, repair)
    return report


def _check_temp_files(folder: Path, report: Report, repair: bool) -> None:
    leftovers = [p for p in folder.rglob(".*.tmp*") if p.is_file()]
    # A repair's work folder whose process is gone: a killed repair (its damaged original is kept).
    leftovers += [p for p in folder.glob(f"{SALVAGE_PREFIX}*") if p.is_dir() and _salvage_owner_gone(p)]
    if not leftovers:
        report.add("temp files", True, "none left over")
        return
    if repair:
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    report.add("temp files", False, f"{len(leftovers)} left over by interrupted writes", repaired=repair)


def _salvage_owner_gone(folder: Path) -> bool:
    pid = folder.name[len(SALVAGE_PREFIX) :]
    return not pid.isdigit() or int(pid) == os.getpid() or not process_alive(int(pid))


def _check_sqlite(db: Path, report: Report, repair: bool) -> bool:
    try:
        conn = _connect(db)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        problems = [r[0] for r in result if r[0] != "ok"]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if not problems:
        report.add("sqlite", True, "integrity check passed")
        return True
    detail = f"{db.name} is damaged: {'; '.join(problems[:3])}"
    if not repair:
        report.add("sqlite", False, detail + " (run with --repair to salvage readable items)")
        return False
    salvaged, lost = salvage(db)
    ok = salvaged is not None
    detail += (
        f"; salvaged {salvaged} items, {lost} unreadable" if ok else "; nothing could be salvaged: restore a backup"
    )
    report.add("sqlite", False, detail, repaired=ok)
    return ok


def salvage(db: Path) -> tuple[int | None, int]:
    """Copy every readable item of a damaged database into a fresh one that replaces it.

    Returns ``(items salvaged, chunks lost)``, or ``(None, 0)`` when not even the schema is readable.
    """
    from latentsearch.storage.store import Store

    try:
        old = sqlite3.connect(db)
        manifest = old.execute("SELECT key, value FROM manifest").fetchall()
        top = old.execute("SELECT max(rowid) FROM items").fetchone()[0] or 0
        indexed = old.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE ?", (FIELD_INDEX_PREFIX + "%",)
        ).fetchall()
    except sqlite3.DatabaseError:
        return None, 0
    fresh_dir = db.parent / f"{SALVAGE_PREFIX}{os.getpid()}"
    shutil.rmtree(fresh_dir, ignore_errors=True)
    fresh_dir.mkdir()
    store = Store(fresh_dir, create=True)
    columns = "rowid, id, kind, text, uri, metadata, vector, seq, thumbnail"
    saved, lost = 0, 0
    with store.write() as (conn, _):
        conn.executemany("INSERT OR REPLACE INTO manifest VALUES (?, ?)", [m for m in manifest if m[0] != "seq"])
        for start in range(0, top + 1, SALVAGE_CHUNK):
            try:
                rows = old.execute(
                    f"SELECT {columns} FROM items WHERE rowid >= ? AND rowid < ?", (start, start + SALVAGE_CHUNK)
                ).fetchall()
            except sqlite3.DatabaseError:
                lost += 1  # a damaged page: the items on it are gone
                continue
            conn.executemany(f"INSERT OR IGNORE INTO items ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            saved += len(rows)
            lost += _salvage_passages(old, conn, start, start + SALVAGE_CHUNK)
        # Keep AUTOINCREMENT above every rowid ever handed out, so FAISS ids are never reused.
        conn.execute("INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('items', ?)", (top,))
    # The change sequence must not fall below the items' own, or the index would replay them as new.
    newest = store.conn.execute("SELECT coalesce(max(seq), 0) FROM items").fetchone()[0]
    store.conn.execute("UPDATE manifest SET value = ? WHERE key = 'seq'", (str(max(newest, 1)),))
    for (name,) in indexed:  # the user's metadata field indexes come back too
        field_name = name[len(FIELD_INDEX_PREFIX) :]
        with contextlib.suppress(FilterError):  # not one of ours: an index made by hand under that prefix
            store.create_field_index(field_name, field_expression(field_name))
    store.close()
    old.close()
    # Every step below leaves a collection.sqlite in place, so a crash between two of them loses
    # nothing: the index files go first (they are rebuilt from SQLite on open), the damaged file is
    # kept under a second name (a hard link), its write-ahead log is set aside (never replayed into
    # the new file), and one rename swaps the salvaged file in.
    for stale in ("index.faiss", "index.checkpoint.json"):
        (db.parent / stale).unlink(missing_ok=True)
    shutil.rmtree(db.parent / CACHE_DIR, ignore_errors=True)  # cached maps may show lost items
    damaged = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    _keep_as(db, damaged)
    wal = Path(f"{db}-wal")
    if wal.exists():
        _keep_as(wal, Path(f"{damaged}-wal"))
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    fsync_replace(fresh_dir / DB_FILE, db)
    shutil.rmtree(fresh_dir, ignore_errors=True)
    return saved, lost


def _salvage_passages(old: sqlite3.Connection, conn: sqlite3.Connection, low: int, high: int) -> int:
    """Copy the passages of the items with rowids ``low`` to ``high - 1`` (none in a version-1 file:
    the upgrade on open makes them); returns 1 when they cannot be read (their items then keep only
    their own vector, as one passage each), else 0."""
    if not old.execute("SELECT 1 FROM sqlite_master WHERE name = 'passages'").fetchone():
        return 0
    try:
        rows = old.execute(
            "SELECT id, start_char, end_char, page, vector, seq FROM passages WHERE id >= ? AND id < ?",
            (low << PASSAGE_BITS, high << PASSAGE_BITS),
        ).fetchall()
    except sqlite3.DatabaseError:
        rows = []
        lost = 1
    else:
        lost = 0
    conn.executemany("INSERT OR IGNORE INTO passages VALUES (?, ?, ?, ?, ?, ?)", rows)
    # Items whose passages were lost (or never copied) get one passage each: their own vector.
    conn.execute(
        f"INSERT OR IGNORE INTO passages SELECT rowid << {PASSAGE_BITS}, 0, coalesce(length(text), 0), NULL, NULL, "
        f"seq FROM items WHERE rowid >= ? AND rowid < ? AND NOT EXISTS (SELECT 1 FROM passages WHERE id BETWEEN "
        f"items.rowid << {PASSAGE_BITS} AND (items.rowid << {PASSAGE_BITS}) + {(1 << PASSAGE_BITS) - 1})",
        (low, high),
    )
    return lost


def _keep_as(path: Path, name: Path) -> None:
    """A second name for ``path`` (a hard link; a copy where links are not possible)."""
    name.unlink(missing_ok=True)  # a leftover of an earlier attempt in the same second
    try:
        os.link(path, name)
    except OSError:
        shutil.copy2(path, name)


def _connect(db: Path) -> sqlite3.Connection:
    """A connection to check ``db`` through: read-only (as the collection opens it) when its folder
    cannot be written, so a read-only mount is checked, not reported as damaged."""
    from latentsearch.storage.store import Store

    if folder_writable(db.parent):
        return sqlite3.connect(db)
    store = Store(db.parent)
    return store.conn


def _check_contents(db: Path, report: Report, repair: bool) -> None:
    conn = _connect(db)
    try:
        manifest = dict(conn.execute("SELECT key, value FROM manifest").fetchall())
        dim = int(manifest.get("dim", "0"))
        bad = []
        has_passages = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'passages'").fetchone()
        own = "SELECT id >> 16, vector FROM passages WHERE vector IS NOT NULL" if has_passages else None
        for sql in filter(None, ("SELECT rowid, vector FROM items", own)):
            for rowid, blob in conn.execute(sql):
                vector = np.frombuffer(blob, dtype=np.float32) if len(blob) % 4 == 0 else None
                if vector is None or len(vector) != dim or not np.isfinite(vector).all():
                    bad.append(rowid)
        bad = sorted(set(bad))
        report.add("vectors", not bad, f"{len(bad)} items with a damaged vector" if bad else f"all {dim}-d and finite")
        try:
            # rank = 1: also compare the index with the passages it is built from (external content);
            # a collection not yet upgraded to passages (format 1) still has one row per item.
            fts = "passages_fts" if has_passages else "items_fts"
            conn.execute(f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)")
            report.add("full-text index", True, "consistent with the items")
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc):  # SQLite runs the check as a write statement
                report.add("full-text index", True, "not checked: the collection is read-only")
                return
            if repair:
                conn.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")
                conn.commit()
            report.add("full-text index", False, f"inconsistent ({exc})", repaired=repair)
    finally:
        conn.close()


def _check_index(folder: Path, report: Report, repair: bool) -> None:
    from latentsearch.backends.local import LocalBackend

    backend = LocalBackend(folder)
    try:
        # Read the checkpoint as opening would, but without its automatic rebuild, so that a damaged
        # or foreign index is reported (and rebuilt only with --repair).
        probe = backend.new_index()
        reason = probe._load_checkpoint(backend.store)
        if reason is not None and backend.store.read_only:  # nothing to repair: a cache it cannot write
            report.add("faiss index", True, f"not usable ({reason}): rebuilt in memory on each open (read-only)")
            probe = backend.index
        elif reason is not None:
            report.add("faiss index", False, f"cannot be used: {reason} (rebuilt from SQLite)", repaired=repair)
            if not repair:
                return
            backend.compact()
            probe = backend.index
        else:
            report.add("faiss index", True, f"checksum and identity match ({probe.factory}, change {probe.seq})")
            probe.catch_up(backend.store)
        # Contents, for every index kind (IVF ids live in its inverted lists): exactly the live rowids.
        live = np.sort(backend.store.passage_ids_matching("1", []))
        served = np.sort(probe.live_rowids())
        consistent = np.array_equal(live, served)
        detail = f"{len(served)} vectors for {len(live)} passages of {backend.store.count()} items"
        if not consistent and repair:
            backend.compact()
        report.add("index matches SQLite", consistent, detail, repaired=not consistent and repair)
        if repair and backend._index is None and probe.dirty:
            backend._index = probe  # caught up: checkpoint it below
        if repair:
            backend.save()
    finally:
        backend.close()
