"""Reading items from files (JSONL, CSV, document files or a folder of them, numpy arrays) and adding
them in batches, each batch one transaction, after the whole input has been checked."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from latentsearch.backends.base import ProgressFn
from latentsearch.errors import ConflictError, InvalidInputError
from latentsearch.io.documents import DOCUMENT_SUFFIXES, UnreadableDocument, read_document
from latentsearch.limits import INT64_MAX, INT64_MIN, MAX_NESTING, check_json_value
from latentsearch.tables import metadata_key
from latentsearch.validation import check_ids, check_metadata, check_texts

if TYPE_CHECKING:
    from latentsearch.collection import Collection

DEFAULT_CHUNK = 2048  # items per transaction when ingesting a file
_DOCUMENT_TYPES = ", ".join(DOCUMENT_SUFFIXES)


@dataclass
class Records:
    """Items read from an input, ready to add."""

    ids: list[str]
    texts: list[str] | None = None
    vectors: np.ndarray | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    uris: list[str] | None = None
    thumbnails: list[bytes] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) left out of the input
    pages: list[list[int] | None] | None = None  # per record, where each page of its text starts (PDFs)

    def __len__(self) -> int:
        return len(self.ids)


def read_input(
    path: str | Path,
    *,
    text_field: str = "text",
    id_field: str = "id",
    vector_field: str | None = None,
    metadata_fields: Sequence[str] | None = None,
    ids_file: str | Path | None = None,
    images: bool = False,
) -> Records:
    """Read items from a JSONL, CSV, .npy/.npz file, a document file or a folder of documents.

    JSONL/CSV: one item per line/row; ``text_field`` and ``id_field`` name the columns (ids are
    generated as ``FILE-LINE`` when the id column is absent); other fields become metadata (all, or
    ``metadata_fields``); ``vector_field`` reads a precomputed vector. Documents (.txt, .md/.markdown,
    .html/.htm, .pdf; see :func:`latentsearch.io.documents.read_document`): a folder's document files
    (recursive, hidden ones left out) are an item each whose id is its relative path, a single one an
    item whose id is its name; metadata ``path``, ``suffix``, ``source`` (the absolute path), ``title``
    when the document has one and ``pages`` (PDFs), whose page starts are in ``Records.pages``. A
    folder's files that cannot be read are listed in ``Records.skipped``; a single one is an error.
    ``.npy``/``.npz``: precomputed vectors, ids from ``ids_file``
    (one per line), the npz's ``ids`` array, or ``FILE-ROW``. With ``images`` (image collections), a
    folder's image files (jpg, png, webp, gif, bmp; recursive) or a single image file are read instead:
    id = relative path, uri = absolute path, a thumbnail each; unreadable and non-image files are
    listed in ``Records.skipped``.
    """
    path = Path(path)
    if images:
        return _read_images(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise InvalidInputError(f"cannot read {path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _read_numpy(path, ids_file)
    if suffix in DOCUMENT_SUFFIXES:
        records = _documents(path.parent, [path])  # an unreadable file raises: there is nothing else
        records.ids = [path.name]
        return records
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl_rows(path)
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise InvalidInputError(
            f"cannot read {path}: unknown file type {suffix or '(none)'}; use .jsonl, .csv, .tsv, .npy, .npz, "
            f"a document ({_DOCUMENT_TYPES}) or a folder of documents"
        )
    return _records_from_rows(path, rows, text_field, id_field, vector_field, metadata_fields)


def read_metadata_updates(path: str | Path, *, id_field: str = "id") -> dict[str, dict[str, Any]]:
    """Metadata updates from a JSONL or CSV file: each line/row names an item by ``id_field``; its other
    fields are merged into that item's metadata (JSON ``null`` removes a field)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl_rows(path)
    elif suffix in (".csv", ".tsv"):
        rows = [
            (n, {k: _csv_value(v) for k, v in row.items()})
            for n, row in _csv_rows(path, "\t" if suffix == ".tsv" else ",")
        ]
    else:
        raise InvalidInputError(f"cannot read {path}: metadata updates come in .jsonl, .csv or .tsv files")
    updates: dict[str, dict[str, Any]] = {}
    for lineno, row in rows:
        if id_field not in row:
            raise InvalidInputError(f"{path} line {lineno}: no {id_field!r} field; name it with --id-field")
        item_id = str(row.pop(id_field))
        if item_id in updates:
            raise InvalidInputError(f"{path} line {lineno}: id {item_id!r} appears twice")
        updates[item_id] = row
    if not updates:
        raise InvalidInputError(f"{path}: no updates in the file")
    return updates


def open_text(path: Path) -> TextIO:
    """Open a UTF-8 text file, turning OS errors into a one-line input error."""
    try:
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{path} line {lineno}: invalid JSON ({exc.msg})") from None
                except RecursionError:  # the decoder recurses per level: thousands of levels exhaust it
                    raise InvalidInputError(
                        f"{path} line {lineno}: nested deeper than {MAX_NESTING} levels: flatten it"
                    ) from None
                if not isinstance(row, dict):
                    raise InvalidInputError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
                # Escapes such as "\ud800" decode to text no interface could give back; 64-bit integers.
                # (NaN is left to the vector and metadata checks, which say which it is.)
                check_json_value(row, f"{path} line {lineno}", floats=False)
                rows.append((lineno, row))
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return rows


