"""The local backend: one folder holding an SQLite store (the truth) and a FAISS index derived from it.

Keys are SQLite rowids of items. The FAISS index holds passages (ids ``rowid << 16 | ordinal``): a
vector search ranks passages and keeps each item's best, fetching more passages until it has k
items (or none are left). A filter is applied before ranking; :mod:`latentsearch.backends.planner`
chooses, from its match count, between exact search over the matches' vectors in memory and the ANN
index with a selector and a breadth scaled to the selectivity, and a query whose walk found too few
allowed neighbours is answered exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.backends.base import PassageSpan, Ranking, VectorTable, WriteBatch, nearest_by_knn
from latentsearch.backends.planner import Plan, SubsetCache, plan_filtered, subindex_plan
from latentsearch.errors import ConflictError, EncoderMismatchError, InvalidInputError
from latentsearch.index.faiss_index import (
    CHECKPOINT_FILE,
    INDEX_FILE,
    PARTITION_FILE,
    ProgressFn,
    VectorIndex,
    one_thread,
)
from latentsearch.index.specs import DEFAULT_EF_SEARCH, faiss_metric, is_compressed, row_scores, score_lists, to_scores
from latentsearch.index.subindex import SubIndexCache
from latentsearch.limits import check_tuning
from latentsearch.records import DEFAULT_INCLUDE, Hit, Item, Passage, found_only, id_hits
from latentsearch.storage.filters import MATCH_ALL, compile_filter
from latentsearch.storage.store import DB_FILE, FORMAT_VERSION, IDS_CACHE_ITEMS, PASSAGE_BITS, Store

log = logging.getLogger("latentsearch")
RERANK_FACTOR = 4  # compressed indexes fetch k*4 candidates and re-rank on the float vectors
FILTER_CACHE_SIZE = 32  # distinct filters whose matching rowids are kept between searches
PASSAGE_MASK = (1 << PASSAGE_BITS) - 1
# A search over long documents first fetches this many passages per item wanted (up to the mean
# number of passages per item), then four times more for the queries that still lack items.
FETCH_GROWTH = 4


class PassageKey(int):
    """An item's key (its rowid: compared and hashed as that int, so fusion joins it with the same
    item's lexical key) that also carries the passage that matched, its score and its rank."""

    passage: int
    passage_score: float
    passage_rank: int

    def __new__(cls, rowid: int, passage: int, score: float, rank: int) -> PassageKey:
        key = super().__new__(cls, rowid)
        key.passage, key.passage_score, key.passage_rank = passage, score, rank
        return key


def is_local(folder: Path) -> bool:
    """True when ``folder`` holds a local collection."""
    return (folder / DB_FILE).is_file()


# Manifest entries that say how items are encoded: another process's in-place re-encode changes them
# (see _follow_manifest).
ENCODING_KEYS = ("encoder", "weights_hash", "dim", "modality")


