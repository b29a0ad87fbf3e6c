"""File helpers shared by the modules that write derived files: checksums and atomic replacement."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_replace(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable, rename it over ``final`` and make the rename durable (fsync the folder)."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def remove_stale_temp_files(folder: Path, pattern: str) -> int:
    """Delete temp files matching ``pattern`` (names carry ``.PID.``) whose writing process is gone:
    they are what a killed writer left behind. Returns how many were removed."""
    removed = 0
    for path in Path(folder).glob(pattern):
        parts = path.name.split(".")
        pid = int(parts[parts.index("tmp") - 1]) if "tmp" in parts and parts[parts.index("tmp") - 1].isdigit() else None
        if pid is not None and pid != os.getpid() and process_alive(pid):
            continue  # another live process is still writing it
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold a POSIX advisory lock on ``path`` (created if missing): serialises writers across processes."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: callers' checksums still catch a mixed write
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