def _csv_value(value: str) -> Any:
    """CSV cells are strings; numbers are stored as numbers so range filters work."""
    for cast in (int, float):
        try:
            number = cast(value)
        except ValueError:
            continue
        if cast is int:  # a whole number beyond 64 bits stays text, as SQLite could not hold it
            return number if INT64_MIN <= number <= INT64_MAX else value
        return number if np.isfinite(number) else value
    return value


def _csv_rows(path: Path, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        with open_text(path) as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if not reader.fieldnames:
                raise InvalidInputError(f"{path}: empty file, expected a header row")
            return [(reader.line_num, dict(row)) for row in reader]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InvalidInputError(f"{path}: malformed CSV ({exc})") from None


def _records_from_rows(
    path: Path,
    rows: list[tuple[int, dict[str, Any]]],
    text_field: str,
    id_field: str,
    vector_field: str | None,
    metadata_fields: Sequence[str] | None,
) -> Records:
    if not rows:
        raise InvalidInputError(f"{path}: no items in the file")
    csv_like = path.suffix.lower() in (".csv", ".tsv")
    has_ids = [id_field in row for _, row in rows]
    if any(has_ids) and not all(has_ids):
        lineno = rows[has_ids.index(False)][0]
        raise InvalidInputError(f"{path} line {lineno}: no {id_field!r} field while other lines have one")
    ids, texts, vectors, metadata = [], [], [], []
    # A "uri" field is the item's URI (what an export writes), every other field not named is metadata.
    uris = [row.get("uri") for _, row in rows] if any(isinstance(row.get("uri"), str) for _, row in rows) else None
    skip = {text_field, id_field, vector_field, "uri" if uris is not None else None}
    for lineno, row in rows:
        item_id = str(row[id_field]) if has_ids[0] else f"{path.stem}-{lineno}"
        ids.append(item_id)
        if vector_field is not None:
            if vector_field not in row:
                raise InvalidInputError(f"{path} line {lineno}: no {vector_field!r} field for the vector")
            value = row[vector_field]
            vectors.append(json.loads(value) if isinstance(value, str) else value)
        if text_field in row:
            text = row[text_field]
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"{path} line {lineno}: empty or non-string {text_field!r}")
            texts.append(text)
        elif vector_field is None:
            fields = ", ".join(sorted(row)) or "none"
            raise InvalidInputError(
                f"{path} line {lineno}: no {text_field!r} field (fields: {fields}); name it with --text-field"
            )
        keys = metadata_fields if metadata_fields is not None else [k for k in row if k not in skip]
        meta = {metadata_key(key): row[key] for key in keys if key in row}
        metadata.append({k: _csv_value(v) for k, v in meta.items()} if csv_like else meta)
    if texts and len(texts) != len(ids):
        raise InvalidInputError(f"{path}: some lines have {text_field!r} and others do not")
    matrix = None
    if vectors:
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{path}: {vector_field!r} must hold lists of numbers of one length") from None
    return Records(ids, texts or None, matrix, metadata, str(path), uris=uris)


def _read_folder(folder: Path) -> Records:
    files = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git and the like are no documents
        files += [Path(top, n) for n in names if not n.startswith(".") and Path(n).suffix.lower() in DOCUMENT_SUFFIXES]
    if not files:
        raise InvalidInputError(f"{folder}: no document files found ({_DOCUMENT_TYPES})")
    files.sort(key=lambda p: p.relative_to(folder).as_posix())
    records = _documents(folder, files)
    if not records.ids:
        file, why = records.skipped[0]
        raise InvalidInputError(
            f"{folder}: none of its {len(files)} document files could be read (first: {file}: {why})"
        )
    return records


def _documents(root: Path, files: list[Path]) -> Records:
    """Documents as records, id = path relative to ``root``; files that cannot be read are skipped
    (a single file's error is raised: the caller has nothing else to add)."""
    records = Records([], [], None, [], str(root if len(files) != 1 else files[0]), pages=[])
    for file in files:
        try:
            document = read_document(file)
        except UnreadableDocument as exc:
            if len(files) == 1:
                raise
            records.skipped.append((str(file), exc.reason))
            continue
        rel = file.relative_to(root).as_posix()
        meta: dict[str, Any] = {"path": rel, "suffix": file.suffix.lower(), "source": str(file.resolve())}
        if document.title is not None:
            meta["title"] = document.title
        if document.pages is not None:
            meta["pages"] = len(document.pages)
        records.ids.append(rel)
        records.texts.append(document.text)
        records.metadata.append(meta)
        records.pages.append(document.pages)
    if not any(p is not None for p in records.pages):
        records.pages = None
    return records


