"""The per-user cache: a folder for things that are slow to redo and safe to lose.

It lives in ``$LATENTSEARCH_CACHE``, else ``$XDG_CACHE_HOME/latentsearch``, else
``~/.cache/latentsearch``. It holds the sha256 digests of big files that were verified (so a 90 MB
model or a 200 MB index is hashed once, not on every call) and the ONNX graphs exported from
verified weights (``encoders/graphs.py``). Deleting it only costs a re-hash and a re-export.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from latentsearch.fileio import file_sha256, fsync_replace

CACHE_ENV = "LATENTSEARCH_CACHE"
_DIGESTS = "digests.json"
_PRUNE_ABOVE = 512  # entries; past that, entries of files that no longer exist are dropped


class CacheUnavailableError(OSError):
    """The cache folder cannot be created or written."""


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "latentsearch"


def writable_cache_dir(*parts: str) -> Path:
    """``cache_dir()/parts``, created; raises ``CacheUnavailableError`` saying why it cannot be written."""
    folder = cache_dir().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CacheUnavailableError(f"cannot write the cache folder {folder} ({exc.strerror or exc})") from None
    return folder


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or ``{}`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict) -> None:
    """Write a JSON object atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _file_key(path: Path) -> str:
    stat = path.stat()  # a file replaced by a rename has a new inode even with the same size and mtime
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def remember_sha256(path: str | os.PathLike[str], digest: str) -> None:
    """Record that ``path``, as it is now, has sha256 ``digest`` (for a file this process just wrote
    and hashed). An unwritable cache only means the next reader hashes the file again."""
    path = Path(path).resolve()
    with contextlib.suppress(OSError):
        key = _file_key(path)
        folder = writable_cache_dir()
        digests = read_json(folder / _DIGESTS)
        if len(digests) > _PRUNE_ABOVE:
            digests = {p: e for p, e in digests.items() if os.path.exists(p)}
        digests[str(path)] = {"key": key, "sha256": digest}
        write_json(folder / _DIGESTS, digests)


def verified_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, remembered by (path, size, mtime, inode) so that a big file is hashed
    once rather than on every call; any change to the file makes it hash again."""
    path = Path(path).resolve()
    key = _file_key(path)
    entry = read_json(cache_dir() / _DIGESTS).get(str(path))
    if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(path)
    if _file_key(path) == key:  # never remember the digest of a file that changed while it was read
        remember_sha256(path, digest)
    return digest
