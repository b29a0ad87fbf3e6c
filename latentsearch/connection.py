"""A connection to a data directory (and, for sharded collections, a Ray cluster): the one place that
creates, opens, lists and drops collections.

    import latentsearch as ls
    db = ls.connect("./indexes")                  # or ls.connect(ray_address="auto")
    notes = db.create("notes")                    # one folder: SQLite + FAISS
    logs = db.create("logs", shards=4)            # the same Collection class, over Ray actors
    db.list(), db.open("notes"), db.drop("logs")

``ls.create/open/list_collections/drop`` are shortcuts over a connection made for the call.

Collections appear whole or not at all: each is built in a hidden work folder of the data directory
(``.NAME.creating-PID``) and renamed into place; a drop renames it aside first. What a killed
process leaves behind is removed by the next create or drop of that name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latentsearch import paths
from latentsearch.backends import create_backend, describe_offline, holds_collection, open_backend
from latentsearch.collection import Collection
from latentsearch.encoders import Encoder, get_encoder
from latentsearch.encoders.passages import DEFAULT_MAX_PASSAGES, check_passage_options
from latentsearch.errors import (
    CollectionNotFoundError,
    ConflictError,
    EncoderMismatchError,
    InvalidInputError,
    LatentSearchError,
)
from latentsearch.fileio import fsync_path, process_alive
from latentsearch.index.faiss_index import LOCK_FILE
from latentsearch.index.specs import METRICS, check_index, validate_spec
from latentsearch.limits import MAX_DIM, check_int
from latentsearch.storage.backup import backup_folder


class Connection:
    """A data directory and, optionally, the Ray cluster its sharded collections run on.

    ``home``: the data directory (default ``$LATENTSEARCH_HOME``, else ``./indexes``), resolved once
    here. ``ray_address``: the cluster for sharded collections (default: ``$RAY_ADDRESS``, else a Ray
    started for this process when one is first needed). Nothing is opened until a collection is.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, ray_address: str | None = None) -> None:
        self.home: Path = paths.resolve_home(home)
        self.ray_address = ray_address

    def __repr__(self) -> str:
        return f"Connection(home={str(self.home)!r}, ray_address={self.ray_address!r})"

    def folder(self, name: str) -> Path:
        """Where collection ``name`` lives (the name is checked)."""
        return self.home / paths.validate_name(name)

    def create(
        self,
        name: str,
        *,
        encoder: str = "minilm",
        index: str = "auto",
        metric: str = "cosine",
        dim: int | None = None,
        shards: int | None = None,
        stride: int | None = None,
        max_passages: int = DEFAULT_MAX_PASSAGES,
        exist_ok: bool = False,
    ) -> Collection:
        """Create a collection (or open it with ``exist_ok`` if it exists with the same settings).

        ``encoder`` is ``minilm``, ``st:PATH``, ``ae:PATH``, ``efficientnet-lite0`` or ``precomputed``
        (then ``dim`` is required); ``index`` is ``auto``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq``,
        ``sq8`` or ``faiss:FACTORY``; ``metric`` is ``cosine``, ``ip`` or ``l2``. ``shards`` splits the
        collection over that many Ray actors (the connection's cluster). A text longer than the
        encoder's window is split into passages: ``stride`` tokens from one passage's start to the
        next (default 3/4 of the window), at most ``max_passages`` per text (the rest of a longer one
        is left out, with a warning). Every setting is checked before anything is written.
        """
        folder = self.folder(name)
        if holds_collection(folder):
            if not exist_ok:
                raise ConflictError(f"collection {name!r} already exists in {self.home}: open it, or drop it first")
            validate_spec(index)
            if metric not in METRICS:
                raise InvalidInputError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
            collection = self.open(name, encoder=encoder)
            if collection.manifest["index"] != index or collection.metric != metric:
                collection.close()
                raise EncoderMismatchError(
                    f"collection {name!r} exists with index {collection.manifest['index']!r} and metric "
                    f"{collection.metric!r}: drop it to change them"
                )
            return collection
        passages = {"stride": stride, "max_passages": max_passages}
        tmp = self._new_work_folder(
            name, encoder=encoder, index=index, metric=metric, dim=dim, shards=shards, passages=passages
        )
        _publish(tmp, folder)  # the settings were checked before the work folder was made
        return self.open(name)

    @contextlib.contextmanager
    def building(
        self,
        name: str,
        *,
        replace: bool = False,
        encoder: str = "minilm",
        index: str = "auto",
        metric: str = "cosine",
        dim: int | None = None,
        shards: int | None = None,
        stride: int | None = None,
        max_passages: int = DEFAULT_MAX_PASSAGES,
        adopt_seq: int | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> Iterator[Collection]:
        """Create collection ``name`` in a hidden work folder and yield it to be filled; when the block
        ends without an error it is renamed into place (with ``replace``, over an existing one). An
        error or a crash at any point leaves nothing new under the name. For jobs that fill a new
        collection in several steps (``fit_interactions``, ``reencode``). ``manifest`` entries are
        written into it once filled.

        With ``adopt_seq``, the existing local collection ``name`` instead takes the filled one's items
        and vectors (and its manifest's encoder) in one SQLite transaction, provided nothing was written
        to it since that change sequence (see :meth:`~latentsearch.storage.store.Store.adopt`): a crash
        leaves the old collection whole or the new one whole, and the collection keeps its folder,
        field indexes, layers and users."""
        folder = self.folder(name)
        if holds_collection(folder) and not replace and adopt_seq is None:
            raise ConflictError(
                f"collection {name!r} already exists in {self.home}: pass replace (CLI: --replace) to rebuild it"
            )
        passages = {"stride": stride, "max_passages": max_passages}
        tmp = self._new_work_folder(
            name, encoder=encoder, index=index, metric=metric, dim=dim, shards=shards, passages=passages
        )
        try:
            with Collection(open_backend(tmp, ray_address=self.ray_address)) as collection:
                yield collection
                if manifest:
                    collection.backend.write_manifest(manifest)
                fresh = dict(collection.manifest)
            if adopt_seq is not None:
                with self.open(name) as live:
                    adopt = getattr(live.backend, "adopt", None)
                    if adopt is None:
                        raise InvalidInputError(
                            f"collection {name!r} is sharded: it cannot be rebuilt in place; build a new one"
                        )
                    keys = ("encoder", "modality", "weights_hash", "dim", *(manifest or {}))
                    adopt(tmp, {key: fresh.get(key) for key in keys}, expected_seq=adopt_seq)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if adopt_seq is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # a crash here leaves it to the next create or drop
            return
        _publish(tmp, folder, replace=replace)

    def _new_work_folder(
        self, name: str, *, shards: int | None, passages: dict[str, Any] | None = None, **settings: Any
    ) -> Path:
        """Check the settings and write an empty collection into ``.NAME.creating-PID``."""
        passages = passages or {"stride": None, "max_passages": DEFAULT_MAX_PASSAGES}
        check_passage_options(passages["stride"], passages["max_passages"])
        encoder, dim = check_settings(**settings)
        manifest = {
            "encoder": settings["encoder"],
            "modality": encoder.modality,
            "weights_hash": None if settings["encoder"] == "precomputed" else encoder.weights_hash,
            "dim": dim,
            "metric": settings["metric"],
            "normalize": settings["metric"] == "cosine",
            "index": settings["index"],
            "passages": passages,
            "collection_id": uuid.uuid4().hex,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        folder = self.folder(name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_work_folders(folder)
        tmp = folder.with_name(f".{name}.creating-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            create_backend(tmp, manifest, shards=shards, ray_address=self.ray_address)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a killed process leaves it to the next create
            raise
        return tmp

    def open(self, name: str, *, encoder: str | None = None) -> Collection:
        """Open an existing collection; ``encoder``, if given, must match the one it was built with.
        A sharded collection joins the connection's Ray cluster."""
        folder = self.folder(name)
        if not holds_collection(folder):
            raise CollectionNotFoundError(
                f"collection {name!r} not found in {self.home}: create it first "
                f"(latentsearch create {name}), or point --home / LATENTSEARCH_HOME at its data directory"
            )
        # (An in-place re-encode killed after its switch left its work folder: the name lives on, so no
        # create or drop of it would ever remove it.)
        _remove_stale_work_folders(folder, own=False)
        return Collection(open_backend(folder, ray_address=self.ray_address), encoder=encoder)

    def list(self) -> list[str]:
        """Names of the collections in the data directory, sorted."""
        if not self.home.is_dir():
            return []
        return sorted(p.name for p in self.home.iterdir() if not p.name.startswith(".") and holds_collection(p))

    def exists(self, name: str) -> bool:
        """True when a collection of that name is in the data directory."""
        return holds_collection(self.folder(name))

    def drop(self, name: str) -> None:
        """Delete a collection and its files."""
        folder = self.folder(name)
        if not holds_collection(folder):
            raise CollectionNotFoundError(f"collection {name!r} not found in {self.home}: nothing to drop")
        # Rename first so a crash mid-delete leaves no half collection under the real name.
        trash = folder.with_name(f".{name}.dropping-{os.getpid()}")
        os.rename(folder, trash)
        shutil.rmtree(trash)
        _remove_stale_work_folders(folder)

    def restore(self, backup: str | os.PathLike[str], name: str) -> Collection:
        """Bring a backup (a folder :meth:`Collection.backup` wrote) back as collection ``name``, which
        must not exist: copied beside it and renamed into place when complete, then opened (its index
        catches up with its database, or is rebuilt if it does not match)."""
        source = Path(backup)
        if not holds_collection(source):
            raise CollectionNotFoundError(f"{source} holds no collection backup: give the folder `backup` wrote")
        folder = self.folder(name)
        if folder.exists():
            raise ConflictError(
                f"collection {name!r} exists in {self.home}: restore under another name, or drop it first"
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        backup_folder(source, folder, lock_name=LOCK_FILE)
        return self.open(name)

    def describe(self, name: str, *, opener: Callable[[str], Collection] | None = None) -> dict[str, Any]:
        """One line about a collection for listings: name, count, encoder, dim, modality (and shards).

        Read from its files (no Ray started, no index loaded), or from the collection ``opener(name)``
        returns (a server's open one). A collection that cannot be read (a damaged file) is reported
        with a ``problem`` instead of failing the whole listing.
        """
        try:
            if opener is None:
                return {"name": name, **describe_offline(self.folder(name))}
            col = opener(name)
            return {
                "name": name,
                "count": col.count(),
                "encoder": col.encoder_name,
                "dim": col.dim,
                "modality": col.manifest.get("modality"),
            }
        except (LatentSearchError, OSError, ValueError, KeyError) as exc:
            return {"name": name, "problem": str(exc)}


def connect(home: str | os.PathLike[str] | None = None, *, ray_address: str | None = None) -> Connection:
    """A :class:`Connection` to the data directory ``home`` (and Ray cluster ``ray_address``)."""
    return Connection(home, ray_address=ray_address)


def check_settings(*, encoder: str, index: str, metric: str, dim: int | None) -> tuple[Encoder, int]:
    """Check a new collection's settings before anything is written: a known encoder, a dimension it
    makes (or, for ``precomputed``, one from 1 to :data:`~latentsearch.limits.MAX_DIM`), a known
    metric, and an index FAISS can build for them. Returns the encoder and the dimension."""
    if not isinstance(encoder, str):
        raise InvalidInputError(f"encoder must be a name such as 'minilm', got {encoder!r}")
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    validate_spec(index)
    enc = get_encoder(encoder)
    if encoder == "precomputed":
        if dim is None:
            raise InvalidInputError("the precomputed encoder needs the vector dimension: pass dim (CLI: --dim)")
        dim = check_int("dim", dim, 1, MAX_DIM)
    elif dim is not None and (isinstance(dim, bool) or dim != enc.dim):
        raise InvalidInputError(f"encoder {encoder!r} makes {enc.dim}-d vectors, not {dim}")
    else:
        dim = enc.dim
    check_index(index, dim, metric)
    return enc, int(dim)


def _publish(tmp: Path, folder: Path, *, replace: bool = False) -> None:
    """Rename a work folder into place as ``folder`` (one rename: the collection appears whole or not
    at all). With ``replace`` an existing collection of that name is first moved aside and deleted
    after the rename."""
    trash = None
    if replace and folder.exists():
        trash = folder.with_name(f".{folder.name}.dropping-{os.getpid()}")
        os.rename(folder, trash)
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConflictError(
            f"collection {folder.name!r} already exists in {folder.parent} (created by another process "
            "meanwhile?): open it, or drop it first"
        ) from None
    fsync_path(folder.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_work_folders(folder: Path, *, own: bool = True) -> None:
    """Remove what a killed create, drop or re-encode of this name left (``.NAME.creating-PID``,
    ``.NAME.dropping-PID``), once its process is gone: hidden folders no listing shows (in a data
    directory that cannot be written, they stay). ``own``: this process's too (a create or drop about
    to make its own anew; not an open, which may be a re-encode's, opening the collection its work
    folder is about to switch)."""
    for path in folder.parent.glob(f".{folder.name}.*-*"):
        stem, _, pid = path.name.rpartition("-")
        ours = stem in (f".{folder.name}.creating", f".{folder.name}.dropping") and pid.isdigit()
        mine = ours and int(pid) == os.getpid()
        if ours and path.is_dir() and ((own and mine) or (not mine and not process_alive(int(pid)))):
            shutil.rmtree(path, ignore_errors=True)


# --- shortcuts over a connection made for the call --------------------------------------------------


def create(
    name: str,
    *,
    home: str | os.PathLike[str] | None = None,
    ray_address: str | None = None,
    **settings: Any,
) -> Collection:
    """``connect(home, ray_address=...).create(name, **settings)``; see :meth:`Connection.create`."""
    return connect(home, ray_address=ray_address).create(name, **settings)


def open_collection(
    name: str,
    *,
    home: str | os.PathLike[str] | None = None,
    encoder: str | None = None,
    ray_address: str | None = None,
) -> Collection:
    """``connect(home, ray_address=...).open(name)``; see :meth:`Connection.open`."""
    return connect(home, ray_address=ray_address).open(name, encoder=encoder)


def list_collections(*, home: str | os.PathLike[str] | None = None) -> list[str]:
    """``connect(home).list()``: the collections in the data directory, sorted."""
    return connect(home).list()


def drop(name: str, *, home: str | os.PathLike[str] | None = None) -> None:
    """``connect(home).drop(name)``: delete a collection and its files."""
    connect(home).drop(name)
