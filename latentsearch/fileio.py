"""File helpers shared by the modules that write derived files: checksums and atomic replacement."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from latentsearch.errors import DiskFullError, ReadOnlyError

# errno values that mean "this folder may not be written": a read-only mount, or no write permission.
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


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


def is_disk_full(exc: BaseException) -> bool:
    """True when an error (an OSError, or FAISS's RuntimeError that only carries the message) means
    the disk is full or over quota."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text or "database or disk is full" in text


def nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    """True when the file system of ``folder`` has less than ``margin`` bytes free: what an I/O error
    that names no cause (SQLite's "disk I/O error" when it cannot create its shared-memory file) means
    then."""
    try:
        stat = os.statvfs(folder)
    except (AttributeError, OSError):
        return False
    return stat.f_bavail * stat.f_frsize < margin


def disk_full_error(name: str) -> DiskFullError:
    """The one-line error of a write that ran out of space."""
    return DiskFullError(f"no space left on device while writing {name}; free space and retry")


def read_only_error(name: str, path: Path | str) -> ReadOnlyError:
    """The one-line error of a write to a collection that may only be read."""
    return ReadOnlyError(
        f"collection {name} is read-only ({path} cannot be written: a read-only mount or no write "
        "permission); reads work, writes need a writable copy"
    )


def folder_writable(folder: Path) -> bool:
    """True when files can be created in ``folder`` (a read-only mount or missing write permission
    say no; root passes permission checks, not a read-only mount)."""
    if not os.access(folder, os.W_OK):
        return False
    with contextlib.suppress(AttributeError, OSError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
    return True


@contextlib.contextmanager
def writing(name: str, folder: Path, *temps: Path) -> Iterator[None]:
    """Run a write of derived files in ``folder``: on any failure the ``temps`` are removed, and a full
    disk or a read-only folder becomes one line naming that cause (other errors pass unchanged)."""
    try:
        yield
    except BaseException as exc:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(name) from None
        if isinstance(exc, OSError) and exc.errno in READ_ONLY_ERRNOS:
            raise read_only_error(name, folder) from None
        raise
