"""SQLite store: the source of truth of a collection.

One file, ``collection.sqlite``, in WAL mode with ``synchronous=FULL`` so that a write that returned
is durable. It holds the manifest, the items (string id, kind, text or URI, metadata JSON, float32
vector blob), their FTS5 rows (kept in step by triggers, inside the same transaction) and a
monotonically increasing change sequence. Every write batch is one transaction that bumps the
sequence; the FAISS index records the sequence it contains and catches up from here.

Rowids come from ``AUTOINCREMENT`` so they are never reused: they double as FAISS ids. An upsert
deletes the old row and inserts a new one, so the index only ever sees adds and deletes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import ConflictError, CorruptCollectionError, ItemNotFoundError, LockTimeoutError
from latentsearch.fileio import disk_full_error, folder_writable, is_disk_full, nearly_full, read_only_error

FORMAT_VERSION = 1
DB_FILE = "collection.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    text TEXT,
    uri TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    vector BLOB NOT NULL,
    seq INTEGER NOT NULL,
    thumbnail BLOB
);
CREATE INDEX IF NOT EXISTS items_seq ON items(seq);
CREATE TABLE IF NOT EXISTS deletions (rowid INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deletions_seq ON deletions(seq);
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(
    text, content='items', content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS items_fts_insert AFTER INSERT ON items BEGIN
    INSERT INTO items_fts(rowid, text) VALUES (new.rowid, coalesce(new.text, ''));
END;
CREATE TRIGGER IF NOT EXISTS items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts(items_fts, rowid, text) VALUES ('delete', old.rowid, coalesce(old.text, ''));
END;
"""

ITEM_COLUMNS = "rowid, id, kind, text, uri, metadata"
PAGE_CACHE_KIB = 256 * 1024  # per connection; allocated only as pages are read
FIELD_INDEX_PREFIX = "field:"  # SQLite index names of metadata field indexes
_MAX_SEQ = 2**62


