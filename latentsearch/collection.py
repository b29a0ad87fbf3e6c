"""The public ``Collection``: one class for every kind of collection, over a
:class:`~latentsearch.backends.base.Backend` (one folder, or shards on Ray).

Validation, encoding, search, recommendations, outliers, latent views and images are written here
and in the layers below it (search/, analysis/), once; the backend only stores, reads and ranks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.analysis.latent import LatentSpaceMethods
from latentsearch.analysis.layers import layer_fields
from latentsearch.analysis.outliers import FitData, OutlierMethods, ReconstructionScorer, make_scorer
from latentsearch.analysis.recommend import RecommendMethods
from latentsearch.backends import holds_local_collection, open_backend
from latentsearch.backends.base import Backend, PassageSpan, ProgressFn, WriteBatch
from latentsearch.encoders import Encoder, get_encoder
from latentsearch.encoders.passages import DEFAULT_MAX_PASSAGES, PassageSettings, settings_for, split_texts
from latentsearch.encoders.text import check_texts as check_encoder_texts
from latentsearch.errors import (
    ConflictError,
    EncoderMismatchError,
    InvalidInputError,
    ItemNotFoundError,
    LatentSearchError,
)
from latentsearch.fileio import read_only_error
from latentsearch.index.faiss_index import LOCK_FILE
from latentsearch.limits import MAX_EF_SEARCH, MAX_K, check_text, check_tuning
from latentsearch.records import Hits, Item, Passage, check_include
from latentsearch.search import encoder_tuning
from latentsearch.search.encoder_tuning import EncoderTuningReport, TrainingPair
from latentsearch.search.engine import search, search_batch
from latentsearch.search.fusion import DEFAULT_FUSION, Fusion
from latentsearch.search.request import SearchRequest, check_k, is_image
from latentsearch.search.tuning import DEFAULT_SAMPLE, LabelledQuery, TuningReport, tune
from latentsearch.storage.backup import backup_folder
from latentsearch.storage.filters import Filter, compile_filter, field_expression
from latentsearch.tables import (
    MetadataKinds,
    TableColumns,
    is_table,
    items_schema,
    items_table,
    metadata_structs,
    table_columns,
)
from latentsearch.validation import (
    check_ids,
    check_metadata,
    check_metadata_updates,
    check_pages,
    check_texts,
    prepare_vectors,
    query_checked_after,
)

log = logging.getLogger("latentsearch")


def _check_copy(folder: Path) -> None:
    """Open a copied collection and count it (a sharded copy's shards were each checked by SQLite)."""
    if holds_local_collection(folder):
        backend = open_backend(folder)
        try:
            backend.count()
        finally:
            backend.close()


class Collection(LatentSpaceMethods, OutlierMethods, RecommendMethods):
    """A named collection of items with vectors, metadata and an index.

    Get one from a connection (``latentsearch.connect(home).create(name)`` / ``.open(name)``, or the
    shortcuts ``latentsearch.create`` / ``latentsearch.open``). Writes are durable when they return,
    one transaction per call (per shard on sharded collections); the index follows. Use it as a
    context manager, or call :meth:`close`, to checkpoint the index on the way out.
    """

    def __init__(self, backend: Backend, *, encoder: str | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.path: Path = backend.path
        self.manifest: dict[str, Any] = backend.manifest
        if encoder is not None and encoder != self.manifest["encoder"]:
            backend.close()
            raise EncoderMismatchError(
                f"collection {self.name!r} was built with encoder {self.manifest['encoder']!r}, not "
                f"{encoder!r}: open it without an encoder, or create a new collection for {encoder!r}"
            )
        self._encoder: Encoder | None = None
        self._encoder_spec = ""  # the manifest's encoder when it was loaded
        self._encoder_lock = threading.Lock()
        self._scorer_cache: tuple[Any, Any] | None = None

    # --- properties ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.manifest["dim"])

    @property
    def metric(self) -> str:
        """``cosine`` (vectors L2-normalised, inner product), ``ip`` or ``l2``."""
        return str(self.manifest["metric"])

    @property
    def modality(self) -> str:
        """What the encoder reads: ``text``, ``image``, ``joint`` (both) or ``vector``."""
        return str(self.manifest.get("modality") or "vector")

    @property
    def read_only(self) -> bool:
        """True when the collection's files cannot be written: reads work, writes raise ReadOnlyError."""
        return self.backend.read_only

    @property
    def encoder_name(self) -> str:
        """The encoder pinned in the manifest."""
        return str(self.manifest["encoder"])

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder in this process, loaded on first use and checked against the manifest
        (and loaded again once the manifest names another: re-encoded in place by another process)."""
        with self._encoder_lock:
            if self._encoder is None or self._encoder_spec != self.encoder_name:
                encoder = get_encoder(self.encoder_name)
                pinned = self.manifest.get("weights_hash")
                if pinned and encoder.weights_hash != pinned:
                    raise EncoderMismatchError(
                        f"the weights of encoder {self.encoder_name!r} changed since collection {self.name!r} "
                        f"was built (sha256 {encoder.weights_hash[:12]}… vs {pinned[:12]}…): restore the "
                        "original model, or rebuild the collection with the new one"
                    )
                self._encoder, self._encoder_spec = encoder, self.encoder_name
            return self._encoder

    def check_encoder(self) -> None:
        """Fail now, with the encoder's own error, if the collection's model is missing or changed
        (on sharded collections the encoder workers report it when they first encode)."""
        if self.backend.encoder_pool() is None:
            self.encoder  # noqa: B018

    def load_encoder(self, *, background: bool = False) -> threading.Thread | None:
        """Load the collection's model now rather than on the first encode (the first time on a
        machine, ``minilm`` also exports its ONNX graph). With ``background``, load it in a daemon
        thread while the caller goes on, for example opening the index, and return the thread; an
        error there is left for the first call that needs the model, which raises it. On sharded
        collections this starts the encoder workers."""
        if self.encoder_name == "precomputed":
            return None
        pool = self.backend.encoder_pool()
        if pool is not None:
            pool.load(background=background)
            return None

        def load() -> None:
            loader = getattr(self.encoder, "load", None)  # optional in the Encoder protocol
            if loader is not None:
                loader()

        if not background:
            load()
            return None

        def quietly() -> None:
            with contextlib.suppress(Exception):  # raised again, in the caller's thread, on first use
                load()

        thread = threading.Thread(target=quietly, name=f"load-encoder-{self.name}", daemon=True)
        thread.start()
        return thread

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, encoder={self.encoder_name!r}, dim={self.dim}, path={str(self.path)!r})"

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ----------------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str] | Any,
        texts: Sequence[str] | None = None,
        *,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        uris: Sequence[str | None] | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
        pages: Sequence[Sequence[int] | None] | None = None,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
        id_field: str = "id",
        text_field: str = "text",
        vector_field: str = "vector",
    ) -> int:
        """Add new items in one transaction; an id that already exists is an error.

        Give ``texts`` (encoded by the collection's encoder), image file ``uris`` (for image
        collections: encoded, with a thumbnail kept beside the item) and/or ``vectors`` (used as
        given). A text longer than the encoder's window is split into passages, each encoded and
        searched (see :meth:`passages`); ``pages`` gives, per text, the character offsets at which its
        pages start (first 0), so each passage knows its page. ``progress(done, total)`` is called
        while encoding, counting passages. Returns the number of items added. An HNSW index's filter
        partition follows the writes: a call of 10,000 vectors or more brings it up to date before it
        returns, a smaller one in the background (see :meth:`finish_bulk_load`).

        ``ids`` may instead be a table (a pandas or polars DataFrame, or a pyarrow Table): its
        ``id_field`` column holds the ids, ``text_field`` the texts and ``vector_field`` the vectors
        (either or both), a ``uri`` column the URIs, every other column the metadata.
        """
        columns = (id_field, text_field, vector_field)
        return self._write(
            ids, texts, vectors, metadata, uris, thumbnails, pages, batch_size, progress, columns, upsert=False
        )

    def upsert(
        self,
        ids: Sequence[str] | Any,
        texts: Sequence[str] | None = None,
        *,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        uris: Sequence[str | None] | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
        pages: Sequence[Sequence[int] | None] | None = None,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
        id_field: str = "id",
        text_field: str = "text",
        vector_field: str = "vector",
    ) -> int:
        """Add items, replacing those whose id exists (all of a replaced item's passages go with it, in
        the same transaction). Same arguments as :meth:`add`, a table among them."""
        columns = (id_field, text_field, vector_field)
        return self._write(
            ids, texts, vectors, metadata, uris, thumbnails, pages, batch_size, progress, columns, upsert=True
        )

    @staticmethod
    def _table_items(
        table: Any,
        texts: Any,
        vectors: Any,
        metadata: Any,
        uris: Any,
        id_field: str,
        text_field: str,
        vector_field: str,
    ) -> TableColumns:
        if texts is not None or vectors is not None or metadata is not None or uris is not None:
            raise InvalidInputError(
                "a table holds the texts, vectors and metadata itself: name its columns with text_field, "
                "vector_field (the other columns are metadata) instead of passing texts, vectors or metadata"
            )
        return table_columns(table, id_field=id_field, text_field=text_field, vector_field=vector_field)

    def _write(
        self,
        ids: Sequence[str],
        texts: Sequence[str] | None,
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None,
        uris: Sequence[str | None] | None,
        thumbnails: Sequence[bytes | None] | None,
        pages: Sequence[Sequence[int] | None] | None,
        batch_size: int,
        progress: ProgressFn | None,
        columns: tuple[str, str, str],
        *,
        upsert: bool,
    ) -> int:
        if is_table(ids):  # a DataFrame or Arrow table: its (id, text, vector) columns and the rest
            ids, texts, vectors, metadata, uris = self._table_items(ids, texts, vectors, metadata, uris, *columns)
        ids = check_ids(ids)
        n = len(ids)
        if n == 0:
            return 0
        texts_list = check_texts("texts", texts, n)
        uris_list = check_texts("uris", uris, n)
        meta_list = check_metadata(metadata, n)
        page_list = check_pages(pages, texts_list, n)
        images = uris_list is not None and texts_list is None and self.modality in ("image", "joint")
        if vectors is not None:
            matrix = self.prepare_vectors(vectors, expected=n)
        elif texts_list is None and not images:
            raise InvalidInputError("nothing to encode: pass texts, image uris, or vectors for the items")
        if not upsert:  # before encoding: a conflict should not cost the model's time
            self._refuse_existing(ids)
        spans: list[list[PassageSpan] | None] | None = None
        own: list[np.ndarray | None] | None = None
        if vectors is None and texts_list is not None and hasattr(self.encoder, "token_spans"):
            matrix, spans, own = self._encode_passages(ids, texts_list, page_list, batch_size, progress)
        elif vectors is None:
            inputs = texts_list if texts_list is not None else [Path(u) for u in uris_list]  # a Path is an image
            matrix = self.encode(inputs, batch_size=batch_size, progress=progress)
        elif texts_list is not None and page_list is not None:  # given vectors: each text is one passage
            spans = [[(0, len(t), 1)] if p else None for t, p in zip(texts_list, page_list)]
        kind = "text" if texts_list is not None else "image" if images else "uri" if uris_list else "vector"
        if kind == "image" and thumbnails is None:
            from latentsearch.encoders.image import thumbnail_bytes

            thumbnails = [thumbnail_bytes(u) for u in uris_list]
        batch = WriteBatch(
            ids,
            [kind] * n,
            texts_list or [None] * n,
            uris_list or [None] * n,
            meta_list,
            matrix,
            list(thumbnails) if thumbnails is not None else None,
            spans,
            own,
        )
        return self.backend.write(batch, upsert=upsert)

    @property
    def passage_settings(self) -> PassageSettings:
        """How this collection splits long texts (the window is its encoder's; see
        :mod:`latentsearch.encoders.passages`)."""
        options = self.manifest.get("passages") or {}
        window = int(self.encoder.window)  # type: ignore[attr-defined]
        return settings_for(window, options.get("stride"), int(options.get("max_passages", DEFAULT_MAX_PASSAGES)))

    def _encode_passages(
        self,
        ids: list[str],
        texts: list[str],
        pages: list[list[int] | None] | None,
        batch_size: int,
        progress: ProgressFn | None,
    ) -> tuple[np.ndarray, list[list[PassageSpan] | None], list[np.ndarray | None]]:
        """Split texts into passages, encode every passage, and give each text the normalised mean of
        its passages' vectors (one passage: its vector). Returns the item vectors, each item's spans
        and, for items of several passages, their vectors."""
        check_encoder_texts(texts, encoder=self.encoder_name)  # a missing or empty text, by its own number
        settings = self.passage_settings
        split, cut = split_texts(texts, self.encoder.token_spans, settings, pages)  # type: ignore[attr-defined]
        if cut:
            log.warning(
                "%d of %d texts are longer than the cap of %d passages (first: %r): only their first %d "
                "passages are searchable; create the collection with a higher --max-passages to index them whole",
                len(cut),
                len(texts),
                settings.max_passages,
                ids[cut[0]],
                settings.max_passages,
            )
        pieces = [text[span.start : span.end] for text, spans in zip(texts, split) for span in spans]
        encoded = self.encode(pieces, batch_size=batch_size, progress=progress)
        matrix = np.empty((len(texts), self.dim), np.float32)
        own: list[np.ndarray | None] = []
        at = 0
        for position, spans in enumerate(split):
            block = encoded[at : at + len(spans)]
            at += len(spans)
            matrix[position] = block.mean(axis=0) if len(spans) > 1 else block[0]
            own.append(block if len(spans) > 1 else None)
        spans_out: list[list[PassageSpan] | None] = [[(s.start, s.end, s.page) for s in spans] for spans in split]
        return self.prepare_vectors(matrix, expected=len(texts)), spans_out, own

    def _refuse_existing(self, ids: list[str]) -> None:
        present = self.backend.existing(ids)
        if present:
            first = next(i for i in ids if i in present)
            raise ConflictError(
                f"id {first!r} already exists in the collection ({len(present)} of the ids do): "
                "use upsert to replace items, or pick new ids"
            )

    def _require(self, ids: list[str], consequence: str) -> None:
        """Raise ItemNotFoundError (nothing changed) unless every id exists."""
        present = self.backend.existing(ids)
        missing = [i for i in ids if i not in present]
        if missing:
            raise ItemNotFoundError(
                f"unknown id {missing[0]!r} in collection {self.name!r} ({len(missing)} of {len(ids)} ids "
                f"not found){consequence}"
            )

    def update_metadata(self, updates: Mapping[str, Mapping[str, Any]]) -> int:
        """Merge fields into items' metadata by id: ``{"doc-1": {"reviewed": True}}``, as a JSON merge
        patch (RFC 7396: nested objects merge too, a ``None`` value removes the field). All or nothing:
        an unknown id or a non-JSON value changes nothing. Returns the number of items updated."""
        ids, fields = check_metadata_updates(updates)
        if not ids:
            return 0
        self._require(ids, ": nothing was updated")
        return self.backend.update_metadata(dict(zip(ids, fields)))

    def delete(self, ids: Sequence[str]) -> int:
        """Delete items by id in one transaction; an unknown id is an error and deletes nothing."""
        ids = list(dict.fromkeys(check_ids(ids, allow_duplicates=True)))
        if not ids:
            return 0
        self._require(ids, ": nothing was deleted")
        return self.backend.delete(ids)

    def backup(self, dest: str | Path, *, on_file: Callable[[str], None] | None = None) -> Path:
        """Copy the collection into the new folder ``dest``, consistently while writers run: its
        databases through SQLite's online backup (one snapshot each), the index beside them checkpointed
        first (on open it catches up with what was written since). The copy appears only when complete
        and is checked by opening it. ``on_file(path)`` is called as each file is copied. Restore it with
        :meth:`~latentsearch.connection.Connection.restore` (or open the folder where it lies)."""
        dest = Path(dest)
        if not self.read_only:
            self.save()
        backup_folder(self.path, dest, on_file=on_file, lock_name=LOCK_FILE, verify=_check_copy)
        return dest

    def finish_bulk_load(self) -> None:
        """After adding items in several calls (a file's ingest writes 2,048 at a time): bring the
        filter partition (HNSW, from 10,000 vectors), which smaller writes keep in the background, up
        to date now, as one ``add`` of them all would have, so that filtered searches use all of it
        from the first. Quick where the writes kept it already; a no-op where nothing is due."""
        self.backend.finish_bulk_load()

    def compact(self, *, progress: ProgressFn | None = None) -> None:
        """Rebuild the index from the stored vectors (drops HNSW tombstones, retrains IVF/PQ), build
        its filter partition (HNSW, 10,000 vectors or more: filtered searches use it from the first)
        and checkpoint both; on shards, every shard's. ``progress(done, total)`` follows the index's
        vectors as they are rebuilt, then, where a partition is built, again from 0 as they are
        assigned to its lists."""
        self.backend.compact(progress=progress)

    def resize(self, shards: int, *, progress: ProgressFn | None = None) -> int:
        """Change a sharded collection's number of shards, moving every item whose shard changes;
        returns the number moved. An interruption leaves an item in two shards (fixed by running it
        again), never in none."""
        return self.backend.resize(shards, progress=progress)

    def save(self) -> None:
        """Checkpoint the index to disk if it changed (the stored items are already durable)."""
        self.backend.save()

    def close(self) -> None:
        """Checkpoint the index and close the collection. A checkpoint that cannot be written (a full
        disk) is logged, not raised: every acknowledged write is stored and the next open catches up."""
        try:
            self.backend.close()
        except LatentSearchError as exc:
            log.warning("%s (the index is caught up from SQLite on the next open)", exc)

    # --- metadata field indexes ----------------------------------------------------------------

    def index_field(self, field: str) -> bool:
        """Index a metadata field (``"lang"``, ``"author.name"``) so filters on it read an SQLite index
        instead of parsing every item's JSON: worth it for fields filtered often in large collections.
        Returns False when the field was already indexed. Takes effect for every process."""
        field_expression(field)  # a malformed name is refused before any shard sees it
        return self.backend.index_field(field)

    def drop_field_index(self, field: str) -> None:
        """Remove a metadata field's index (filters on the field keep working, by scanning)."""
        field_expression(field)  # the same one-line error for a malformed name
        if not self.backend.drop_field_index(field):
            raise InvalidInputError(
                f"field {field!r} has no index in collection {self.name!r}; indexed: "
                f"{', '.join(self.backend.field_indexes()) or 'none'}"
            )

    # --- reads -----------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of items."""
        return self.backend.count()

    @property
    def seq(self) -> int:
        """The change sequence: it grows with every write, from any process (caches are keyed on it)."""
        return self.backend.seq()

    @property
    def vectors_seq(self) -> int:
        """Like :attr:`seq`, but only adds, upserts and deletes move it, not metadata updates."""
        return self.backend.vectors_seq()

    def get(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Item]:
        """Items by id, in the order given; an unknown id is an error."""
        ids = check_ids(ids, allow_duplicates=True)
        found = self.backend.get(list(dict.fromkeys(ids)), with_vectors=with_vectors)
        self._check_found(ids, found)
        return [found[i] for i in ids]

    def _check_found(self, ids: list[str], found: Mapping[str, Any]) -> None:
        missing = [i for i in ids if i not in found]
        if missing:
            raise ItemNotFoundError(f"unknown id {missing[0]!r} in collection {self.name!r}")

    def passages(self, item_id: str) -> list[Passage]:
        """A document's passages, in order: what vector search ranks it by (one for a short text or a
        non-text item). An unknown id is an error."""
        item = self.get([item_id])[0]
        spans = self.backend.passages([item_id]).get(item_id) or [(0, len(item.text or ""), None)]
        return [Passage.of(item.text or "", index, span) for index, span in enumerate(spans)]

    def passage_count(self) -> int:
        """Number of passages: the vectors vector search ranks (at least one per item)."""
        return self.backend.passage_count()

    def thumbnails(self, ids: Sequence[str]) -> dict[str, bytes]:
        """JPEG thumbnails of image items by id (items without one, and unknown ids, are left out)."""
        return self.backend.thumbnails(list(dict.fromkeys(check_ids(ids, allow_duplicates=True))))

    def items(self) -> list[Item]:
        """Every item (without vectors), in insertion order (shard by shard on sharded collections)."""
        return list(self.backend.iter_items())

    def iter_items(self, *, with_vectors: bool = False) -> Iterator[Item]:
        """Every item, in insertion order, read in batches (a collection larger than memory streams);
        ``with_vectors``: each with its own vector (a document's: the mean of its passages')."""
        return self.backend.iter_items(with_vectors=with_vectors)

    def to_arrow(self, *, vectors: bool = False, flatten: bool = True) -> Any:
        """The items as a pyarrow Table: ``id``, ``text``, ``uri``, the metadata (a column per field
        with ``flatten``, else one ``metadata`` column of structs) and, with ``vectors``, ``vector``
        (fixed-size lists of float32). Needs pyarrow (``pip install 'latentsearch[tables]'``)."""
        items = list(self.iter_items(with_vectors=vectors))
        kinds = MetadataKinds()
        if flatten:
            kinds.see([i.metadata for i in items])
        table = items_table(items, items_schema(kinds, dim=self.dim, vectors=vectors), kinds if flatten else None)
        if not flatten:
            table = table.append_column("metadata", metadata_structs([i.metadata for i in items]))
            if vectors:  # the vectors stay last
                table = table.select([n for n in table.column_names if n != "vector"] + ["vector"])
        return table

    def to_pandas(self, *, vectors: bool = False, flatten: bool = True) -> Any:
        """The items as a pandas DataFrame (see :meth:`to_arrow`; vectors as numpy arrays). Needs pandas
        and pyarrow."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise InvalidInputError("to_pandas needs pandas: pip install 'latentsearch[tables]'") from None
        return self.to_arrow(vectors=vectors, flatten=flatten).to_pandas()

    def info(self) -> dict[str, Any]:
        """A summary: name, path, count (of documents), passages, encoder, dim, metric, modality, index
        spec, passage settings, derived metadata :attr:`layers`, and what the backend adds (the FAISS
        factory in use, tombstones, field indexes; shard sizes)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "count": self.count(),
            "passage_settings": self.manifest.get("passages") or {"stride": None, "max_passages": DEFAULT_MAX_PASSAGES},
            "encoder": self.encoder_name,
            "dim": self.dim,
            "metric": self.metric,
            "modality": self.modality,
            "index": self.manifest["index"],
            "created_at": self.manifest.get("created_at"),
            "search_fusion": self.search_fusion.to_dict(),
            "tuned": bool(self.manifest.get("search")),
            "layers": self.layers,
            **self.backend.info(),
        }

    # --- vectors ---------------------------------------------------------------------------------

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64, progress: ProgressFn | None = None) -> np.ndarray:
        """Encode inputs with the collection's encoder, in batches, checked like user vectors."""
        inputs = list(inputs)
        pool = self.backend.encoder_pool()
        if pool is not None:
            matrix = pool.encode(inputs, batch_size=batch_size, progress=progress)
            return self.prepare_vectors(matrix, expected=len(inputs))
        # Batches of similar length pad less: encode longest first, then restore the input order.
        order = np.arange(len(inputs))
        if inputs and all(isinstance(x, str) for x in inputs):
            order = np.argsort([-len(x) for x in inputs], kind="stable")
        parts = []
        for start in range(0, len(inputs), batch_size):
            batch = [inputs[i] for i in order[start : start + batch_size]]
            parts.append(self.encoder.encode(batch, batch_size=batch_size))
            if progress:
                progress(min(start + batch_size, len(inputs)), len(inputs))
        matrix = np.empty((len(inputs), self.dim), np.float32)
        if parts:
            matrix[order] = np.concatenate(parts)
        return self.prepare_vectors(matrix, expected=len(inputs))

    def prepare_vectors(self, vectors: Any, *, expected: int | None = None) -> np.ndarray:
        """Check vectors (shape, dimension, finite) and normalise them for cosine collections."""
        return prepare_vectors(vectors, dim=self.dim, metric=self.metric, name=self.name, expected=expected)

    def matching_vectors(self, where: Filter | str | None = None) -> tuple[list[str], np.ndarray]:
        """Ids and stored vectors of the items matching ``where`` (every item without it), in insertion
        order (shard by shard on sharded collections)."""
        compile_filter(where)  # refused here, before any shard sees it
        return self.backend.matching_vectors(where)

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of items by id; an unknown id is an error."""
        ids = check_ids(ids, allow_duplicates=True)
        found = self.backend.vectors_of(list(dict.fromkeys(ids)))
        self._check_found(ids, found)
        return np.stack([found[i] for i in ids]) if ids else np.empty((0, self.dim), np.float32)

    @property
    def layers(self) -> dict[str, dict[str, Any]]:
        """The derived metadata layers written into the items (``clusters``, ``outliers``): each with
        its ``fields`` and how it was made (see :mod:`latentsearch.analysis.layers`)."""
        return dict(self.manifest.get("layers") or {})

    @property
    def layer_fields(self) -> frozenset[str]:
        """Metadata fields of every layer: left out of result tables and the web page unless asked."""
        return layer_fields(self.manifest)

    # --- search ----------------------------------------------------------------------------------

    def search(
        self,
        query: str | np.ndarray | Sequence[float] | SearchRequest | None = None,
        *,
        k: int = 10,
        where: Filter | str | None = None,
        like: str | None = None,
        mode: str = "auto",
        fusion: str | None = None,
        alpha: float | None = None,
        rrf_k: int = 60,
        explain: bool = False,
        ef_search: int | None = None,
        nprobe: int | None = None,
        include: Sequence[str] | None = None,
    ) -> Hits:
        """Top-``k`` items for a text, an image, a vector, or an item (``like=ID``, itself excluded);
        or run a :class:`~latentsearch.search.request.SearchRequest` given as ``query``.

        ``mode``: ``auto`` (the default: hybrid for a text query, vector for an image, a vector or
        ``like``), ``vector`` (k-NN on the encoder's vectors), ``lexical`` (BM25 over the text, SQLite
        FTS5) or ``hybrid`` (both, fused). Fused searches use the collection's fusion
        (:attr:`search_fusion`: what :meth:`tune_search` chose, else the default); ``fusion``
        (``convex`` or ``rrf``), ``alpha`` (the vector weight) and ``rrf_k`` override it. Fused scores
        are on a 0–1 scale (see :mod:`latentsearch.search.fusion`). ``where`` is a metadata filter (dict
        or expression string) applied before ranking, so a selective filter still returns ``k``
        results when ``k`` items match. ``explain`` fills each hit's ``details`` with every mode's
        rank, score and contribution to the fused score.
        ``ef_search`` (HNSW) and ``nprobe`` (IVF) trade speed for recall per query. ``include`` names
        what each hit carries beside its id and score, Chroma's way: any of ``"text"`` (text and URI),
        ``"metadata"``, ``"passage"`` (and the snippet) and ``"vector"``; the default is the first three,
        and ``[]`` (ids and scores only) is the fastest search.
        """
        if isinstance(query, SearchRequest):
            return search(self, query)
        plain = like is fusion is alpha is None and rrf_k == 60 and explain is False
        if plain and mode in ("auto", "vector") and isinstance(query, np.ndarray):
            # The hot path of vector search (a recommender's, an evaluation's, a vector store's): nothing
            # to fuse, exclude or explain, so no request is built; the backend's shortest path.
            if type(k) is not int or not 1 <= k <= MAX_K:  # (the checks' common case inline: no frames)
                k = check_k(k)
            plain_ef = ef_search is None or type(ef_search) is int and 1 <= ef_search <= MAX_EF_SEARCH
            if nprobe is not None or not plain_ef:
                ef_search, nprobe = check_tuning(ef_search, nprobe)
            fields = check_include(include)
            if where is not None:
                where = compile_filter(where)  # a malformed filter is refused before any work; compiled once
            else:
                manifest = self.manifest
                vectors = query_checked_after(query, dim=manifest["dim"], metric=manifest["metric"])
                if vectors is not None:  # (see query_checked_after: a non-finite query finds no finite score)
                    (hits,) = self.backend.nearest(vectors, k, ef_search, nprobe, fields, None)
                    if not hits or not math.isfinite(hits[-1].score):  # (the last: the first to overflow)
                        self.prepare_vectors(query, expected=1)  # raises for a NaN, an infinity, a length overflowing
                    return Hits(hits)
            vectors = self.prepare_vectors(query, expected=1)
            return Hits(self.backend.nearest(vectors, k, ef_search, nprobe, fields, where)[0])
        text_or_image = query is None or isinstance(query, str) or is_image(query)
        request = SearchRequest(
            query=query if text_or_image else None,
            vector=None if text_or_image else query,
            like=like,
            k=k,
            where=where,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            rrf_k=rrf_k,
            explain=explain,
            ef_search=ef_search,
            nprobe=nprobe,
            include=include,
        )
        return search(self, request)

    @property
    def search_fusion(self) -> Fusion:
        """The fusion that ``auto`` and ``hybrid`` searches use: the one :meth:`tune_search` stored in
        the manifest, else :data:`~latentsearch.search.fusion.DEFAULT_FUSION`."""
        tuned = (self.manifest.get("search") or {}).get("fusion")
        return Fusion.from_dict(tuned) if tuned else DEFAULT_FUSION

    def tune_search(
        self,
        queries: str | Path | Sequence[LabelledQuery] | None = None,
        *,
        sample: int = DEFAULT_SAMPLE,
        seed: int = 0,
        progress: ProgressFn | None = None,
    ) -> TuningReport:
        """Learn how to fuse vector and lexical search for this collection, measure it, and store the
        fusion in the manifest (the stored items are never changed).

        Measures vector, lexical and every candidate fusion on up to ``sample`` pseudo-queries made
        from the collection's own texts (a sentence or a span of an item, cut out of it, as the query,
        and the item as its answer) and on ``queries`` when given: labelled queries, a JSONL file of
        ``{"query": ..., "relevant": [ids]}`` lines or a list of :class:`LabelledQuery`. Raises
        :class:`~latentsearch.errors.InvalidInputError` when the texts are too few or too short to
        tune (the default stays); see :mod:`latentsearch.search.tuning`."""
        if self.read_only:  # refused before the measuring, not after it
            raise read_only_error(self.name, self.path)
        report = tune(self, queries, sample=sample, seed=seed, progress=progress)
        self.backend.write_manifest({"search": {"fusion": report.chosen.to_dict(), "tuning": report.summary()}})
        return report

    def tune_encoder(
        self,
        out: str | Path,
        pairs: str | Path | Sequence[TrainingPair | dict] | None = None,
        *,
        steps: int = encoder_tuning.DEFAULT_STEPS,
        batch_size: int = encoder_tuning.DEFAULT_BATCH,
        sample: int = encoder_tuning.DEFAULT_SAMPLE,
        learning_rate: float = encoder_tuning.DEFAULT_LEARNING_RATE,
        holdout: float = encoder_tuning.DEFAULT_HOLDOUT,
        seed: int = 0,
        overwrite: bool = False,
        progress: encoder_tuning.TuneProgress | None = None,
    ) -> EncoderTuningReport:
        """Fine-tune this collection's text encoder (``minilm`` or ``st:PATH``) on the collection itself,
        and save it in the folder ``out`` only if it ranks held-out pairs better than the base model.

        Trains on ``pairs`` when given (a JSONL file or a list: ``{"query", "id"}`` / ``{"query",
        "relevant"}`` or ``{"text_a", "text_b"}``), else on pseudo-pairs made from the items (a sentence
        and the rest of its passage; a ``title`` and its item), at most ``sample`` of them, for at most
        ``steps`` batches of ``batch_size`` (one pass); ``holdout`` of the pairs are measured (MRR@10,
        recall@10) before and after. ``progress(stage, done, total, loss)`` follows the work. The
        collection is never changed: re-encode it with the new model (``latentsearch reencode NAME
        --encoder st:OUT``, :func:`latentsearch.workflows.reencode.reencode`). Returns the report; see
        :mod:`latentsearch.search.encoder_tuning`."""
        return encoder_tuning.tune_encoder(
            self,
            out,
            pairs,
            steps=steps,
            batch_size=batch_size,
            sample=sample,
            learning_rate=learning_rate,
            holdout=holdout,
            seed=seed,
            overwrite=overwrite,
            progress=progress,
        )

    def reset_search_tuning(self) -> bool:
        """Forget the tuned fusion: searches use the default again. Returns whether there was one."""
        had = bool(self.manifest.get("search"))
        if had:
            self.backend.write_manifest({"search": None})
        return had

    def search_batch(
        self,
        queries: np.ndarray | Sequence[str],
        *,
        k: int = 10,
        where: Filter | str | None = None,
        exclude: Sequence[str] = (),
        ef_search: int | None = None,
        nprobe: int | None = None,
        include: Sequence[str] | None = None,
    ) -> list[Hits]:
        """Vector search for many queries (an (n, dim) array or a list of texts) in one call: one index
        search and one read of the hits for all of them. Returns one list of hits per query;
        ``exclude`` ids never appear; ``include`` as in :meth:`search`."""
        return search_batch(
            self, queries, k=k, where=where, exclude=exclude, ef_search=ef_search, nprobe=nprobe, include=include
        )

    # --- learned users -----------------------------------------------------------------------------

    def user_profile(self, user: str) -> tuple[np.ndarray | None, list[tuple[str, float | None]]]:
        """A learned user's vector and history ``[(item id, timestamp)]`` (``None`` vector: unknown user)."""
        if not isinstance(user, str):
            raise InvalidInputError(f"user must be a user id (a string), got {type(user).__name__}")
        return self.backend.user(check_text(user, "the user id"))

    def put_users(self, users: Sequence[tuple[str, np.ndarray, list[Any]]], *, replace_all: bool = False) -> None:
        """Store learned users: ``(user id, vector, history [(item id, timestamp)])`` each."""
        for i, user in enumerate(users):
            if not isinstance(user[0], str) or not user[0]:
                raise InvalidInputError(f"user #{i} has id {user[0]!r}: user ids are non-empty strings")
            check_text(user[0], f"user #{i}'s id")
            for entry in user[2]:
                item_id = entry[0] if isinstance(entry, (tuple, list)) and entry else entry
                if isinstance(item_id, str):
                    check_text(item_id, f"an item id in user {user[0]!r}'s history")
        self.backend.put_users(users, replace_all=replace_all)

    def user_count(self) -> int:
        """Number of learned users."""
        return self.backend.user_count()

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are in the collection."""
        return self.backend.existing(list(ids))

    # --- outliers --------------------------------------------------------------------------------

    def outlier_scorer(
        self,
        method: str = "knn",
        *,
        k: int = 10,
        contamination: float | None = None,
        percentile: float | None = None,
        fpr: float | None = None,
        progress: ProgressFn | None = None,
    ) -> Any:
        """A scorer fitted on this collection's vectors (cached until the collection changes).

        ``method``: ``knn``, ``lof``, ``iforest``, ``ensemble``, or ``reconstruction`` (autoencoder
        collections: each image's reconstruction error); one threshold of ``contamination``
        (default 0.01), ``percentile`` or ``fpr`` (conformal false-alarm rate). Neighbours are those
        in the whole collection, across shards. See :mod:`latentsearch.analysis.outliers`.
        """
        key = (method, k, contamination, percentile, fpr, self.seq)
        if self._scorer_cache is not None and self._scorer_cache[0] == key:
            return self._scorer_cache[1]
        thresholds = {"contamination": contamination, "percentile": percentile, "fpr": fpr}
        if method == "reconstruction":
            scorer = ReconstructionScorer(self.encoder, **thresholds)
        else:
            scorer = make_scorer(method, k=k, **thresholds)
        scorer.fit(FitData.of_table(self.backend.vector_table(), self.name), progress=progress)
        self._scorer_cache = (key, scorer)
        return scorer
