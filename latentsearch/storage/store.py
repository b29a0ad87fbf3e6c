"""SQLite store: the source of truth of a collection.

One file, ``collection.sqlite``, in WAL mode with ``synchronous=FULL`` so that a write that returned
is durable. It holds the manifest, the items (string id, kind, text or URI, metadata JSON, float32
vector blob), their FTS5 rows (kept in step by triggers, inside the same transaction) and a
monotonically increasing change sequence. Every write batch is one transaction that bumps the
sequence; the FAISS index records the sequence it contains and catches up from here.

Rowids come from ``AUTOINCREMENT`` so they are never reused. An upsert deletes the old row and
inserts a new one, so the index only ever sees adds and deletes.

An item is one document; what the FAISS index holds are its passages (format version 2): each item
has one or more rows in ``passages``, whose id ``(item rowid << 16) + ordinal`` is its FAISS id, so
the item of any FAISS hit is one shift away and an item's passages are one id range. A single
passage stores no vector of its own (NULL: it is the item's vector); a long text's passages store
theirs, and the item's vector is their normalised mean (the document vector). Deletions record
passage ids, the ids the index removes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from latentsearch.errors import ConflictError, CorruptCollectionError, ItemNotFoundError, LockTimeoutError
from latentsearch.fileio import disk_full_error, folder_writable, is_disk_full, nearly_full, read_only_error
from latentsearch.storage.fulltext import TOKENIZER

FORMAT_VERSION = 2  # 2: passages (version 1 collections are upgraded once, on open: migrate_to_passages)
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
@passages
CREATE TABLE IF NOT EXISTS deletions (rowid INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deletions_seq ON deletions(seq);
@triggers
"""
_PASSAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS @db.passages (
    id INTEGER PRIMARY KEY,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    page INTEGER,
    vector BLOB,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS @db.passages_seq ON passages(seq);
CREATE VIEW IF NOT EXISTS @db.passage_texts (id, text) AS
    SELECT passages.id, substr(items.text, passages.start_char + 1, passages.end_char - passages.start_char)
    FROM passages JOIN items ON items.rowid = passages.id >> 16 WHERE items.text IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS @db.passages_fts USING fts5(
    text, content='passage_texts', content_rowid='id', tokenize='@tokenizer'
);
"""
# The full-text rows follow the passages in the same transaction. A passage is deleted before its item
# (Store._drop_items), so its text can still be read to remove its terms.
_PASSAGES_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS passages_fts_insert AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts(rowid, text) SELECT id, text FROM passage_texts WHERE id = new.id;
END;
CREATE TRIGGER IF NOT EXISTS passages_fts_delete AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts(passages_fts, rowid, text)
    SELECT 'delete', old.id, substr(text, old.start_char + 1, old.end_char - old.start_char)
    FROM items WHERE rowid = old.id >> 16 AND text IS NOT NULL;
END;
"""
_SCHEMA = (
    _SCHEMA.replace("@passages", _PASSAGES_SCHEMA.replace("@db", "main"))
    .replace("@triggers", _PASSAGES_TRIGGERS)
    .replace("@tokenizer", TOKENIZER)
)
_PASSAGES_SCHEMA = _PASSAGES_SCHEMA.replace("@tokenizer", TOKENIZER)
PASSAGE_BITS = 16  # a passage id is (item rowid << 16) + its ordinal in the item
PASSAGE_SPAN = 1 << PASSAGE_BITS
# An item's passages and its vector in one read: a single passage's vector is the item's.
_PASSAGE_VECTOR = "coalesce(passages.vector, (SELECT vector FROM items WHERE rowid = passages.id >> 16))"

ITEM_COLUMNS = "items.rowid, items.id, items.kind, items.text, items.uri, items.metadata"
# Pages of 16 KiB hold five 784-d float vectors where 4 KiB pages hold one (a 3.2 KB row wastes a
# fifth of a 4 KiB page): less to write on ingest, fewer bytes on disk per vector.
PAGE_SIZE = 16384
PAGE_CACHE_KIB = 256 * 1024  # per connection; allocated only as pages are read
IDS_CACHE_ITEMS = 200_000  # items whose ids ids-only searches keep in memory: about 30 MB at most
# Hits' rows (ids, texts, URIs, metadata, passages) kept in memory once read, until the next write: at
# most this many rows and about this many bytes of their fields per open collection.
HIT_CACHE_ROWS = 200_000
HIT_CACHE_BYTES = 64 * 1024 * 1024
HIT_ROW_BYTES = 160  # a kept row's own cost beside its fields' characters (its tuple, its key)
# The fields a search shows by default (see records.DEFAULT_INCLUDE): the reads the hit cache serves.
_CACHED_FIELDS = frozenset(("text", "metadata"))
# The two copies of the WAL-index header at the start of the -shm file (https://sqlite.org/walformat.html):
# every commit, by any connection of any process, rewrites them before a reader can see it.
WAL_INDEX_HEADER_BYTES = 96
FIELD_INDEX_PREFIX = "field:"  # SQLite index names of metadata field indexes
_MAX_SEQ = 2**62
# Reading this many passage vectors or more, spread over at most SCAN_DENSITY times as many item rows,
# scans the range in id order instead of looking each id up (a lean index's open reads them all).
SCAN_MIN = 4096
SCAN_DENSITY = 4
PassageSpan = tuple[int, int, "int | None"]  # characters start:end of an item's text, and the page


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
        # Items' ids by rowid, for ids-only hits (see item_ids); None until the first such search.
        self._ids_by_rowid: dict[int, str] | None = None
        # Hits' rows by item rowid [False] and by passage id [True], valid at the change sequence
        # beside them (see hit_rows).
        self._hit_rows: dict[bool, dict[int, tuple[Any, ...]]] = {False: {}, True: {}}
        self._hit_rows_seq: int | None = None
        self._hit_rows_bytes = 0
        # Reads of hits that asked for a row SQLite does not hold: counted so that a search can tell
        # that its ranking met another thread's write in flight (see LocalBackend.nearest).
        self.misses = 0
        # The change sequence last read and the WAL-index header seen just before reading it (see seq).
        self._seen: tuple[bytes, int] | None = None
        self._shm: BinaryIO | None = None  # (a file object: closed with the Store even when not closed)
        self._wal = False  # the -shm file is trusted only once this connection is in WAL mode
        new_file = create and not self.path.exists()
        try:
            self.conn = self._connect(timeout)
            if new_file:  # (only an empty database takes a page size; WAL mode fixes it)
                self.conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            if not self.read_only:
                mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._wal = str(mode).lower() == "wal"
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
            if self._shm is not None:
                self._shm.close()
                self._shm, self._seen = None, None

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
        """Set manifest entries in one transaction (``None`` removes an entry)."""
        with self.write() as (conn, _):
            self._set_manifest(conn, values)

    @staticmethod
    def _set_manifest(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO manifest VALUES (?, ?)",
            [(key, json.dumps(value)) for key, value in values.items() if value is not None],
        )
        conn.executemany("DELETE FROM manifest WHERE key = ?", [(k,) for k, v in values.items() if v is None])

    @property
    def seq(self) -> int:
        """The change sequence of the last committed write, by this process or another (read before
        every search: kept lean). A commit rewrites the WAL-index header in the -shm file before any
        reader sees it, so while the header reads as it did before the last query, the sequence that
        query returned still holds: a pread of 96 bytes instead of a SQLite statement, whose cost
        (and the caches it sweeps) was a tenth of a small HNSW search."""
        seen, shm = self._seen, self._shm
        if seen is not None and shm is not None:  # the hot path, with no lock: (header, sequence) is one tuple
            try:
                if os.pread(shm.fileno(), WAL_INDEX_HEADER_BYTES, 0) == seen[0]:
                    return seen[1]
            except (OSError, ValueError):  # (closed by another thread's close(): the long way tells)
                pass
        with self._lock:
            header = self._wal_index_header()
            seen = self._seen
            if header is not None and seen is not None and seen[0] == header:
                return seen[1]
            try:
                seq = self._seq(self.conn)
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None
            # The header was read first: a commit landing between the two reads changes it again, so
            # the next call reads SQLite rather than trust this sequence past that commit.
            self._seen = None if header is None else (header, seq)
            return seq

    def _wal_index_header(self) -> bytes | None:
        """The -shm file's WAL-index header, or None where there is none to trust (a read-only or
        immutable open, a file not yet made): then every call reads the sequence from SQLite."""
        if self._shm is None:
            if not self._wal or not hasattr(os, "pread"):
                return None
            try:
                self._shm = open(f"{self.path}-shm", "rb", buffering=0)  # noqa: SIM115 - kept open, closed in close()
            except OSError:
                return None
        try:
            header = os.pread(self._shm.fileno(), WAL_INDEX_HEADER_BYTES, 0)
        except (OSError, ValueError):  # (ValueError: closed by another thread's close())
            return None
        return header if len(header) == WAL_INDEX_HEADER_BYTES else None

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
        passages: Sequence[Sequence[PassageSpan] | None] | None = None,
        passage_vectors: Sequence[np.ndarray | None] | None = None,
        before_write: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Insert (or replace, with ``upsert``) a batch in one transaction, with its passages.

        ``passages`` gives each item's passages as ``(start, end, page)`` character spans (``None``: one
        passage, the whole item); ``passage_vectors`` their vectors, for items of more than one.
        ``before_write(seq, passage_ids, replaced)`` is called inside the transaction once those are
        known, before any row is written (the index starts its work there; when the transaction then
        fails, the caller must forget that work). Returns ``(seq, passage_ids, replaced_passage_ids)``:
        the batch's change sequence, the new passages' ids (the FAISS ids, item by item in input
        order) and those of the passages the upsert replaced.
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
            replaced = self._drop_items(conn, list(existing.values()), seq)
            # Rowids are given, not left to SQLite: the passage ids (the FAISS ids) are known before
            # the rows are written, so the index can be fed while SQLite writes and commits.
            first_rowid = self._next_rowid(conn)
            rows, passage_ids = [], []
            for position in range(len(ids)):
                base = (first_rowid + position) << PASSAGE_BITS
                spans = passages[position] if passages is not None else None
                if not spans or len(spans) == 1:  # the whole item: its vector is the item's
                    start, end, page = spans[0] if spans else (0, len(texts[position] or ""), None)
                    rows.append((base, start, end, page, None, seq))
                    passage_ids.append(base)
                    continue
                given = passage_vectors[position] if passage_vectors is not None else None
                own = None if given is None else np.ascontiguousarray(given, dtype=np.float32)
                for ordinal, (start, end, page) in enumerate(spans):  # (a full-text store keeps no vectors)
                    blob = None if own is None else own[ordinal].tobytes()
                    rows.append((base + ordinal, start, end, page, blob, seq))
                    passage_ids.append(base + ordinal)
            new_ids = np.array(passage_ids, dtype=np.int64)
            if before_write is not None:
                before_write(seq, new_ids, replaced)
            conn.executemany(
                "INSERT INTO items (rowid, id, kind, text, uri, metadata, vector, seq, thumbnail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (first_rowid + n, i, k, t, u, "{}" if not m else json.dumps(m, ensure_ascii=False), b, seq, th)
                    for n, (i, k, t, u, m, b, th) in enumerate(
                        zip(ids, kinds, texts, uris, metadata, blobs, thumbnails or [None] * len(ids))
                    )
                ],
            )
            conn.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?)", rows)
        return seq, new_ids, replaced

    @staticmethod
    def _next_rowid(conn: sqlite3.Connection) -> int:
        """The rowid AUTOINCREMENT would give next: above every rowid the table ever held."""
        row = conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'items'), 0), "
            "coalesce((SELECT max(rowid) FROM items), 0))"
        ).fetchone()
        return int(row[0]) + 1

    @staticmethod
    def _drop_items(conn: sqlite3.Connection, rowids: Sequence[int], seq: int) -> np.ndarray:
        """Delete items and all their passages in the caller's transaction, recording the passage ids
        as deleted at ``seq``; returns those ids."""
        if not rowids:
            return np.empty(0, dtype=np.int64)
        ranges = [(int(r) << PASSAGE_BITS, (int(r) << PASSAGE_BITS) + PASSAGE_SPAN - 1) for r in rowids]
        conn.executemany(
            "INSERT OR REPLACE INTO deletions SELECT id, ? FROM passages WHERE id BETWEEN ? AND ?",
            [(seq, low, high) for low, high in ranges],
        )
        conn.executemany("DELETE FROM passages WHERE id BETWEEN ? AND ?", ranges)
        conn.executemany("DELETE FROM items WHERE rowid = ?", [(int(r),) for r in rowids])
        dropped = conn.execute("SELECT rowid FROM deletions WHERE seq = ?", (seq,)).fetchall()
        return np.array([r[0] for r in dropped], dtype=np.int64)

    def delete(self, ids: Sequence[str]) -> tuple[int, np.ndarray]:
        """Delete items (and their passages) by id in one transaction; every id must exist. Returns
        ``(seq, passage_ids)``: the change sequence and the ids the index must remove."""
        with self.write() as (conn, seq):
            found = self._rowids_of(conn, ids)
            missing = [i for i in ids if i not in found]
            if missing:
                raise ItemNotFoundError(
                    f"unknown id {missing[0]!r} ({len(missing)} of {len(ids)} ids not found): nothing was deleted"
                )
            removed = self._drop_items(conn, list(found.values()), seq)
        return seq, removed

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
        return dict(_keyed(conn, "items.id, items.rowid", "items", "id", [str(i) for i in ids]))

    def rowids_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Map the given ids to rowids; unknown ids are left out."""
        with self._read() as conn:
            return self._rowids_of(conn, ids)

    def count(self) -> int:
        """Number of items."""
        with self._read() as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]

    def vector_count(self) -> int:
        """Number of passages: the vectors the index holds (one per item, more for long texts)."""
        with self._read() as conn:
            return conn.execute("SELECT count(*) FROM passages").fetchone()[0]

    def passages_of(self, rowids: Sequence[int]) -> dict[int, list[tuple[int, int, int, int | None]]]:
        """Each item's passages as ``(passage id, start, end, page)``, in order, by item rowid."""
        out: dict[int, list[tuple[int, int, int, int | None]]] = {}
        with self._read() as conn:
            for rowid in rowids:
                low = int(rowid) << PASSAGE_BITS
                rows = conn.execute(
                    "SELECT id, start_char, end_char, page FROM passages WHERE id BETWEEN ? AND ? ORDER BY id",
                    (low, low + PASSAGE_SPAN - 1),
                ).fetchall()
                if rows:
                    out[int(rowid)] = rows
        return out

    def passage_counts(self) -> tuple[int, int]:
        """``(items, passages)``, in one snapshot."""
        with self._read() as conn:
            sql = "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM passages)"
            items, passages = conn.execute(sql).fetchone()
        return int(items), int(passages)

    def rows_by_rowid(self, rowids: Sequence[int], *, with_vectors: bool = False) -> dict[int, dict[str, Any]]:
        """Return items keyed by rowid (missing rowids are left out)."""
        columns = ITEM_COLUMNS + (", items.vector" if with_vectors else "")
        with self._read() as conn:
            return {row[0]: _row_dict(row, with_vectors) for row in _keyed(conn, columns, "items", "rowid", rowids)}

    def hit_rows(self, keys: Sequence[int], include: frozenset[str], *, by_passage: bool) -> dict[int, tuple[Any, ...]]:
        """What search hits show, in one query. ``keys`` are item rowids, or with
        ``by_passage`` the matched passages' ids (then each row also has that passage's ``start,
        end, page, text``; NULLs for an item without text). Each row is ``(key, id)``, then ``text,
        uri`` when ``include`` has "text", ``metadata`` for "metadata" (JSON text; from kept rows, a
        dict of flat fields to copy, never to hand out) and ``vector`` (bytes) for "vector". Keys whose
        item (or passage) is gone are left out.

        The rows of the default fields (text and metadata) are kept in memory once read, until the
        next write by anyone (the change sequence moves; a pread tells): reading ten rows from SQLite
        after a graph walk costs a quarter of an HNSW search, a dict lookup nothing. Fewer fields are
        cut from kept rows (what is not kept is read with those fields alone, and not kept); vectors
        are always read. What a search returns is what SQLite holds when it checks the sequence."""
        if "vector" in include:
            with self._read() as conn:
                rows = {row[0]: row for row in self._select_hit_rows(conn, keys, include, by_passage)}
            if len(rows) < len(set(keys)):
                self.misses += 1
            return rows
        default = include - {"passage"} == _CACHED_FIELDS
        with self._lock:
            seq = self.seq
            if self._hit_rows_seq != seq:
                self._clear_hit_rows()
                self._hit_rows_seq = seq
            kept = self._hit_rows[by_passage]
            found: dict[int, tuple[Any, ...]] = {}
            missing = []
            for key in keys:
                row = kept.get(key)
                if row is None:
                    missing.append(key)
                else:
                    found[key] = row if default else _fields_of(row, include, by_passage)
            if missing:
                with self._read() as conn:
                    rows = self._select_hit_rows(conn, sorted(missing), include, by_passage).fetchall()
                if default:
                    self._keep_hit_rows(rows, by_passage)
                found.update((row[0], row) for row in rows)
                if len(rows) < len(set(missing)):
                    self.misses += 1
            return found

    def _clear_hit_rows(self) -> None:
        for kept in self._hit_rows.values():
            kept.clear()
        self._hit_rows_bytes = 0

    def _keep_hit_rows(self, rows: list[tuple[Any, ...]], by_passage: bool) -> None:
        """Add default-field rows to the kept ones (see :meth:`hit_rows`), within the bounds."""
        size = sum(HIT_ROW_BYTES + sum(len(f) for f in row if isinstance(f, str)) for row in rows)
        count = sum(len(kept) for kept in self._hit_rows.values())
        if count + len(rows) > HIT_CACHE_ROWS or self._hit_rows_bytes + size > HIT_CACHE_BYTES:
            self._clear_hit_rows()  # (simpler than an LRU, and the cache refills at the read's own cost)
        if size <= HIT_CACHE_BYTES and len(rows) <= HIT_CACHE_ROWS:
            self._hit_rows[by_passage].update((row[0], row[:4] + (_kept_metadata(row[4]),) + row[5:]) for row in rows)
            self._hit_rows_bytes += size

    @staticmethod
    def _select_hit_rows(
        conn: sqlite3.Connection, keys: Sequence[int], include: frozenset[str], by_passage: bool
    ) -> sqlite3.Cursor:
        columns = ["passages.id" if by_passage else "items.rowid", "items.id"]
        columns += ["items.text", "items.uri"] if "text" in include else []
        columns += ["items.metadata"] if "metadata" in include else []
        columns += ["items.vector"] if "vector" in include else []
        source, key = "items", "rowid"
        if by_passage:
            columns.append(
                "passages.start_char, passages.end_char, passages.page, "
                "substr(items.text, passages.start_char + 1, passages.end_char - passages.start_char)"
            )
            source, key = "passages", "id"
        joined = f"JOIN items ON items.rowid = passages.id >> {PASSAGE_BITS}" if by_passage else ""
        return _keyed(conn, ", ".join(columns), source, key, keys, joined)

    def item_ids(self, rowids: Sequence[int]) -> list[str | None]:
        """Items' ids by rowid, in order (None for a rowid of no item, such as FAISS's -1), from memory:
        an ids-only search then needs no SQLite read (ten rows cost a 60,000-item collection as much as
        its whole HNSW search at ef 16). The first call loads every item's id when there are at most
        :data:`IDS_CACHE_ITEMS` items; later items (and those of bigger collections) are read when
        first asked for. A kept row never goes stale: AUTOINCREMENT gives no committed rowid twice and
        an item keeps its id (a row deleted since the caller's ranking is not checked for: its id is
        given as ranked)."""
        kept = self._ids_by_rowid
        if kept is not None:
            try:  # the hot path: every rowid kept (dict reads need no lock; a clear() lands in the except)
                return [kept[r] for r in rowids]
            except KeyError:
                pass
        with self._lock:
            kept = self._ids_by_rowid
            if kept is None:
                with self._read() as conn:
                    rows = conn.execute("SELECT rowid, id FROM items LIMIT ?", (IDS_CACHE_ITEMS + 1,))
                    kept = dict(rows.fetchall())
                self._ids_by_rowid = kept = kept if len(kept) <= IDS_CACHE_ITEMS else {}
            missing = [int(r) for r in rowids if r >= 0 and r not in kept]
            if missing:
                if len(kept) + len(missing) > IDS_CACHE_ITEMS:
                    kept.clear()
                rows = self.hit_rows(missing, frozenset(), by_passage=False)  # (rowid, id) rows (misses counted)
                kept.update((rowid, row[1]) for rowid, row in rows.items())
            return [kept.get(r) for r in rowids]

    def thumbnails(self, rowids: Sequence[int]) -> dict[int, bytes]:
        """JPEG thumbnails of image items by rowid (items without one are left out)."""
        with self._read() as conn:
            rows = _keyed(conn, "items.rowid, items.thumbnail", "items", "rowid", rowids)
            return {rowid: thumbnail for rowid, thumbnail in rows if thumbnail is not None}

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

    def passage_ids_matching(self, where_sql: str, params: Sequence[Any]) -> np.ndarray:
        """Passage ids (FAISS ids) of the items whose metadata matches a compiled filter, sorted."""
        sql = (
            "SELECT passages.id FROM items JOIN passages ON passages.id BETWEEN items.rowid << 16 "
            f"AND (items.rowid << 16) + {PASSAGE_SPAN - 1} WHERE {where_sql} ORDER BY passages.id"
        )
        with self._read() as conn:
            rows = conn.execute(sql, list(params)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def passage_vectors(
        self,
        passage_ids: Sequence[int] | np.ndarray,
        dim: int,
        *,
        missing_ok: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Float32 vectors of the given passages, in the same order; raises on an unknown id (zeros
        for it with ``missing_ok``). ``out``: a zeroed C-contiguous (n, dim) float32 array to fill
        (a FAISS index's own storage: the vectors are copied once, from SQLite's pages into it)."""
        keys = np.asarray(passage_ids, dtype=np.int64)
        if len(keys) >= SCAN_MIN:
            rows_spanned = int(keys.max() >> PASSAGE_BITS) - int(keys.min() >> PASSAGE_BITS) + 1
            if len(keys) * SCAN_DENSITY >= rows_spanned:
                order = np.argsort(keys, kind="stable")
                if not bool(np.any(keys[order[1:]] == keys[order[:-1]])):  # distinct ids (else: lookups)
                    target = np.zeros((len(keys), dim), dtype=np.float32) if out is None else out
                    return self._passage_vectors_by_scan(keys, order, target, missing_ok=missing_ok)
        found = self._vectors_by_key(
            keys.tolist(), dim, f"passages.id, {_PASSAGE_VECTOR}", "passages", missing_ok=missing_ok
        )
        if out is None:
            return found
        out[:] = found
        return out

    def _passage_vectors_by_scan(
        self, keys: np.ndarray, order: np.ndarray, out: np.ndarray, *, missing_ok: bool
    ) -> np.ndarray:
        """:meth:`passage_vectors` of many distinct ids (``order`` sorts them) by range scans in id
        order, each blob copied straight into its row of ``out``: what opening a lean index reads,
        without a lookup per id or an intermediate array. Two scans in one read transaction (one
        snapshot): the passages that hold their own vector (documents of several passages), then the
        items' rows for the rest (an item of one passage keeps its vector in its row), which is about
        twice as fast as asking SQLite for each passage's item."""
        ordered = keys[order]
        row_bytes = out.shape[1] * 4
        target = memoryview(out.reshape(-1).view(np.uint8))
        filled = np.zeros(len(keys), dtype=bool)  # by place in ``ordered``

        def place(rows: list[tuple[int, bytes]], ids: np.ndarray) -> None:
            at = np.minimum(np.searchsorted(ordered, ids), len(ordered) - 1)
            wanted = (ordered[at] == ids) & ~filled[at]  # rows in the range not asked for are skipped
            filled[at[wanted]] = True
            for (_, blob), start, ok in zip(rows, (order[at] * row_bytes).tolist(), wanted.tolist()):
                if ok:
                    if len(blob) != row_bytes:
                        raise ValueError(f"a stored vector has {len(blob)} bytes, not {row_bytes}")
                    target[start : start + row_bytes] = blob

        low, high = int(ordered[0]), int(ordered[-1])
        with self._read() as conn:
            began = not conn.in_transaction  # (inside a write's transaction, that is the snapshot)
            if began:
                conn.execute("BEGIN")
            ok = False
            try:
                own = conn.execute(
                    "SELECT id, vector FROM passages WHERE id BETWEEN ? AND ? AND vector IS NOT NULL ORDER BY id",
                    (low, high),
                )
                while rows := own.fetchmany(8192):
                    place(rows, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
                items = conn.execute(
                    "SELECT rowid, vector FROM items WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
                    (low >> PASSAGE_BITS, high >> PASSAGE_BITS),
                )
                while rows := items.fetchmany(8192):  # as passage 0 of each item, where not yet filled
                    place(rows, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)) << PASSAGE_BITS)
                rest = ordered[~filled].tolist()  # any other passage without a vector of its own: looked up
                if rest:
                    found = _keyed(conn, f"passages.id, {_PASSAGE_VECTOR}", "passages", "id", rest)
                    rows = [row for row in found if row[1] is not None]
                    if rows:
                        place(rows, np.array([r[0] for r in rows], dtype=np.int64))
                ok = True
            finally:
                if began and conn.in_transaction:  # (SQLite may have rolled back after an I/O error)
                    conn.execute("COMMIT" if ok else "ROLLBACK")
        if int(filled.sum()) != len(keys) and not missing_ok:
            raise ItemNotFoundError("some rows vanished while reading vectors: retry the call")
        return out

    def vectors(self, rowids: Sequence[int] | np.ndarray, dim: int) -> np.ndarray:
        """Float32 vectors of the given rowids, in the same order; raises on an unknown rowid."""
        return self._vectors_by_key(rowids, dim, "items.rowid, items.vector", "items")

    def _vectors_by_key(
        self, keys: Sequence[int] | np.ndarray, dim: int, columns: str, source: str, *, missing_ok: bool = False
    ) -> np.ndarray:
        """Vectors of ``source``'s rows by key (``columns``: the key and the vector)."""
        position = {int(r): i for i, r in enumerate(keys)}
        out = (np.zeros if missing_ok else np.empty)((len(position), dim), dtype=np.float32)
        seen = 0
        with self._read() as conn:
            for rowid, blob in _keyed(conn, columns, source, "rowid" if source == "items" else "id", list(position)):
                out[position[rowid]] = np.frombuffer(blob, dtype=np.float32)
                seen += 1
        if seen != len(position) and not missing_ok:
            raise ItemNotFoundError("some rows vanished while reading vectors: retry the call")
        return out

    def iter_vectors(
        self, dim: int, *, after_seq: int = 0, upto_seq: int | None = None, batch: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(passage ids, vectors)`` chunks of the passages written after ``after_seq`` (and at or
        before ``upto_seq``: a reader that recorded the sequence first must not also take newer rows),
        by id: what the index holds."""
        sql = f"SELECT id, {_PASSAGE_VECTOR} FROM passages WHERE seq > ? AND seq <= ? AND id > ? ORDER BY id LIMIT ?"
        return self._iter_vector_rows(sql, dim, after_seq, upto_seq, batch)

    def iter_item_vectors(self, dim: int, *, batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rowids, vectors)`` chunks of every item's own vector (a document's: the mean of its
        passages), by rowid."""
        sql = "SELECT rowid, vector FROM items WHERE seq > ? AND seq <= ? AND rowid > ? ORDER BY rowid LIMIT ?"
        return self._iter_vector_rows(sql, dim, 0, None, batch)

    def _iter_vector_rows(
        self, sql: str, dim: int, after_seq: int, upto_seq: int | None, batch: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = -1
        upto = _MAX_SEQ if upto_seq is None else upto_seq
        while True:
            with self._read() as conn:
                rows = conn.execute(sql, (after_seq, upto, last, batch)).fetchall()
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
        """:func:`latentsearch.index.faiss_index.rowids_digest` of the passage ids (the index's ids) that
        were live at change sequence ``seq``: those written at or before it and still here, plus those
        deleted since that existed then (ids only grow, so they are the ones up to ``max_rowid``, the
        largest live id at ``seq``). One statement, so one snapshot, over the small ``passages_seq``
        index, not the rows."""
        sql = (
            "SELECT count(*), coalesce(sum(r), 0), coalesce(sum(r2), 0), coalesce(sum(r2 * r % ?1), 0) FROM "
            "(SELECT r, r * r % ?1 AS r2 FROM "
            "(SELECT id % ?1 AS r FROM passages INDEXED BY passages_seq WHERE seq <= ?2 "
            "UNION ALL SELECT rowid % ?1 FROM deletions WHERE seq > ?2 AND rowid <= ?3))"
        )
        with self._read() as conn:
            row = conn.execute(sql, (prime, seq, max_rowid)).fetchone()
        return ":".join(str(int(v)) for v in row)

    def upgrade(self) -> bool:
        """Bring a store of format version 1 up to :data:`FORMAT_VERSION`; returns True when it did
        (or, read-only, made this connection read it as version 2).

        Version 1 had no passages and one full-text row per item: every item gets its one passage
        (the whole item, the item's own vector, id ``rowid << 16``) and its full-text row moves to
        it, and recorded deletions move to passage ids, in one transaction that also writes the new
        version, so a crash leaves the old format or the new one, never a mix, and the change
        sequence does not move (no item changed). A read-only store is not written: its passages and
        their full-text rows are made in temporary tables of this connection instead.
        """
        if not self._is_version_1():
            return False
        fill = (
            f"INSERT OR IGNORE INTO {{db}}passages SELECT rowid << {PASSAGE_BITS}, 0, coalesce(length(text), 0), "
            "NULL, NULL, seq FROM main.items"
        )
        with self._lock:
            try:
                if self.read_only:
                    script = _PASSAGES_SCHEMA.replace("@db", "temp") + fill.format(db="temp.") + ";"
                    self.conn.executescript(script + "INSERT INTO temp.passages_fts(passages_fts) VALUES ('rebuild');")
                    return True
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._is_version_1():  # not upgraded meanwhile by another process
                        self._upgrade_in_transaction(fill.format(db="main."))
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        with suppress(sqlite3.Error):
                            self.conn.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None
        return True

    def _is_version_1(self) -> bool:
        """A version-1 store: its manifest says so, or it still has the per-item full-text table (the
        shared full-text store of a sharded collection, which has no manifest)."""
        conn = self.conn
        row = conn.execute("SELECT value FROM manifest WHERE key = 'format_version'").fetchone()
        old_fts = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'items_fts'").fetchone()
        return (row is not None and json.loads(row[0]) == 1) or old_fts is not None

    def _upgrade_in_transaction(self, fill: str) -> None:
        conn = self.conn
        for statement in ("DROP TRIGGER IF EXISTS items_fts_insert", "DROP TRIGGER IF EXISTS items_fts_delete"):
            conn.execute(statement)
        conn.execute("DROP TABLE IF EXISTS items_fts")
        script = _PASSAGES_SCHEMA.replace("@db", "main") + _PASSAGES_TRIGGERS
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(fill)  # the insert trigger gives each passage its full-text row
        # Two steps, through negative ids, so that no new id meets an old one not yet moved.
        conn.execute("UPDATE deletions SET rowid = -rowid")
        conn.execute(f"UPDATE deletions SET rowid = (-rowid) << {PASSAGE_BITS} WHERE rowid < 0")
        if conn.execute("SELECT 1 FROM manifest WHERE key = 'format_version'").fetchone():
            conn.execute("INSERT OR REPLACE INTO manifest VALUES ('format_version', ?)", (json.dumps(FORMAT_VERSION),))

    def adopt(self, source: Path, manifest: dict[str, Any], *, expected_seq: int) -> int:
        """Replace every item and passage by those of the collection database ``source`` (a collection of
        the same items built with another encoder), and set ``manifest`` entries (``None`` removes one),
        in one transaction: a crash leaves all the old rows or all the new ones. The new rows take
        rowids above every rowid used (the index sees the old passages deleted and the new ones added).
        Refused, changing nothing, when anything was written since change sequence ``expected_seq``.
        Returns the new change sequence."""
        self.check_writable()
        with self._lock:
            try:
                self.conn.execute("ATTACH DATABASE ? AS fresh", (str(source),))  # not allowed inside a transaction
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc) from None
            try:
                with self.write() as (conn, seq):
                    if seq - 1 != expected_seq:
                        raise ConflictError(
                            f"collection {self.path.parent.name!r} was written to while it was re-encoded: nothing "
                            "was changed; run it again"
                        )
                    offset = self._next_rowid(conn) - 1
                    conn.execute("INSERT OR REPLACE INTO deletions SELECT id, ? FROM passages", (seq,))
                    conn.execute("DELETE FROM passages")  # before the items: the full-text trigger reads their text
                    conn.execute("DELETE FROM items")
                    conn.execute(
                        "INSERT INTO items (rowid, id, kind, text, uri, metadata, vector, seq, thumbnail) "
                        "SELECT rowid + ?, id, kind, text, uri, metadata, vector, ?, thumbnail FROM fresh.items "
                        "ORDER BY rowid",
                        (offset, seq),
                    )
                    conn.execute(
                        "INSERT INTO passages (id, start_char, end_char, page, vector, seq) "
                        f"SELECT id + (? << {PASSAGE_BITS}), start_char, end_char, page, vector, ? FROM fresh.passages "
                        "ORDER BY id",
                        (offset, seq),
                    )
                    self._set_manifest(conn, manifest)
            finally:
                with suppress(sqlite3.Error):
                    self.conn.execute("DETACH DATABASE fresh")
            self._ids_by_rowid = None
        return seq

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
        """Number of passages written after change sequence ``seq`` (up to ``upto_seq``)."""
        upto = _MAX_SEQ if upto_seq is None else upto_seq
        with self._read() as conn:
            sql = "SELECT count(*) FROM passages WHERE seq > ? AND seq <= ?"
            return conn.execute(sql, (seq, upto)).fetchone()[0]

    def deleted_after(self, seq: int, upto_seq: int | None = None) -> np.ndarray:
        """Passage ids deleted (or replaced) after change sequence ``seq`` (up to ``upto_seq``)."""
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
    ) -> list[tuple[int, int, float, int]]:
        """BM25 over passages: the top ``k`` items for an FTS5 MATCH expression, each at its best
        passage, as ``(rowid, passage id, score, passage rank)``, higher scores better.

        The metadata filter is applied in the same query, so it never shrinks the result list;
        passages are fetched until ``k`` distinct items are found (or none are left).
        """
        if where_sql == "1" and exclude is None:  # FTS5 alone, ranked by its own (faster) bm25 rank
            sql, args = (
                "SELECT rowid, -rank FROM passages_fts WHERE passages_fts MATCH ? ORDER BY rank LIMIT ?",
                [match],
            )
        else:
            sql = (
                "SELECT passages_fts.rowid, -bm25(passages_fts) AS score FROM passages_fts "
                "JOIN items ON items.rowid = passages_fts.rowid >> 16 "
                f"WHERE passages_fts MATCH ? AND ({where_sql}) AND items.rowid != ? "
                "ORDER BY bm25(passages_fts) LIMIT ?"
            )
            args = [match, *params, -1 if exclude is None else exclude]
        fetch = k
        while True:
            with self._read() as conn:
                rows = conn.execute(sql, [*args, fetch]).fetchall()
            best: dict[int, tuple[int, int, float, int]] = {}
            for rank, (passage, score) in enumerate(rows, 1):
                rowid = int(passage) >> PASSAGE_BITS
                if rowid not in best:
                    best[rowid] = (rowid, int(passage), float(score), rank)
            if len(best) >= k or len(rows) < fetch:
                return list(best.values())[:k]
            fetch *= 4

    def iter_rows(self, *, batch: int = 1000, with_vectors: bool = False) -> Iterator[dict[str, Any]]:
        """Yield every item (with its own vector when asked) in rowid order."""
        last = -1
        columns = ITEM_COLUMNS + (", vector" if with_vectors else "")
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    f"SELECT {columns} FROM items WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row_dict(row, with_vectors)
            last = rows[-1][0]


def _statements(script: str) -> list[str]:
    """The statements of a schema script, for running them one by one inside a transaction (trigger
    bodies end their inner statements with ';' too: a statement is complete when sqlite3 says so)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return [s for s in out if s]


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


def _kept_metadata(text: str) -> str | dict[str, Any]:
    """A kept row's metadata: parsed once when every value is a string, number, boolean or null (a
    shallow copy of it is then a hit's own dict, cheaper than parsing again), else the JSON text."""
    if text == "{}":
        return text
    fields = json.loads(text)
    flat = isinstance(fields, dict) and all(not isinstance(v, (dict, list)) for v in fields.values())
    return fields if flat else text


def _fields_of(row: tuple[Any, ...], include: frozenset[str], by_passage: bool) -> tuple[Any, ...]:
    """A kept default-field hit row (``key, id, text, uri, metadata`` and the passage's four) cut to
    the shape :meth:`Store.hit_rows` gives for ``include``."""
    out = row[:2]
    if "text" in include:
        out += row[2:4]
    if "metadata" in include:
        out += row[4:5]
    return out + row[5:9] if by_passage else out


def _keyed(
    conn: sqlite3.Connection, columns: str, source: str, key: str, keys: Sequence[Any], joined: str = ""
) -> sqlite3.Cursor:
    """Rows of ``source`` whose ``key`` column is among ``keys`` (ints or strings), in one statement:
    the keys travel as one JSON array that ``json_each`` reads, looked up one by one (the plan: scan
    the keys, search ``source`` by key). An ``IN`` list of bound parameters built a temporary b-tree
    first, cost twice the lookups of a ten-hit search, and stopped at 999 parameters. A key given twice
    gives its row twice. ``columns`` name their table (``json_each`` has an ``id`` of its own);
    ``joined``: a join to another table after ``source``."""
    values = [k if isinstance(k, str) else int(k) for k in keys]
    sql = f"SELECT {columns} FROM json_each(?) AS keys CROSS JOIN {source} ON {source}.{key} = keys.value {joined}"
    return conn.execute(sql, (json.dumps(values),))
