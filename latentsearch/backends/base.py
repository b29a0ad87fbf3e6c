"""The ``Backend`` protocol: what a :class:`~latentsearch.collection.Collection` asks of the place its
items live. Everything above it (validation, encoding, search, fusion, recommendations, outliers,
latent views, images) is written once, in the collection and the layers it uses; a backend only
stores, reads and ranks.

Inputs reaching a backend are already checked (ids are non-empty strings, vectors are float32 of the
right dimension and normalised, filters compile). Rankings are lists of ``(key, score)``, best first:
a key is the backend's own handle of an item (a rowid in one SQLite file, the item itself on shards),
opaque above, hashable, and the same for one item in every ranking of a call, so fusion can join them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latentsearch.records import DEFAULT_INCLUDE, Hit, Item
from latentsearch.storage.store import PassageSpan

ProgressFn = Callable[[int, int], None]
Key = Hashable
Ranking = list[tuple[Key, float]]
# A neighbour search among fitted items: (queries, k) -> (Euclidean distances, positions), -1 = none.
NeighbourSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class WriteBatch:
    """Checked items ready to store: one entry per id in every list; ``vectors`` is (n, dim) float32."""

    ids: list[str]
    kinds: list[str]
    texts: list[str | None]
    uris: list[str | None]
    metadata: list[dict[str, Any]]
    vectors: np.ndarray
    thumbnails: list[bytes | None] | None = None
    # Each item's passages as (start, end, page) spans and, for items of several, their vectors
    # (n, dim); None: every item is one passage, its own vector.
    passages: list[list[PassageSpan] | None] | None = None
    passage_vectors: list[np.ndarray | None] | None = None

    def subset(self, positions: Sequence[int]) -> WriteBatch:
        """The items at ``positions`` (what one shard stores)."""
        pick = list(positions)

        def some(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[p] for p in pick]

        return WriteBatch(
            [self.ids[p] for p in pick],
            [self.kinds[p] for p in pick],
            [self.texts[p] for p in pick],
            [self.uris[p] for p in pick],
            [self.metadata[p] for p in pick],
            self.vectors[pick],
            some(self.thumbnails),
            some(self.passages),
            some(self.passage_vectors),
        )

    def index_vectors(self) -> np.ndarray:
        """Every passage's vector, item by item: what the index adds for this batch."""
        if self.passage_vectors is None:
            return self.vectors
        parts = [
            own if own is not None and len(own) > 1 else self.vectors[i : i + 1]
            for i, own in enumerate(self.passage_vectors)
        ]
        return np.concatenate(parts) if parts else self.vectors


@dataclass
class VectorTable:
    """Every item's id, vector and uri, in the backend's order, and a neighbour search among them
    (``None``: the backend has none that gives true distances; the caller builds one on the array)."""

    ids: list[str]
    vectors: np.ndarray
    uris: list[str | None]
    search: NeighbourSearch | None


class EncoderPool(Protocol):
    """Encoding spread over workers (the sharded backend's Ray actors)."""

    def encode(self, inputs: list[Any], *, batch_size: int, progress: ProgressFn | None) -> np.ndarray: ...

    def load(self, *, background: bool) -> None: ...


