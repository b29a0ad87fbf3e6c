"""Re-encoding a text collection with another encoder (a model ``tune-encoder`` made, say).

Every item is read back (id, text, metadata, the pages of its passages) and added, in batches, to a
new collection built with the new encoder in a hidden work folder: texts are split into passages
by the new encoder's tokenizer and encoded as ``add`` does. Then

- ``into=NEW``: the new collection (sharded like the source) is renamed into place as ``NEW``; the
  source is only read;
- in place: the source takes the new items and vectors in one SQLite transaction
  (:meth:`~latentsearch.connection.Connection.building` with ``adopt_seq``), its manifest then naming
  the new encoder. Until that commit the old vectors are what every search sees; a crash at any point
  leaves the old collection whole or the new one whole. A write to the collection while it is being
  re-encoded makes the swap refuse (nothing changes; run it again).

Ids, texts, metadata, pages and derived layers are kept; a tuned search fusion is forgotten, since it
was measured with the old vectors (run ``tune`` again).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentsearch.backends.base import ProgressFn
from latentsearch.backends.sharded import is_sharded_folder
from latentsearch.collection import Collection
from latentsearch.connection import Connection, check_settings
from latentsearch.errors import InvalidInputError
from latentsearch.fileio import read_only_error
from latentsearch.records import Item

BATCH = 256  # items a write: bounded memory, one transaction each


@dataclass
class ReencodeReport:
    """What :func:`reencode` did."""

    source: str
    target: str
    encoder: str
    previous_encoder: str
    items: int
    passages: int
    seconds: float

    @property
    def in_place(self) -> bool:
        """True when the source collection itself now holds the new vectors."""
        return self.source == self.target

    def message(self) -> str:
        """One line for the CLI."""
        where = f"{self.source} in place" if self.in_place else f"{self.source} into {self.target}"
        return (
            f"re-encoded {where}: {self.items:,} items, {self.passages:,} passages with {self.encoder} "
            f"(was {self.previous_encoder}) in {self.seconds:.1f}s"
        )


def encoder_spec(spec: str) -> str:
    """``spec`` with an ``st:`` folder made absolute, so that the manifest names it from any directory."""
    if not isinstance(spec, str) or not spec:
        raise InvalidInputError(f"encoder must be a name such as 'minilm' or 'st:PATH', got {spec!r}")
    prefix, _, rest = spec.partition(":")
    if prefix == "st" and rest:
        return f"st:{Path(rest).expanduser().resolve()}"
    return spec


def reencode(
    db: Connection,
    name: str,
    encoder: str,
    *,
    into: str | None = None,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> ReencodeReport:
    """Re-encode collection ``name`` with ``encoder`` into the new collection ``into``, or in place
    (see the module docstring). ``progress(done, total)`` counts items."""
    started = time.perf_counter()
    encoder = encoder_spec(encoder)
    with db.open(name) as source:
        if source.modality not in ("text", "joint"):
            raise InvalidInputError(
                f"collection {name!r} holds {source.modality} vectors: only text collections can be re-encoded"
            )
        sharded = is_sharded_folder(source.path)
        if into is None and source.read_only:  # refused before the encoding, not after it
            raise read_only_error(name, source.path)
        if into is None and sharded:
            raise InvalidInputError(
                f"collection {name!r} is sharded: its shards cannot switch encoders in one transaction; "
                "re-encode it into a new collection (--into NEW)"
            )
        if into is not None and db.exists(into):
            raise InvalidInputError(f"collection {into!r} exists: give --into a new name, or drop it first")
        new_encoder, _ = check_settings(encoder=encoder, index=source.manifest["index"], metric=source.metric, dim=None)
        if new_encoder.modality not in ("text", "joint"):
            raise InvalidInputError(f"encoder {encoder!r} does not encode text: choose a text encoder")
        if (
            into is None
            and encoder == source.encoder_name
            and new_encoder.weights_hash == source.manifest.get("weights_hash")
        ):
            raise InvalidInputError(f"collection {name!r} is already encoded with {encoder!r}: nothing to do")
        seq = source.backend.seq()
        passages = source.manifest.get("passages") or {}
        record = {"from": source.encoder_name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        manifest: dict[str, Any] = {"reencoded": record}
        if into is None:
            manifest["search"] = None  # measured with the old vectors
        elif source.layers:
            manifest["layers"] = source.layers
        total = source.count()
        with db.building(
            into or name,
            encoder=encoder,
            index=source.manifest["index"],
            metric=source.metric,
            shards=source.backend.shards if sharded else None,  # (like the source)
            stride=passages.get("stride"),
            max_passages=int(passages.get("max_passages", 1000)),
            adopt_seq=seq if into is None else None,
            manifest=manifest,
        ) as target:
            done = 0
            if progress:
                progress(0, total)
            for chunk in _chunks(source.iter_items(), BATCH):
                _copy(source, target, chunk, batch_size)
                done += len(chunk)
                if progress:
                    progress(done, total)
            counted = target.backend.passage_count()
    return ReencodeReport(
        source=name,
        target=into or name,
        encoder=encoder,
        previous_encoder=record["from"],
        items=done,
        passages=counted,
        seconds=round(time.perf_counter() - started, 1),
    )


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _copy(source: Collection, target: Collection, items: list[Item], batch_size: int) -> None:
    """Add ``items`` of ``source`` to ``target`` (encoding their texts), with the pages of their passages."""
    textless = next((item.id for item in items if not (item.text or "").strip()), None)
    if textless is not None:
        raise InvalidInputError(
            f"item {textless!r} of collection {source.name!r} has no text to encode: only collections whose every "
            "item has text can be re-encoded; nothing was changed"
        )
    ids = [item.id for item in items]
    spans = source.backend.passages(ids)
    pages = [page_starts(spans.get(i, [])) for i in ids]
    target.add(
        ids,
        [item.text or "" for item in items],
        metadata=[item.metadata for item in items],
        pages=pages if any(p is not None for p in pages) else None,
        batch_size=batch_size,
    )


def page_starts(passages: list[tuple[int, int, int | None]]) -> list[int] | None:
    """The page start offsets an item was added with, from its stored passages (``None``: no pages).

    A page's first passage starts where the page does, and a page without text has no passage, so it
    starts where the next one does (which splits the text the same way)."""
    pages = {}
    for start, _, page in passages:
        if page is not None:
            pages.setdefault(int(page), int(start))
    if not pages:
        return None
    last = max(pages)
    starts, following = [0] * last, None
    for number in range(last, 0, -1):
        following = pages.get(number, following)
        starts[number - 1] = following if following is not None else 0
    starts[0] = 0
    return starts