def _read_images(path: Path) -> Records:
    from latentsearch.encoders.image import IMAGE_SUFFIXES, scan_images, thumbnail_bytes

    if path.is_dir():
        files, skipped = scan_images(path)
        root = path
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        files, skipped, root = [path], [], path.parent
    else:
        raise InvalidInputError(f"cannot read {path}: not a folder or an image file ({', '.join(IMAGE_SUFFIXES)})")
    records = Records([], None, None, [], str(path), uris=[], thumbnails=[])
    reasons = [(str(p), why) for p, why in skipped]
    for file in files:
        try:
            thumbnail = thumbnail_bytes(file)
        except InvalidInputError as exc:
            reasons.append((str(file), str(exc).split(": ", 1)[-1]))
            continue
        rel = file.relative_to(root).as_posix()
        records.ids.append(rel)
        records.uris.append(str(file.resolve()))
        records.thumbnails.append(thumbnail)
        records.metadata.append({"path": rel, "suffix": file.suffix.lower()})
    records.skipped = reasons
    if not records.ids:
        raise InvalidInputError(f"{path}: no readable images found ({len(reasons)} files skipped)")
    return records


def _read_numpy(path: Path, ids_file: str | Path | None) -> Records:
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle user files
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    ids: list[str] | None = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            key = "vectors" if "vectors" in names else next((n for n in names if loaded[n].ndim == 2), None)
            if key is None:
                raise InvalidInputError(f"{path}: no 2-D array of vectors (name it 'vectors')")
            vectors = loaded[key]
            if "ids" in names:
                ids = [str(x) for x in loaded["ids"].tolist()]
    else:
        vectors = loaded
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.number):
        raise InvalidInputError(f"{path}: expected a 2-D numeric array of vectors, got shape {vectors.shape}")
    if ids_file is not None:
        try:
            ids = [line.strip() for line in Path(ids_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read ids file {ids_file}: {exc}") from None
    if ids is None:
        ids = [f"{path.stem}-{i}" for i in range(len(vectors))]
    if len(ids) != len(vectors):
        raise InvalidInputError(f"{path}: {len(vectors)} vectors but {len(ids)} ids")
    return Records(ids, None, vectors, [{} for _ in ids], str(path))


def check_records(collection: Collection, records: Records, *, upsert: bool, seen: set[str]) -> None:
    """The checks each chunk's add runs, over records before the first of them is written: ids unique
    (also against ``seen``, the ids of the input's earlier batches, which gains these), texts, uris,
    metadata, vectors, and ids already in the collection unless ``upsert``."""
    for item_id in records.ids:
        if item_id in seen:
            raise InvalidInputError(f"{records.source}: duplicate id {item_id!r} in the input")
        seen.add(item_id)
    n = len(records)
    check_ids(records.ids)
    check_texts("texts", records.texts, n)
    check_texts("uris", records.uris, n)
    check_metadata(records.metadata, n)
    if not upsert:
        existing = collection.existing_ids(records.ids)
        if existing:
            first = next(i for i in records.ids if i in existing)
            raise ConflictError(
                f"{len(existing)} ids from {records.source} already exist (first: {first!r}): "
                "use --upsert to replace them"
            )
    if records.vectors is not None:
        collection.prepare_vectors(records.vectors, expected=n)  # fail before writing anything
    elif records.texts is None and records.uris is None:
        raise InvalidInputError(f"{records.source}: no texts, images or vectors to add")


def ingest(
    collection: Collection,
    records: Records,
    *,
    upsert: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    passage_progress: Callable[[int], None] | None = None,
) -> int:
    """Add records in chunks of ``chunk_size`` (one transaction each), after checking them all.

    Every check that can fail (duplicate ids, existing ids without ``upsert``, dimensions) runs before
    the first write, so bad input changes nothing. ``progress(done, total)`` counts documents (moving
    within a chunk as its passages are encoded); ``passage_progress(done)`` counts passages encoded.
    """
    n = len(records)
    check_records(collection, records, upsert=upsert, seen=set())
    write = collection.upsert if upsert else collection.add
    done = 0
    passages = [0, 0]  # encoded in earlier chunks, in this one
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)

        def chunk_progress(d: int, t: int, offset: int = start, size: int = end - start) -> None:
            passages[1] = d
            if progress:
                progress(offset + size * d // max(t, 1), n)
            if passage_progress:
                passage_progress(passages[0] + d)

        write(
            records.ids[start:end],
            records.texts[start:end] if records.texts is not None else None,
            vectors=records.vectors[start:end] if records.vectors is not None else None,
            metadata=records.metadata[start:end],
            uris=records.uris[start:end] if records.uris is not None else None,
            thumbnails=records.thumbnails[start:end] if records.thumbnails is not None else None,
            pages=records.pages[start:end] if records.pages is not None else None,
            batch_size=batch_size,
            progress=chunk_progress,
        )
        done = end
        passages[0] += passages[1]
        passages[1] = 0
        if progress:
            progress(done, n)
    if n > chunk_size:  # (a single chunk's write was the load: it did what a bulk write does)
        collection.finish_bulk_load()
    return done