class Backend(Protocol):
    """Storage writes and reads, vector k-NN over passages with a filter, lexical search, counts, the change
    sequence and learned users. Implemented by :class:`~latentsearch.backends.local.LocalBackend`
    (SQLite + FAISS in one folder) and :class:`~latentsearch.backends.sharded.ShardedBackend`."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def read_only(self) -> bool: ...

    # writes (ids checked; add's ids known to be new, delete's and update's known to exist)
    def write(self, batch: WriteBatch, *, upsert: bool) -> int: ...

    def delete(self, ids: list[str]) -> int: ...

    def update_metadata(self, updates: dict[str, dict[str, Any]]) -> int: ...

    def put_users(self, users: Sequence[tuple[str, np.ndarray, list[Any]]], *, replace_all: bool) -> None: ...

    # reads
    def count(self) -> int: ...

    def seq(self) -> int: ...

    def vectors_seq(self) -> int: ...

    def existing(self, ids: list[str]) -> set[str]: ...

    def get(self, ids: list[str], *, with_vectors: bool) -> dict[str, Item]: ...

    def vectors_of(self, ids: list[str]) -> dict[str, np.ndarray]: ...

    def matching_vectors(self, where: Any) -> tuple[list[str], np.ndarray]: ...

    def iter_items(self, *, with_vectors: bool = False) -> Iterator[Item]: ...

    def thumbnails(self, ids: list[str]) -> dict[str, bytes]: ...

    def user(self, user: str) -> tuple[np.ndarray | None, list[Any]]: ...

    def user_count(self) -> int: ...

    def vector_table(self) -> VectorTable: ...

    # ranking
    def knn(
        self,
        vectors: np.ndarray,
        k: int,
        where: Any = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[Ranking]: ...

    def nearest(
        self,
        vectors: np.ndarray,
        k: int,
        ef_search: int | None = None,
        nprobe: int | None = None,
        include: frozenset[str] = frozenset(),
        where: Any = None,
    ) -> list[list[Hit]]:
        """The ``k`` nearest items to each query row (among those matching ``where``) with the fields
        ``include`` names (ids and scores only by default): a vector search with nothing to exclude,
        fuse or explain, answered as :meth:`knn` then :meth:`hits` would (:func:`nearest_by_knn`) by
        the shortest path the backend has."""
        ...

    def lexical(self, match: str, k: int, where: Any = None, exclude: str | None = None) -> Ranking: ...

    def search_plan(self) -> str | None:
        """How this thread's last filtered vector search ran, for ``explain`` (None: no filter)."""
        ...

    def hits(self, rankings: Sequence[Ranking], include: frozenset[str] = DEFAULT_INCLUDE) -> list[list[Hit | None]]:
        """The hits of each ranking, in order, carrying the fields ``include`` names (see
        :func:`~latentsearch.records.check_include`); ``None`` where an item vanished since it was ranked."""
        ...

    def passages(self, ids: list[str]) -> dict[str, list[PassageSpan]]:
        """Each item's passages, in order (items that are not stored are left out)."""
        ...

    def passage_count(self) -> int:
        """Number of passages (the vectors searched): at least one per item."""
        ...

    def passage_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        """Each item's passage vectors, ``(passages, dim)`` in passage order (unknown items left out)."""
        ...

    def write_manifest(self, values: dict[str, Any]) -> None:
        """Set manifest entries (``None`` removes one), durably, and in :attr:`manifest` too."""
        ...

    # housekeeping
    def prepare_search(self) -> None: ...

    def without_writes(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which no write of this process is in flight: entered once the writes under way
        have committed and reached the index, and holding new ones off (a search whose ranking named
        an item SQLite lacks runs again inside it)."""
        ...

    def encoder_pool(self) -> EncoderPool | None: ...

    def compact(self, *, progress: ProgressFn | None = None) -> None: ...

    def finish_bulk_load(self) -> None:
        """After a load in several writes: bring what those writes keep in the background (the filter
        partition) up to date now, as one bulk write of them all would have."""
        ...

    def resize(self, shards: int, *, progress: ProgressFn | None = None) -> int: ...

    def index_field(self, field: str) -> bool: ...

    def drop_field_index(self, field: str) -> bool: ...

    def field_indexes(self) -> list[str]: ...

    def info(self) -> dict[str, Any]: ...

    def save(self) -> None: ...

    def close(self) -> None: ...


def nearest_by_knn(
    backend: Backend,
    vectors: np.ndarray,
    k: int,
    ef_search: int | None = None,
    nprobe: int | None = None,
    include: frozenset[str] = frozenset(),
    where: Any = None,
) -> list[list[Hit]]:
    """:meth:`Backend.nearest` through the general path (rankings, then their hits read)."""
    found = backend.hits(backend.knn(vectors, k, where, (), ef_search, nprobe), include)
    return [[hit for hit in hits if hit is not None] for hits in found]