class Store:
    """Transactional access to one collection's SQLite file."""

    def __init__(self, folder: Path, *, create: bool = False, timeout: float = 30.0) -> None:
        self.path = Path(folder) / DB_FILE
        self.timeout = timeout
        if not create and not self.path.exists():
            raise CorruptCollectionError(f"{self.path} is missing: the collection folder is incomplete")
        # A folder that may be read but not written (a read-only mount, another user's files) is
        # opened read-only: every read works, every write is refused with one line, nothing is
        # called damaged. SQLite needs to write its -shm file even to read a WAL database; where
        # that is impossible and none exists, nobody is writing, so the file is opened as immutable.
        self.read_only = not create and not folder_writable(self.path.parent)
        # One connection per Store, shared by threads under a lock (the server's readers included).
        self._lock = threading.RLock()
        try:
            self.conn = self._connect(timeout)
            if not self.read_only:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
            # SQLite's default 2 MiB page cache makes every search re-read its hits' pages through the OS;
            # a larger cache (filled only as pages are read) cut hit reads by a third on a 190 MB file.
            # Not mmap: a file truncated under a mapping kills the process (SIGBUS) instead of raising.
            self.conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            if create:
                self.conn.executescript(_SCHEMA)
            else:
                self.conn.execute("SELECT count(*) FROM manifest").fetchone()
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "conn"):  # not left open (it would keep a deleted file, a mount, busy)
                self.conn.close()
            raise self._database_error(exc) from None

    def _connect(self, timeout: float) -> sqlite3.Connection:
        def connect(target: str | Path, uri: bool = False) -> sqlite3.Connection:
            return sqlite3.connect(target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=uri)

        if not self.read_only:
            return connect(self.path)
        base = f"{self.path.resolve().as_uri()}?mode=ro"
        conn = connect(base, uri=True)
        try:
            conn.execute("SELECT count(*) FROM manifest").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
            return connect(base + "&immutable=1", uri=True)

    def _database_error(self, exc: sqlite3.Error) -> Exception:
        message = str(exc)
        name = self.path.parent.name
        if is_disk_full(exc) or (
            ("disk I/O error" in message or "unable to open" in message) and nearly_full(self.path.parent)
        ):
            return disk_full_error(name)
        if "readonly" in message or "read-only" in message:
            return read_only_error(name, self.path.parent)
        if "locked" in message or "busy" in message:
            return LockTimeoutError(
                f"{self.path} is locked by another writer (waited {self.timeout:g}s): retry later or raise the timeout"
            )
        return CorruptCollectionError(
            f"{self.path} cannot be read ({message}): the SQLite file is damaged; run "
            f"`latentsearch doctor {self.path.parent.name} --repair` to salvage what is readable, or restore a backup"
        )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self.conn.close()

    # --- transactions ----------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self.conn
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None

    def check_writable(self) -> None:
        """Raise the one-line read-only error when this store was opened read-only."""
        if self.read_only:
            raise read_only_error(self.path.parent.name, self.path.parent)

    @contextmanager
    def write(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """Run one write transaction; yields the connection and the batch's new change sequence."""
        self.check_writable()
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._database_error(exc) from None
            try:
                seq = self._seq(self.conn) + 1
                yield self.conn, seq
                self.conn.execute("INSERT OR REPLACE INTO manifest VALUES ('seq', ?)", (str(seq),))
                self.conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite rolls back by itself on some errors (a full disk): rolling back again would
                # replace the real cause with "cannot rollback - no transaction is active".
                if self.conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self._database_error(exc) from None
                raise

    @staticmethod
    def _seq(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM manifest WHERE key = 'seq'").fetchone()
        return int(row[0]) if row else 0

    # --- manifest --------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        """Return the manifest as a dict (``seq`` excluded)."""
        with self._read() as conn:
            rows = conn.execute("SELECT key, value FROM manifest WHERE key != 'seq'").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def write_manifest(self, values: dict[str, Any]) -> None:
        """Set manifest entries in one transaction."""
        with self.write() as (conn, _):
            conn.executemany(
                "INSERT OR REPLACE INTO manifest VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    @property
    def seq(self) -> int:
        """The change sequence of the last committed write (read before every search: kept lean)."""
        with self._lock:
            try:
                return self._seq(self.conn)
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None

    # --- writes ----------------------------------------------------------------------------------

    def insert(
        self,
        ids: Sequence[str],
        kinds: Sequence[str],
        texts: Sequence[str | None],
        uris: Sequence[str | None],
        metadata: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        *,
        upsert: bool = False,
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Insert (or replace, with ``upsert``) a batch in one transaction.

        Returns ``(seq, rowids, replaced_rowids)``: the batch's change sequence, the new rowids in
        input order, and the rowids of rows the upsert replaced.
        """
        blobs = [np.ascontiguousarray(v, dtype=np.float32).tobytes() for v in vectors]
        with self.write() as (conn, seq):
            existing = self._rowids_of(conn, ids)
            if existing and not upsert:
                first = next(iter(existing))
                raise ConflictError(
                    f"id {first!r} already exists in the collection ({len(existing)} of the ids do): "
                    "use upsert to replace items, or pick new ids"
                )
            replaced = np.fromiter(existing.values(), dtype=np.int64, count=len(existing))
            if len(replaced):
                conn.executemany("DELETE FROM items WHERE rowid = ?", [(int(r),) for r in replaced])
                conn.executemany("INSERT OR REPLACE INTO deletions VALUES (?, ?)", [(int(r), seq) for r in replaced])
            conn.executemany(
                "INSERT INTO items (id, kind, text, uri, metadata, vector, seq, thumbnail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (i, k, t, u, json.dumps(m, ensure_ascii=False), b, seq, th)
                    for i, k, t, u, m, b, th in zip(
                        ids, kinds, texts, uris, metadata, blobs, thumbnails or [None] * len(ids)
                    )
                ],
            )
            by_id = dict(conn.execute("SELECT id, rowid FROM items WHERE seq = ?", (seq,)).fetchall())
        rowids = np.array([by_id[i] for i in ids], dtype=np.int64)
        return seq, rowids, replaced

    def delete(self, ids: Sequence[str]) -> tuple[int, np.ndarray]:
        """Delete items by id in one transaction; every id must exist. Returns ``(seq, rowids)``."""
        with self.write() as (conn, seq):
            found = self._rowids_of(conn, ids)
            missing = [i for i in ids if i not in found]
            if missing:
                raise ItemNotFoundError(
                    f"unknown id {missing[0]!r} ({len(missing)} of {len(ids)} ids not found): nothing was deleted"
                )
            rowids = np.fromiter(found.values(), dtype=np.int64, count=len(found))
            conn.executemany("DELETE FROM items WHERE rowid = ?", [(int(r),) for r in rowids])
            conn.executemany("INSERT OR REPLACE INTO deletions VALUES (?, ?)", [(int(r), seq) for r in rowids])
        return seq, rowids

    def update_metadata(self, updates: dict[int, dict[str, Any]]) -> None:
        """Merge metadata fields into items by rowid, in one transaction.

        Metadata does not reach the FAISS index, so this does not touch the items' change sequence.
        """
        with self.write() as (conn, _):
            conn.executemany(
                "UPDATE items SET metadata = json_patch(metadata, ?) WHERE rowid = ?",
                [(json.dumps(fields), int(rowid)) for rowid, fields in updates.items()],
            )

    def put_users(self, users: Sequence[tuple[str, np.ndarray, list[Any]]], *, replace_all: bool = False) -> None:
        """Store user vectors and their interaction histories (``[[item_id, timestamp], ...]``)."""
        with self.write() as (conn, _):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, vector BLOB NOT NULL, history TEXT NOT NULL)"
            )
            if replace_all:
                conn.execute("DELETE FROM users")
            conn.executemany(
                "INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
                [(u, np.ascontiguousarray(v, dtype=np.float32).tobytes(), json.dumps(h)) for u, v, h in users],
            )

    def get_user(self, user: str) -> tuple[np.ndarray | None, list[Any]]:
        """A user's vector and history, or ``(None, [])`` when unknown."""
        with self._read() as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone():
                return None, []
            row = conn.execute("SELECT vector, history FROM users WHERE id = ?", (user,)).fetchone()
        if row is None:
            return None, []
        return np.frombuffer(row[0], dtype=np.float32), json.loads(row[1])

    def user_count(self) -> int:
        """Number of users with learned vectors."""
        with self._read() as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone():
                return 0
            return conn.execute("SELECT count(*) FROM users").fetchone()[0]

    # --- reads -----------------------------------------------------------------------------------

    @staticmethod
    def _rowids_of(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(ids), 900):  # stay under SQLite's bound-parameter limit
            chunk = list(ids[start : start + 900])
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT id, rowid FROM items WHERE id IN ({marks})", chunk).fetchall())
        return found

    def rowids_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Map the given ids to rowids; unknown ids are left out."""
        with self._read() as conn:
            return self._rowids_of(conn, ids)

    def count(self) -> int:
        """Number of items."""
        with self._read() as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]

    def rows_by_rowid(self, rowids: Sequence[int], *, with_vectors: bool = False) -> dict[int, dict[str, Any]]:
        """Return items keyed by rowid (missing rowids are left out)."""
        columns = ITEM_COLUMNS + (", vector" if with_vectors else "")
        out: dict[int, dict[str, Any]] = {}
        with self._read() as conn:
            for start in range(0, len(rowids), 900):
                chunk = [int(r) for r in rowids[start : start + 900]]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(f"SELECT {columns} FROM items WHERE rowid IN ({marks})", chunk):
                    out[row[0]] = _row_dict(row, with_vectors)
        return out

    def thumbnails(self, rowids: Sequence[int]) -> dict[int, bytes]:
        """JPEG thumbnails of image items by rowid (items without one are left out)."""
        out: dict[int, bytes] = {}
        with self._read() as conn:
            for start in range(0, len(rowids), 900):
                chunk = [int(r) for r in rowids[start : start + 900]]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT rowid, thumbnail FROM items WHERE rowid IN ({marks}) AND thumbnail IS NOT NULL"
                out.update(conn.execute(sql, chunk).fetchall())
        return out

    # --- field indexes: SQLite expression indexes on metadata fields ------------------------------

    def create_field_index(self, field: str, expression: str) -> bool:
        """Index ``expression`` (a metadata field's SQL) under the field's name; False if it existed."""
        sql = f'CREATE INDEX "{FIELD_INDEX_PREFIX}{field}" ON items({expression})'
        return self._change_field_index(field, sql, exists=False)

    def drop_field_index(self, field: str) -> bool:
        """Drop a field's index; False if there was none."""
        return self._change_field_index(field, f'DROP INDEX "{FIELD_INDEX_PREFIX}{field}"', exists=True)

    def _change_field_index(self, field: str, sql: str, *, exists: bool) -> bool:
        """Run ``sql`` when the field's index ``exists`` as required; False (and nothing done) otherwise."""
        self.check_writable()
        with self._lock:
            if (field in self.field_indexes()) != exists:
                return False
            try:
                self.conn.execute(sql)
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None
            return True

    def field_indexes(self) -> list[str]:
        """The metadata fields that have an index, sorted."""
        with self._read() as conn:
            sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE ?"
            names = conn.execute(sql, (FIELD_INDEX_PREFIX + "%",))
            return sorted(name[len(FIELD_INDEX_PREFIX) :] for (name,) in names)

    def matching_vectors(self, where_sql: str, params: Sequence[Any], dim: int) -> tuple[list[str], np.ndarray]:
        """Ids and float32 vectors of the items matching a compiled filter, in insertion order."""
        with self._read() as conn:
            sql = f"SELECT id, vector FROM items WHERE {where_sql} ORDER BY rowid"
            rows = conn.execute(sql, list(params)).fetchall()
        vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), dim)
        return [item_id for item_id, _ in rows], vectors.copy()

    def rowids_matching(self, where_sql: str, params: Sequence[Any]) -> np.ndarray:
        """Rowids of the items whose metadata matches a compiled filter."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT rowid FROM items WHERE {where_sql}", list(params)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def vectors(self, rowids: Sequence[int] | np.ndarray, dim: int) -> np.ndarray:
        """Float32 vectors of the given rowids, in the same order; raises on an unknown rowid."""
        position = {int(r): i for i, r in enumerate(rowids)}
        out = np.empty((len(position), dim), dtype=np.float32)
        seen = 0
        with self._read() as conn:
            keys = list(position)
            for start in range(0, len(keys), 900):
                chunk = keys[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for rowid, blob in conn.execute(f"SELECT rowid, vector FROM items WHERE rowid IN ({marks})", chunk):
                    out[position[rowid]] = np.frombuffer(blob, dtype=np.float32)
                    seen += 1
        if seen != len(position):
            raise ItemNotFoundError("some rows vanished while reading vectors: retry the call")
        return out

    def iter_vectors(
        self, dim: int, *, after_seq: int = 0, upto_seq: int | None = None, batch: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rowids, vectors)`` chunks of the items written after ``after_seq`` (and at or before
        ``upto_seq``: a reader that recorded the sequence first must not also take newer rows), by rowid."""
        last = -1
        upto = _MAX_SEQ if upto_seq is None else upto_seq
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    "SELECT rowid, vector FROM items WHERE seq > ? AND seq <= ? AND rowid > ? ORDER BY rowid LIMIT ?",
                    (after_seq, upto, last, batch),
                ).fetchall()
            if not rows:
                return
            rowids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield rowids, vectors
            last = rows[-1][0]

    def vectors_seq(self) -> int:
        """The change sequence of the last write that added or removed a vector (metadata updates do not
        count): what caches of the vectors alone are keyed on."""
        with self._read() as conn:
            sql = "SELECT max(coalesce((SELECT max(seq) FROM items), 0), coalesce((SELECT max(seq) FROM deletions), 0))"
            return int(conn.execute(sql).fetchone()[0])

    def rowids_digest_at(self, seq: int, max_rowid: int, prime: int) -> str:
        """:func:`latentsearch.index.faiss_index.rowids_digest` of the rowids that were live at change sequence
        ``seq``: those written at or before it and still here, plus those deleted since that existed
        then (rowids only grow, so they are the ones up to ``max_rowid``, the largest live rowid at
        ``seq``). One statement, so one snapshot, over the small ``items_seq`` index, not the rows."""
        sql = (
            "SELECT count(*), coalesce(sum(r), 0), coalesce(sum(r2), 0), coalesce(sum(r2 * r % ?1), 0) FROM "
            "(SELECT r, r * r % ?1 AS r2 FROM (SELECT rowid % ?1 AS r FROM items INDEXED BY items_seq WHERE seq <= ?2 "
            "UNION ALL SELECT rowid % ?1 FROM deletions WHERE seq > ?2 AND rowid <= ?3))"
        )
        with self._read() as conn:
            row = conn.execute(sql, (prime, seq, max_rowid)).fetchone()
        return ":".join(str(int(v)) for v in row)

    def ensure_collection_id(self) -> str:
        """The collection's id (a random UUID in the manifest), given one now if it predates ids. The
        id is set in one transaction that does not move the change sequence, so a crash leaves either
        no id (the next open makes one) or one that every later open reads."""
        with self._lock:
            try:
                row = self.conn.execute("SELECT value FROM manifest WHERE key = 'collection_id'").fetchone()
                if row is not None:
                    return str(json.loads(row[0]))
                if self.read_only:
                    return ""  # given one by the first writable open; the rowid digest still binds the index
                self.conn.execute(
                    "INSERT OR IGNORE INTO manifest VALUES ('collection_id', ?)", (json.dumps(uuid.uuid4().hex),)
                )
                row = self.conn.execute("SELECT value FROM manifest WHERE key = 'collection_id'").fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None
            return str(json.loads(row[0]))

    def count_after(self, seq: int, upto_seq: int | None = None) -> int:
        """Number of items written after change sequence ``seq`` (up to ``upto_seq``)."""
        upto = _MAX_SEQ if upto_seq is None else upto_seq
        with self._read() as conn:
            return conn.execute("SELECT count(*) FROM items WHERE seq > ? AND seq <= ?", (seq, upto)).fetchone()[0]

    def deleted_after(self, seq: int, upto_seq: int | None = None) -> np.ndarray:
        """Rowids deleted (or replaced) after change sequence ``seq`` (up to ``upto_seq``)."""
        upto = _MAX_SEQ if upto_seq is None else upto_seq
        with self._read() as conn:
            rows = conn.execute("SELECT rowid FROM deletions WHERE seq > ? AND seq <= ?", (seq, upto)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def lexical_search(
        self,
        match: str,
        k: int,
        where_sql: str = "1",
        params: Sequence[Any] = (),
        exclude: int | None = None,
    ) -> list[tuple[int, float]]:
        """BM25 top-``k`` ``(rowid, score)`` for an FTS5 MATCH expression, higher scores better.

        The metadata filter is applied in the same query, so it never shrinks the result list.
        """
        sql = (
            "SELECT items_fts.rowid, -bm25(items_fts) AS score FROM items_fts "
            "JOIN items ON items.rowid = items_fts.rowid "
            f"WHERE items_fts MATCH ? AND ({where_sql}) AND items.rowid != ? "
            "ORDER BY bm25(items_fts) LIMIT ?"
        )
        with self._read() as conn:
            rows = conn.execute(sql, [match, *params, -1 if exclude is None else exclude, k]).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    def snippets(self, match: str, rowids: Sequence[int], marks: tuple[str, str], tokens: int) -> dict[int, str]:
        """FTS5 snippets of the given rows around the terms of ``match`` (rows without a match are left out)."""
        if not rowids:
            return {}
        marks_sql = ",".join("?" * len(rowids))
        sql = (
            f"SELECT rowid, snippet(items_fts, 0, ?, ?, '…', ?) FROM items_fts "
            f"WHERE items_fts MATCH ? AND rowid IN ({marks_sql})"
        )
        with self._read() as conn:
            rows = conn.execute(sql, [marks[0], marks[1], tokens, match, *map(int, rowids)]).fetchall()
        return dict(rows)

    def iter_rows(self, *, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Yield every item (without vectors) in rowid order."""
        last = -1
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    f"SELECT {ITEM_COLUMNS} FROM items WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row_dict(row, False)
            last = rows[-1][0]


def _row_dict(row: tuple[Any, ...], with_vector: bool) -> dict[str, Any]:
    item = {
        "rowid": row[0],
        "id": row[1],
        "kind": row[2],
        "text": row[3],
        "uri": row[4],
        "metadata": {} if row[5] == "{}" else json.loads(row[5]),  # most items carry none: skip the parser
    }
    if with_vector:
        item["vector"] = np.frombuffer(row[6], dtype=np.float32)
    return item