class LocalBackend:
    """SQLite + FAISS in one folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder)
        self.name = self.path.name
        self.store = Store(self.path)
        self.manifest: dict[str, Any] = self.store.read_manifest()
        if self.manifest.get("format_version") == 1:
            self._upgrade()
        if self.manifest.get("format_version") != FORMAT_VERSION:
            self.store.close()
            raise EncoderMismatchError(
                f"collection {self.name!r} has format version {self.manifest.get('format_version')}, "
                f"this latentsearch reads version {FORMAT_VERSION}: upgrade latentsearch"
            )
        # Binds the index files to this collection (a copied-in foreign index is rebuilt, not served).
        self.collection_id = self.store.ensure_collection_id()
        self.dim, self.metric = int(self.manifest["dim"]), str(self.manifest["metric"])
        self._manifest_seq = -1  # the change sequence of this process's last read of the manifest (_follow_manifest)
        self._index: VectorIndex | None = None
        self._lock = threading.RLock()
        self._filters: dict[tuple[str, str], np.ndarray] = {}
        self._filters_seq = -1
        self._subsets = SubsetCache()  # filters' match vectors, for exact search over them
        self.subindexes = SubIndexCache()  # graphs of repeated filters' matches
        self._plan = threading.local()  # the last filtered search's plan, per thread (for --explain)
        self._shape = (-1, 0, 0)  # (change sequence, items, passages): how many passages an item has
        self._ids_at: tuple[np.ndarray, list[str | None]] | None = None  # (index labels, their item ids): see nearest
        # (change sequence, index) at which every item is one passage of an uncompressed index: see _nearest
        self._direct_at: tuple[int, VectorIndex | None] = (-1, None)

    def _upgrade(self) -> None:
        """Upgrade a version-1 collection to passages (once; see :meth:`Store.upgrade`). Its index
        files hold item rowids, not passage ids: they are removed and rebuilt on first use."""
        if not self.store.read_only:
            log.info("upgrading collection %s to format version %d (passages)", self.name, FORMAT_VERSION)
        try:
            self.store.upgrade()
        except BaseException:
            self.store.close()
            raise
        if not self.store.read_only:
            for stale in (INDEX_FILE, CHECKPOINT_FILE, PARTITION_FILE):
                (self.path / stale).unlink(missing_ok=True)
        self.manifest = {**self.store.read_manifest(), "format_version": FORMAT_VERSION}

    @staticmethod
    def create(folder: Path, manifest: dict[str, Any]) -> None:
        """Make an empty collection in ``folder`` (made if missing) with this manifest."""
        folder.mkdir(parents=True, exist_ok=True)
        store = Store(folder, create=True)
        try:
            store.write_manifest({"format_version": FORMAT_VERSION, **manifest})
        finally:
            store.close()

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    # --- the index ---------------------------------------------------------------------------------

    @property
    def index(self) -> VectorIndex:
        """The FAISS index, loaded (or rebuilt) on first use and caught up with SQLite on each use."""
        return self._index_at(self.store.seq)

    def _index_at(self, seq: int) -> VectorIndex:
        """:attr:`index`, for a change sequence the caller has just read (a search reads it once)."""
        index = self._index
        if index is not None and index.seq == seq:  # the hot path, with no lock (an index's seq is set last)
            return index
        with self._lock:
            self._follow_manifest(seq)  # (the index is about to be read from SQLite: at which dimension?)
            if self._index is None:
                index = self.new_index()
                index.load(self.store)
                self._index = index
            elif self._index.seq != seq:  # another process wrote
                self._index.catch_up(self.store)
            return self._index

    def _follow_manifest(self, seq: int) -> None:
        """Take up what another process changed in the manifest since this one last read it, at change
        sequence ``seq`` (read by the caller before this): a tuned fusion or layers as they are; a
        re-encode in place (``reencode``: another encoder or dimension) also drops the index (read again
        from SQLite on next use) and raises ConflictError, once, for the call at hand, whose query or
        vectors came from the old encoder. Read only when the sequence moved: a search pays nothing."""
        if seq == self._manifest_seq:
            return
        fresh = self.store.read_manifest()
        self._manifest_seq = seq
        current = self.manifest
        if fresh == current:  # (neither holds a None: one removes its entry)
            return
        entries = {key: fresh.get(key) for key in {*current, *fresh}}  # (None: an entry removed)
        with self._lock:
            if all(fresh.get(key) == current.get(key) for key in ENCODING_KEYS):
                self._set_manifest(entries)
                return
            self._take_manifest(entries)
        raise ConflictError(
            f"collection {self.name!r} was re-encoded with {fresh.get('encoder')!r} by another process since it "
            "was opened here: nothing was done; run it again (this process now uses the new encoder)"
        )

    def _set_manifest(self, entries: dict[str, Any]) -> None:
        """Set manifest entries in memory (``None`` removes one)."""
        for key, value in entries.items():
            if value is None:
                self.manifest.pop(key, None)
            else:
                self.manifest[key] = value

    def _take_manifest(self, entries: dict[str, Any]) -> None:
        """Set manifest entries of a re-encode, and forget what was derived from the old vectors (the
        index, read again on next use; filter caches)."""
        self._set_manifest(entries)
        self.dim = int(self.manifest["dim"])
        self._drop_index()
        self._filters.clear()
        self._subsets = SubsetCache()
        self.subindexes.clear()
        self._ids_at, self._direct_at, self._shape = None, (-1, None), (-1, 0, 0)

    def new_index(self) -> VectorIndex:
        """An empty (not yet loaded) FAISS side of this collection."""
        return VectorIndex(
            self.path,
            dim=self.dim,
            metric=self.metric,
            spec=self.manifest["index"],
            collection_id=self.collection_id,
            read_only=self.store.read_only,
        )

    def prepare_search(self) -> None:
        """Open the index now (search does it first, while a model loading in the background finishes;
        the search itself catches it up with other processes' writes)."""
        if self._index is None:
            self.index  # noqa: B018

    def encoder_pool(self) -> None:
        """Encoding runs in this process."""
        return None

    def without_writes(self) -> contextlib.AbstractContextManager[Any]:
        """The backend's lock: a write holds it until it has committed and updated the index."""
        return self._lock

    # --- writes ------------------------------------------------------------------------------------

    def write(self, batch: WriteBatch, *, upsert: bool) -> int:
        n = len(batch.ids)
        with self._lock:
            index = self.index  # caught up before the write, so it can follow with a plain add
            feeder = _IndexFeeder(index, index.seq, batch.index_vectors())

            def before_write(seq: int, passage_ids: np.ndarray, replaced: np.ndarray) -> None:
                if seq != index.seq + 1:  # another process wrote since the catch-up: a re-encode, even?
                    self._follow_manifest(seq - 1)  # (raising rolls the transaction back)
                feeder.start(seq, passage_ids, replaced)

            try:
                seq, _, _ = self.store.insert(
                    batch.ids,
                    batch.kinds,
                    batch.texts,
                    batch.uris,
                    batch.metadata,
                    batch.vectors,
                    upsert=upsert,
                    thumbnails=batch.thumbnails,
                    passages=batch.passages,
                    passage_vectors=batch.passage_vectors,
                    before_write=before_write,
                )
                feeder.join()
            except BaseException:
                if feeder.started:  # the index took rows SQLite may not have: reload it on next use
                    feeder.join(raising=False)
                    self._drop_index()
                raise
            if not feeder.started:  # another process wrote in between: replay from SQLite
                index.catch_up(self.store)
            self._maintain()
        return n

    def delete(self, ids: list[str]) -> int:
        with self._lock:
            index = self.index
            before = index.seq
            seq, passage_ids = self.store.delete(ids)
            if seq != before + 1:
                index.catch_up(self.store)
            else:
                index.remove(passage_ids, seq)
            self._maintain()
        return len(ids)

    def adopt(self, folder: Path, manifest: dict[str, Any], *, expected_seq: int) -> None:
        """Take the items, passages and vectors of the local collection in ``folder`` (the same items,
        encoded anew) in one SQLite transaction, with ``manifest`` entries (see :meth:`Store.adopt`);
        the index is then rebuilt from SQLite on first use."""
        with self._lock:
            self._manifest_seq = self.store.adopt(Path(folder) / DB_FILE, manifest, expected_seq=expected_seq)
            self._take_manifest(manifest)
            # A stale index would catch up (the old passages deleted, the new added), but a rebuild
            # is cleaner; a crash before these unlinks leaves an index that catches up or is rebuilt.
            for stale in (INDEX_FILE, CHECKPOINT_FILE, PARTITION_FILE):
                (self.path / stale).unlink(missing_ok=True)

    def _drop_index(self) -> None:
        """Forget the index (it is loaded again on next use), stopping its background work."""
        if self._index is not None:
            self._index.close()
        self._index = None

    def _maintain(self) -> None:
        index = self._index
        if index is not None and index.needs_rebuild(self.store.vector_count()):
            index.build(self.store)

    def update_metadata(self, updates: dict[str, dict[str, Any]]) -> int:
        found = self.store.rowids_of(list(updates))
        self.store.update_metadata({found[i]: fields for i, fields in updates.items()})
        return len(updates)

    def put_users(self, users: Sequence[tuple[str, np.ndarray, list[Any]]], *, replace_all: bool = False) -> None:
        self.store.put_users(users, replace_all=replace_all)

    # --- reads -------------------------------------------------------------------------------------

    def count(self) -> int:
        return self.store.count()

    def seq(self) -> int:
        return self.store.seq

    def vectors_seq(self) -> int:
        return self.store.vectors_seq()

    def existing(self, ids: list[str]) -> set[str]:
        return set(self.store.rowids_of(ids))

    def get(self, ids: list[str], *, with_vectors: bool = False) -> dict[str, Item]:
        found = self.store.rowids_of(ids)
        rows = self.store.rows_by_rowid(list(found.values()), with_vectors=with_vectors)
        return {item_id: _item(rows[rowid]) for item_id, rowid in found.items() if rowid in rows}

    def vectors_of(self, ids: list[str]) -> dict[str, np.ndarray]:
        self._follow_manifest(self.store.seq)  # (stored vectors are read at the collection's dimension)
        found = self.store.rowids_of(ids)
        rowids = list(found.values())
        matrix = self.store.vectors(rowids, self.dim)
        return {item_id: matrix[i] for i, item_id in enumerate(found)}

    def matching_vectors(self, where: Any = None) -> tuple[list[str], np.ndarray]:
        sql, params = compile_filter(where)
        self._follow_manifest(self.store.seq)
        return self.store.matching_vectors(sql, params, self.dim)

    def iter_items(self, *, with_vectors: bool = False) -> Iterator[Item]:
        return (_item(row) for row in self.store.iter_rows(with_vectors=with_vectors))

    def batch_of(self, ids: list[str]) -> WriteBatch:
        """Stored items as a batch another backend can write as they are (kinds and thumbnails kept)."""
        self._follow_manifest(self.store.seq)
        found = self.store.rowids_of(ids)
        rows = self.store.rows_by_rowid(list(found.values()), with_vectors=True)
        thumbs = self.store.thumbnails(list(found.values()))
        picked = [(rowid, rows[rowid]) for rowid in found.values() if rowid in rows]
        passages = self.store.passages_of([rowid for rowid, _ in picked])
        spans: list[list[PassageSpan] | None] = []
        own: list[np.ndarray | None] = []
        for rowid, _ in picked:
            listed = passages.get(rowid, [])
            spans.append([(start, end, page) for _, start, end, page in listed] or None)
            several = len(listed) > 1
            own.append(self.store.passage_vectors([p[0] for p in listed], self.dim) if several else None)
        return WriteBatch(
            [row["id"] for _, row in picked],
            [row["kind"] for _, row in picked],
            [row["text"] for _, row in picked],
            [row["uri"] for _, row in picked],
            [row["metadata"] for _, row in picked],
            np.stack([row["vector"] for _, row in picked]) if picked else np.empty((0, self.dim), np.float32),
            [thumbs.get(rowid) for rowid, _ in picked],
            spans,
            own,
        )

    def passages(self, ids: list[str]) -> dict[str, list[PassageSpan]]:
        found = self.store.rowids_of(ids)
        listed = self.store.passages_of(list(found.values()))
        return {
            item_id: [(start, end, page) for _, start, end, page in listed[rowid]]
            for item_id, rowid in found.items()
            if rowid in listed
        }

    def passage_count(self) -> int:
        return self.store.vector_count()

    def passage_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        self._follow_manifest(self.store.seq)
        found = self.store.rowids_of(ids)
        listed = self.store.passages_of(list(found.values()))
        passage_ids = [row[0] for rowid in found.values() for row in listed.get(rowid, [])]
        matrix = self.store.passage_vectors(passage_ids, self.dim)
        out, at = {}, 0
        for item_id, rowid in found.items():
            n = len(listed.get(rowid, []))
            if n:
                out[item_id], at = matrix[at : at + n], at + n
        return out

    def write_manifest(self, values: dict[str, Any]) -> None:
        self.store.write_manifest(values)
        self._set_manifest(values)

    def _counts(self, seq: int | None = None) -> tuple[int, int]:
        """``(items, passages)``, counted again only after a change (searches read them each time)."""
        seq = self.store.seq if seq is None else seq
        if self._shape[0] != seq:
            self._shape = (seq, *self.store.passage_counts())
        return self._shape[1], self._shape[2]

    def _passages_per_item(self) -> float:
        """Mean passages per item (1.0 when every item is one passage)."""
        items, passages = self._counts()
        return passages / items if items else 1.0

    def thumbnails(self, ids: list[str]) -> dict[str, bytes]:
        rowids = self.store.rowids_of(ids)
        by_rowid = self.store.thumbnails(list(rowids.values()))
        return {item_id: by_rowid[r] for item_id, r in rowids.items() if r in by_rowid}

    def user(self, user: str) -> tuple[np.ndarray | None, list[Any]]:
        return self.store.get_user(user)

    def user_count(self) -> int:
        return self.store.user_count()

    def vector_table(self) -> VectorTable:
        """Every item's vector, and a neighbour search on the collection's own index when its scores
        give true distances (not for raw inner products or compressed codes)."""
        self._follow_manifest(self.store.seq)
        rowid_chunks, vector_chunks = [], []
        for rowids, vectors in self.store.iter_item_vectors(self.dim):
            rowid_chunks.append(rowids)
            vector_chunks.append(vectors)
        rowids = np.concatenate(rowid_chunks) if rowid_chunks else np.empty(0, np.int64)
        vectors = np.concatenate(vector_chunks) if vector_chunks else np.empty((0, self.dim), np.float32)
        rows = self.store.rows_by_rowid(rowids.tolist())
        ids = [rows[int(r)]["id"] for r in rowids]
        uris = [rows[int(r)]["uri"] for r in rowids]
        index = self.index
        if self.metric == "ip" or is_compressed(index.factory) or not len(rowids) or self._passages_per_item() > 1:
            # (An index of passages gives no distances between documents.)
            return VectorTable(ids, vectors, uris, None)
        metric = self.metric

        def search(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            scores, labels = index.search(x, k, ef_search=max(128, 2 * k))
            # Euclidean distances: between unit vectors for cosine, negated scores for l2.
            dists = np.sqrt(np.maximum(2.0 - 2.0 * scores, 0)) if metric == "cosine" else -scores
            labels = np.where(labels >= 0, labels >> PASSAGE_BITS, -1)  # one passage an item: its rowid
            pos = np.minimum(np.searchsorted(rowids, labels), len(rowids) - 1)  # rowids are sorted
            pos = np.where(rowids[pos] == labels, pos, -1)
            dists = np.where(pos < 0, np.inf, dists)
            return dists.astype(np.float32), pos

        return VectorTable(ids, vectors, uris, search)

    # --- ranking -----------------------------------------------------------------------------------

    def allowed_passages(self, where: Any, seq: int | None = None) -> np.ndarray | None:
        """Passage ids of the items matching a metadata filter, or None when there is no filter.

        The SQL scan is cached per filter until the collection changes: repeated filters (a facet, a
        tenant) then cost nothing; any write, from any process, changes the sequence and empties it.
        """
        if where is None or where == {}:
            return None
        sql, params = compile_filter(where)
        if sql == MATCH_ALL:
            return None
        seq = self.store.seq if seq is None else seq
        key = (sql, repr(params))  # (scalars: repr tells 1, 1.0, True and '1' apart, and costs less than JSON)
        with self._lock:
            if self._filters_seq != seq:
                self._filters, self._filters_seq = {}, seq
            if key not in self._filters:
                if len(self._filters) >= FILTER_CACHE_SIZE:
                    self._filters.pop(next(iter(self._filters)))
                self._filters[key] = self.store.passage_ids_matching(sql, params)
            return self._filters[key]

    def knn(
        self,
        vectors: np.ndarray,
        k: int,
        where: Any = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[Ranking]:
        """The ``k`` best items for each query, each ranked by its best passage (keys: PassageKey)."""
        return self.knn_passages(vectors, k, where, exclude, ef_search, nprobe)[0]

    def nearest(
        self,
        vectors: np.ndarray,
        k: int,
        ef_search: int | None = None,
        nprobe: int | None = None,
        include: frozenset[str] = frozenset(),
        where: Any = None,
    ) -> list[list[Hit]]:
        """The ``k`` nearest items of each query as hits (see :meth:`_nearest`). An answer that ranked
        a row SQLite does not hold met another thread's write between its add to the index and its
        commit (or a delete between its commit and the index's): it is searched again with writes held
        off, rather than come back short of the row."""
        misses = self.store.misses
        found = self._nearest(vectors, k, ef_search, nprobe, include, where)
        if self.store.misses == misses:
            return found
        with self.without_writes():
            return self._nearest(vectors, k, ef_search, nprobe, include, where)

    def _nearest(
        self,
        vectors: np.ndarray,
        k: int,
        ef_search: int | None,
        nprobe: int | None,
        include: frozenset[str],
        where: Any,
    ) -> list[list[Hit]]:
        """Where every item is one passage of an uncompressed index, the index's answer (within the
        filter's matches, planned as :meth:`rowid_knn` plans them) is the ranking. Unfiltered and ids
        only: its positions name the items through an array of ids kept beside the index (or its
        rowids through the store's cache of ids), with no passage bookkeeping and no SQLite read, each
        of which costs as much as a small HNSW search itself. With fields to read, its passages are
        the ranking's keys and the hits are read in one query. Else :func:`nearest_by_knn`."""
        seq = self.store.seq
        index = self._index
        if self._direct_at != (seq, index):  # (the hot path: checked once per change, not per search)
            items, passages = self._counts(seq)
            index = self._index_at(seq)
            if items != passages or is_compressed(index.factory):
                return nearest_by_knn(self, vectors, k, ef_search, nprobe, include, where)
            self._direct_at = (seq, index)
        self._plan.value = None
        allowed = None if where is None else self.allowed_passages(where, seq)
        found = None if allowed is not None else index.search_direct(vectors, k, ef_search, nprobe)
        if found is None:  # a filter to plan, tombstones to skip, or nothing to search
            ranked = self.rowid_knn(vectors, k, allowed, ef_search, nprobe, seq=seq)
            if include:
                passages = [[p for p, _ in ranking[:k]] for ranking in ranked]
                scores = [[s for _, s in ranking[:k]] for ranking in ranked]
                return read_passage_hits(self.store, passages, scores, include)
            item_ids = self.store.item_ids
            return [
                id_hits(*found_only(item_ids([p >> PASSAGE_BITS for p, _ in r]), [s for _, s in r])) for r in ranked
            ]
        distances, positions, labels_of = found
        if include:
            scores = score_lists(self.metric, distances)
            return read_passage_hits(self.store, labels_of[positions].tolist(), scores, include)
        kept = self._ids_at  # (_position_ids's own first check, inline: a call less on the hot path)
        ids = kept[1] if kept is not None and kept[0] is labels_of else self._position_ids(labels_of)
        if ids is not None and len(positions) == 1:
            # One query, k results: its hits made in one pass of C loops (map), with no lists between.
            (ranked,), (row,) = positions.tolist(), distances.tolist()
            if -1 not in ranked:
                try:  # (not contextlib.suppress: its enter and exit are Python frames)
                    return [id_hits(map(ids.__getitem__, ranked), row_scores(self.metric, row))]
                except ValueError:  # a negative l2 distance: score_lists below
                    pass
        scores = score_lists(self.metric, distances)
        if ids is None:  # more items than ids kept in memory
            names = [self.store.item_ids(ranked) for ranked in (labels_of[positions] >> PASSAGE_BITS).tolist()]
        else:
            names = [list(map(ids.__getitem__, ranked)) for ranked in positions.tolist()]  # (-1, no result: None)
        return [id_hits(*found_only(ranked, row_scores)) for ranked, row_scores in zip(names, scores)]

    def _position_ids(self, labels_of: np.ndarray) -> list[str | None] | None:
        """The item id at each position of the index's inner index, with a trailing None (for
        position -1), as a list (a query's ten lookups in it cost less than one numpy call), for
        ``labels_of`` (:meth:`VectorIndex.search_direct`'s labels); None for more than
        :data:`IDS_CACHE_ITEMS` items, or while a position names a row not yet committed (another
        thread's write, between its add to the index and its commit). Made again when the labels
        change, from the positions that are new when the old labels are a prefix of the new ones (an
        index appends what is added)."""
        kept = self._ids_at
        if kept is not None and kept[0] is labels_of:
            return kept[1]
        size = len(labels_of) - 1
        if size > IDS_CACHE_ITEMS:
            return None
        start = 0
        if kept is not None and len(kept[0]) <= len(labels_of):
            start = len(kept[0]) - 1
            if not np.array_equal(kept[0][:start], labels_of[:start]):
                start = 0
        added = self.store.item_ids((labels_of[start:size] >> PASSAGE_BITS).tolist())
        if None in added:  # rows another thread's write has added to the index but not yet committed
            return None  # (not kept: the caller reads the ids and drops those it does not find)
        ids = kept[1][:start] if start else []
        ids += added
        ids.append(None)
        self._ids_at = (labels_of, ids)
        return ids

    def knn_passages(
        self,
        vectors: np.ndarray,
        k: int,
        where: Any = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[list[Ranking], list[np.ndarray]]:
        """:meth:`knn`, and for each query the scores of every passage it ranked, best first (what
        places a passage among several shards' passages)."""
        seq = self.store.seq  # read once: the index, the counts and the filter cache follow it
        allowed = self.allowed_passages(where, seq)
        skip = set(self.store.rowids_of(list(exclude)).values()) if exclude else set()
        if allowed is not None and skip:
            allowed = allowed[~np.isin(allowed >> PASSAGE_BITS, list(skip))]
        items, passages = self._counts(seq)
        per_item = passages / items if items else 1.0
        available = passages if allowed is None else len(allowed)
        # Excluded items' passages may take places in an unfiltered ranking: fetch that many more.
        wanted = k + (len(skip) * math.ceil(per_item) if allowed is None else 0)
        fetch = min(available, math.ceil(wanted * min(per_item, FETCH_GROWTH)))
        results: list[Ranking] = [[] for _ in range(len(vectors))]
        scores = [np.empty(0, np.float32) for _ in range(len(vectors))]
        pending = list(range(len(vectors)))
        while pending and fetch > 0:
            ranked = self.rowid_knn(vectors[pending], fetch, allowed, ef_search, nprobe, seq=seq)
            short = []
            for q, ranked_here in zip(pending, ranked):
                passages = ranked_here
                if skip:  # an excluded item's passages are not ranked at all
                    passages = [(p, s) for p, s in passages if p >> PASSAGE_BITS not in skip]
                results[q] = _best_per_item(passages, k, one_each=per_item == 1.0)
                scores[q] = np.array([s for _, s in passages], dtype=np.float32)
                if len(results[q]) < k and len(ranked_here) >= fetch and fetch < available:
                    short.append(q)  # more passages may hold more items
            pending, fetch = short, min(available, fetch * FETCH_GROWTH)
        return results, scores

    def rowid_knn(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        *,
        seq: int | None = None,
    ) -> list[list[tuple[int, float]]]:
        """k nearest passage ids and scores for each query row, best first, optionally within ``allowed``
        (a filter's matches: :func:`~latentsearch.backends.planner.plan_filtered` chooses how); ``seq``:
        the change sequence the caller read for this search."""
        ef_search, nprobe = check_tuning(ef_search, nprobe)  # every vector search of a collection passes here
        if seq is None:
            seq = self.store.seq
        index = self._index_at(seq)
        self._plan.value = None
        walk, plan, total = None, None, 0
        if allowed is not None:
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
            total = max(index.ntotal - len(index.tombstones), 1)
            plan = plan_filtered(
                len(allowed),
                total,
                k=k,
                factory=index.factory,
                dim=self.dim,
                ef_search=ef_search,
                nprobe=nprobe,
                nlist=index.nlist if index.factory.startswith("IVF") else 1,
                partition=index.partition_shape,
            )
            self._plan.value = plan
            if plan.kind == "exact":
                return self.exact_knn(queries, k, allowed, cache=True)
            if (
                plan.kind in ("index", "partition")
                and index.factory.startswith("HNSW")
                and not is_compressed(index.factory)
            ):
                sub = self.subindexes.get(seq, allowed)
                if sub is not None:
                    self._plan.value = subindex_plan(plan.matches, ef_search or DEFAULT_EF_SEARCH)
                    return self._complete(queries, k, allowed, sub.search(queries, k, ef_search))
                walk = time.perf_counter()
                if plan.kind == "partition":
                    found = index.search_partition(queries, k, allowed, plan.nprobe or 1)
                    if found is not None:
                        return self._filtered(index, plan, queries, k, allowed, found, walk, seq=seq, total=total)
                    # The index was rebuilt or reloaded since the plan: it walks.
                    self._plan.value = plan = replace(plan, kind="index", nprobe=None, lists=None)
            ef_search, nprobe = plan.ef_search or ef_search, plan.nprobe or nprobe
        if index.ntotal == 0:
            return [[] for _ in range(len(queries))]
        if not is_compressed(index.factory):  # every row as FAISS ranked it
            found = index.search_lists(queries, k, allowed=allowed, ef_search=ef_search, nprobe=nprobe)
            if allowed is None:
                return _ranked(found)
            return self._filtered(index, plan, queries, k, allowed, found, walk, seq=seq, total=total)
        scores, labels = index.search(queries, k * RERANK_FACTOR, allowed=allowed, ef_search=ef_search, nprobe=nprobe)
        results = []
        for qi in range(len(queries)):
            found = labels[qi] >= 0
            if allowed is not None and found.sum() < min(k, len(allowed)):
                results.append(self.exact_knn(queries[qi : qi + 1], k, allowed, cache=True)[0])
            else:  # re-ranked on the float vectors
                results.append(self.exact_knn(queries[qi : qi + 1], k, labels[qi][found])[0])
        return results

    def _filtered(
        self,
        index: VectorIndex,
        plan: Plan | None,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray,
        found: tuple[list[list[float]], list[list[int]]],
        started: float | None,
        *,
        seq: int,
        total: int,
    ) -> list[list[tuple[int, float]]]:
        """Rankings of a filtered search from the index's ``(scores, labels)`` lists; the time since
        ``started`` (an HNSW search's) counts towards a sub-index of these matches and, where the
        ``plan`` says a partition would pay, towards the index's filter partition (see SubIndexCache and
        Partitioner)."""
        if started is not None:
            seconds = time.perf_counter() - started
            self.subindexes.charge(
                seq, allowed, seconds, total=total, dim=self.dim, metric=self.metric, gather=self._float_vectors
            )
            if plan is not None and (plan.kind == "partition" or plan.wants_partition):
                index.charge_filtered(seconds)
        return self._complete(queries, k, allowed, _ranked(found))

    def _complete(
        self, queries: np.ndarray, k: int, allowed: np.ndarray, ranked: list[list[tuple[int, float]]]
    ) -> list[list[tuple[int, float]]]:
        """Rankings of a filtered search, each query whose graph search ran out of allowed neighbours
        answered exactly instead."""
        wanted = min(k, len(allowed))
        return [
            found if len(found) >= wanted else self.exact_knn(queries[qi : qi + 1], k, allowed, cache=True)[0]
            for qi, found in enumerate(ranked)
        ]

    def search_plan(self) -> str | None:
        """How this thread's last filtered vector search ran (None: it had no filter)."""
        plan = getattr(self._plan, "value", None)
        return plan.describe() if plan is not None else None

    def exact_knn(
        self, queries: np.ndarray, k: int, rowids: np.ndarray, *, cache: bool = False
    ) -> list[list[tuple[int, float]]]:
        """Exact k-NN among the given passage ids on their float vectors: those the index holds, else
        SQLite's. ``cache``: the ids are a filter's matches, whose vectors are kept in memory until
        the collection changes (a re-rank's candidates differ every query: not kept)."""
        import faiss

        rowids = np.asarray(rowids, dtype=np.int64)
        if len(rowids) > 1 and not bool(np.all(rowids[1:] > rowids[:-1])):  # a filter's matches come sorted
            rowids = np.unique(rowids)
        if cache:
            base = self._subsets.get(self.store.seq, rowids, self._float_vectors)
        else:
            base = self.store.passage_vectors(rowids, self.dim)
        depth, metric = min(k, len(rowids)), faiss_metric(self.metric)
        if len(queries) == 1:  # (FAISS would split one query's scan over threads: see one_thread)
            distances, positions = one_thread(faiss.knn, queries, base, depth, metric=metric)
        else:
            distances, positions = faiss.knn(queries, base, depth, metric=metric)
        scores = to_scores(self.metric, distances)
        return [
            [(int(rowids[p]), float(s)) for p, s in zip(positions[qi], scores[qi]) if p >= 0]
            for qi in range(len(queries))
        ]

    def _float_vectors(self, rowids: np.ndarray) -> np.ndarray:
        """Float vectors of passage ids: copied out of the index when it holds them, else read from SQLite
        in one pass."""
        held = self.index.stored_vectors(rowids)
        return held if held is not None else self.store.passage_vectors(rowids, self.dim)

    def lexical(self, match: str, k: int, where: Any = None, exclude: str | None = None) -> Ranking:
        return lexical_ranking(self.store, match, k, where, exclude)

    def hits(self, rankings: Sequence[Ranking], include: frozenset[str] = DEFAULT_INCLUDE) -> list[list[Hit | None]]:
        return read_hits(self.store, rankings, include)

    # --- housekeeping ------------------------------------------------------------------------------

    def compact(self, *, progress: ProgressFn | None = None) -> None:
        self.store.check_writable()
        with self._lock:
            index = self._index or self.new_index()
            index.build(self.store, progress=progress)
            # A compacted collection has its filter partition from its first filtered search, rather than
            # once its walks have paid for it; saved with the checkpoint below.
            index.build_partition(progress=progress)
            index.save()
            self._index = index

    def finish_bulk_load(self) -> None:
        with self._lock:
            self.index.keep_partition(now=True)

    def resize(self, shards: int, *, progress: ProgressFn | None = None) -> int:
        raise InvalidInputError(
            f"collection {self.name!r} is not sharded: create a sharded collection (shards=N) and add its items there"
        )

    def index_field(self, field: str) -> bool:
        from latentsearch.storage.filters import field_expression

        return self.store.create_field_index(field, field_expression(field))

    def drop_field_index(self, field: str) -> bool:
        return self.store.drop_field_index(field)

    def field_indexes(self) -> list[str]:
        return self.store.field_indexes()

    def info(self) -> dict[str, Any]:
        index = self.index
        return {
            "faiss_factory": index.factory,
            "index_vectors": index.ntotal,
            "passages": self.store.vector_count(),
            "tombstones": len(index.tombstones),
            "filter_partition_lists": index.partition_shape[0],
            "field_indexes": self.store.field_indexes(),
            "change_seq": self.store.seq,
        }

    def save(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.save()

    def close(self) -> None:
        """Checkpoint the index (raising what stops it) and close the store either way."""
        self.subindexes.close()
        try:
            if self._index is not None:
                # What the last writes started on the filter partition in the background is saved too
                # (a CLI command closes right after its write).
                self._index.partitioner.wait()
            self.save()  # (the filter partition too: closed after it)
        finally:
            if self._index is not None:
                self._index.close()
            self.store.close()


class _IndexFeeder:
    """Adds a write's vectors to the index in a thread while SQLite writes and commits them (FAISS and
    SQLite both release the GIL): the index's work overlaps the database's instead of following it.
    Started from inside the transaction, once the passage ids are known, and only when no other
    process wrote since the index last caught up (else the index replays SQLite after the commit)."""

    def __init__(self, index: VectorIndex, index_seq: int, vectors: np.ndarray) -> None:
        self.index, self.index_seq, self.vectors = index, index_seq, vectors
        self.started = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, seq: int, passage_ids: np.ndarray, replaced: np.ndarray) -> None:
        if seq != self.index_seq + 1:
            return
        self.started = True
        self._thread = threading.Thread(target=self._feed, args=(seq, passage_ids, replaced), daemon=True)
        self._thread.start()

    def _feed(self, seq: int, passage_ids: np.ndarray, replaced: np.ndarray) -> None:
        try:
            if len(replaced):
                self.index.remove(replaced)
            self.index.add(passage_ids, self.vectors, seq)
        except BaseException as exc:  # re-raised by join, in the writing thread
            self._error = exc

    def join(self, *, raising: bool = True) -> None:
        if self._thread is not None:
            self._thread.join()
        if raising and self._error is not None:
            raise self._error


def read_hits(
    store: Store, rankings: Sequence[Ranking], include: frozenset[str] = DEFAULT_INCLUDE
) -> list[list[Hit | None]]:
    """Hits for rankings of ``(rowid, score)`` with the fields ``include`` names, read in one SQLite
    query for all of them (:meth:`Store.hit_rows`); ``None`` for a row deleted between the ranking and
    the read. A key that names its passage (:class:`PassageKey`) is read through it, so a text hit
    gets its passage in the same query. (Hot: kept to one pass over the rows.)"""
    through_passage = "passage" in include
    passage_ids, rowids = set(), set()
    for ranking in rankings:
        for key, _ in ranking:
            if through_passage and isinstance(key, PassageKey):
                passage_ids.add(key.passage)
            else:
                rowids.add(int(key))
    by_passage = store.hit_rows(list(passage_ids), include, by_passage=True) if passage_ids else {}
    # A passage gone while its item stays (the item was rewritten since the ranking): the item alone.
    rowids.update(p >> PASSAGE_BITS for p in passage_ids if p not in by_passage)
    by_rowid = store.hit_rows(list(rowids), include, by_passage=False) if rowids else {}
    fields = _HitFields(include)
    out = []
    for ranking in rankings:
        hits: list[Hit | None] = []
        for key, score in ranking:
            row = by_passage.get(key.passage) if through_passage and isinstance(key, PassageKey) else None
            if row is not None:
                hits.append(fields.hit(row, float(score), key.passage, key.passage_score, key.passage_rank))
                continue
            row = by_rowid.get(int(key))
            hits.append(None if row is None else fields.hit(row, float(score)))
        out.append(hits)
    return out


def read_passage_hits(
    store: Store, passages: Sequence[Sequence[int]], scores: Sequence[Sequence[float]], include: frozenset[str]
) -> list[list[Hit]]:
    """:func:`read_hits` of passage rankings (ids, -1 for no result, and scores, best first) where
    every item is one passage, so each passage is its item's hit: no ranking objects to build, one
    read. A row gone since the ranking is left out."""
    through_passage = "passage" in include
    keys = {p for ranked in passages for p in ranked if p >= 0}
    if not through_passage:
        keys = {p >> PASSAGE_BITS for p in keys}
    rows = store.hit_rows(list(keys), include, by_passage=through_passage) if keys else {}  # (misses read sorted)
    fields = _HitFields(include)
    out = []
    for ranked, ranked_scores in zip(passages, scores):
        hits = []
        for rank, (passage, score) in enumerate(zip(ranked, ranked_scores), 1):
            row = rows.get(passage if through_passage else passage >> PASSAGE_BITS)
            if row is not None:
                hits.append(fields.hit(row, score, passage, score, rank) if through_passage else fields.hit(row, score))
        out.append(hits)
    return out


class _HitFields:
    """Reads hits out of :meth:`Store.hit_rows` rows of one ``include``."""

    __slots__ = ("text", "metadata", "vector")

    def __init__(self, include: frozenset[str]) -> None:
        self.text, self.metadata, self.vector = "text" in include, "metadata" in include, "vector" in include

    def hit(
        self, row: tuple[Any, ...], score: float, passage: int = -1, passage_score: float = 0.0, passage_rank: int = 0
    ) -> Hit:
        """The hit of ``row`` (with ``passage``: a row read through that passage, of its item's own)."""
        text = uri = metadata = vector = found = None
        at = 2
        if self.text:
            text, uri, at = row[2], row[3], 4
        if self.metadata:
            # A kept row's flat fields are copied (the copy is the hit's own); most items carry none.
            kept = row[at]
            metadata = kept.copy() if type(kept) is dict else {} if kept == "{}" else json.loads(kept)
            at += 1
        if self.vector:
            vector = np.frombuffer(row[at], dtype=np.float32)
            at += 1
        if passage >= 0 and row[at + 3] is not None:  # a text item's passage
            found = Passage(
                passage & PASSAGE_MASK, row[at], row[at + 1], row[at + 3], row[at + 2], passage_score, passage_rank
            )
        return Hit(row[1], score, text, uri, metadata, None, None, found, vector)


def lexical_ranking(store: Store, match: str, k: int, where: Any, exclude: str | None) -> Ranking:
    """BM25 over a store's passages: its ``k`` best items, each keyed at its best passage."""
    sql, params = compile_filter(where)
    skip = store.rowids_of([exclude]).get(exclude) if exclude else None
    return [
        (PassageKey(rowid, passage, score, rank), score)
        for rowid, passage, score, rank in store.lexical_search(match, k, sql, params, skip)
    ]


def _ranked(found: tuple[list[list[float]], list[list[int]]]) -> list[list[tuple[int, float]]]:
    """Rankings of ``(rowid, score)`` from an index search's score and label lists (-1: no result)."""
    scores, labels = found
    return [
        [(r, s) for r, s in zip(row_labels, row_scores) if r >= 0] for row_labels, row_scores in zip(labels, scores)
    ]


def _best_per_item(passages: list[tuple[int, float]], k: int, *, one_each: bool = False) -> Ranking:
    """The first ``k`` items of a passage ranking, each at its best passage. ``one_each``: every item
    has one passage, so every passage is a new item (the common case, kept to one pass)."""
    if one_each:
        return [
            (PassageKey(passage >> PASSAGE_BITS, passage, score, rank), score)
            for rank, (passage, score) in enumerate(passages[:k], 1)
        ]
    seen: set[int] = set()
    ranking: Ranking = []
    for rank, (passage, score) in enumerate(passages, 1):
        rowid = passage >> PASSAGE_BITS
        if rowid in seen:
            continue
        seen.add(rowid)
        ranking.append((PassageKey(rowid, passage, score, rank), score))
        if len(ranking) == k:
            break
    return ranking


def _item(row: dict[str, Any]) -> Item:
    return Item(
        id=row["id"],
        kind=row["kind"],
        text=row["text"],
        uri=row["uri"],
        metadata=row["metadata"],
        vector=row.get("vector"),
    )
