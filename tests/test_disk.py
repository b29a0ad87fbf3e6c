"""Disk full and read-only data: one line naming the real cause, acknowledged data intact, no temp
files left, the old index kept; reads of a read-only collection work and never call it damaged.

The real cases run on a small tmpfs (and a read-only remount of it), which needs root's mount; they
skip with the reason where mounting is not permitted. The injected cases make ENOSPC/EROFS appear
deterministically at the file operations themselves, so they run everywhere."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch import fileio
from latentsearch.cli import app
from latentsearch.doctor import doctor
from latentsearch.errors import DiskFullError
from latentsearch.fileio import file_sha256

DIM = 32


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if ".tmp" in p.name)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (skips the test when mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'mount failed'}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def fill(folder: Path) -> Path:
    """Take every free byte of the file system of ``folder``; returns the filler to delete."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for block in (65536, 4096, 1):  # the last bytes in smaller and smaller writes
            with contextlib.suppress(OSError):
                while handle.write(b"\0" * block):
                    pass
    return filler


def make(home: Path, n: int = 300, index: str = "flat") -> None:
    col = ls.create("c", encoder="precomputed", dim=DIM, index=index, home=home)
    col.add([f"v{i}" for i in range(n)], vectors=vectors(n, 0), metadata=[{"g": i % 3} for i in range(n)])
    col.close()


# --- disk full: a real one --------------------------------------------------------------------------


def test_a_full_disk_fails_with_the_real_cause_and_keeps_everything(tmp_path, caplog):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        home = disk / "home"
        make(home)
        old_index = file_sha256(home / "c" / "index.faiss")
        col = ls.open("c", home=home)
        col.add(["small"], vectors=vectors(1, 9))  # acknowledged before the disk fills
        filler = fill(disk)

        with pytest.raises(DiskFullError) as caught:
            col.add([f"w{i}" for i in range(3000)], vectors=vectors(3000, 1))
        message = str(caught.value)
        assert message == "no space left on device while writing c; free space and retry"
        with pytest.raises(DiskFullError):
            col.compact()  # a new index cannot be written: the old one stays
        assert col.count() == 301
        col.close()  # the checkpoint fails: logged in one line, not raised
        assert any("no space left on device" in r.getMessage() for r in caplog.records)
        assert file_sha256(home / "c" / "index.faiss") == old_index
        assert temp_files(home) == []

        filler.unlink()
        col = ls.open("c", home=home)
        assert col.count() == 301 and col.search(vectors(1, 9)[0], k=1)[0].id == "small"
        col.add(["after"], vectors=vectors(1, 10))  # and writes work again once there is room
        col.close()
        assert doctor("c", home=home).healthy


def test_cli_on_a_full_disk_prints_one_line(tmp_path):
    source = tmp_path / "batch.npy"
    np.save(source, vectors(3000, 2))
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"w{i}\n" for i in range(3000)))
    with tmpfs(tmp_path / "disk", "4m") as disk:
        home = disk / "home"
        make(home)
        filler = fill(disk)
        runner = CliRunner()
        for args in (["add", "c", str(source), "--ids-file", str(ids)], ["compact", "c"]):
            result = runner.invoke(app, [*args, "--home", str(home)])
            assert result.exit_code == 1, (args, result.output)
            assert "no space left on device while writing c; free space and retry" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert isinstance(result.exception, SystemExit), result.exception
        assert temp_files(home) == []
        filler.unlink()
        col = ls.open("c", home=home)
        assert col.count() == 300
        col.close()
        assert doctor("c", home=home).healthy


# --- disk full: injected --------------------------------------------------------------------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write_index", "write_text", "fsync", "replace"])
def test_injected_enospc_while_checkpointing(tmp_path, monkeypatch, where, caplog):
    home = tmp_path / "home"
    make(home)
    before = {f: file_sha256(home / "c" / f) for f in ("index.faiss", "index.checkpoint.json")}
    col = ls.open("c", home=home)
    col.add(["x"], vectors=vectors(1, 5))
    import faiss

    if where == "write_index":

        def write_index(index, path):  # FAISS's own error: a RuntimeError naming errno's text
            Path(path).write_bytes(b"")
            raise RuntimeError("Error in faiss::FileIOWriter: write error (No space left on device)")

        monkeypatch.setattr(faiss, "write_index", write_index)
    elif where == "write_text":
        monkeypatch.setattr(Path, "write_text", enospc)
    else:
        monkeypatch.setattr(fileio.os, where, enospc)
    with pytest.raises(DiskFullError, match="^no space left on device while writing c; free space and retry$"):
        col.save()
    col.close()  # no raise
    monkeypatch.undo()
    assert temp_files(home) == []
    if where != "replace" and where != "fsync":  # nothing was renamed: the old pair is untouched
        assert {f: file_sha256(home / "c" / f) for f in before} == before
    col = ls.open("c", home=home)
    assert col.count() == 301 and col.search(vectors(1, 5)[0], k=1)[0].id == "x"
    col.close()
    assert doctor("c", home=home).healthy


class FullDisk:
    """An sqlite3 connection whose writes fail as on a full disk (SQLite then rolls back by itself)."""

    def __init__(self, conn):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def executemany(self, sql, rows):
        import sqlite3

        self._conn.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
        raise sqlite3.OperationalError("database or disk is full")


def test_injected_full_disk_in_sqlite_names_the_cause(tmp_path):
    home = tmp_path / "home"
    make(home)
    col = ls.open("c", home=home)
    col.store.conn = FullDisk(col.store.conn)
    for write in (
        lambda: col.add(["y"], vectors=vectors(1, 3)),
        lambda: col.delete(["v1"]),
        lambda: col.update_metadata({"v1": {"g": 9}}),
    ):
        with pytest.raises(DiskFullError, match="^no space left on device while writing c; free space and retry$"):
            write()
    col.store.conn = col.store.conn._conn
    assert col.count() == 300 and col.get(["v1"])[0].metadata == {"g": 1}
    col.close()


def test_projection_cache_on_a_full_disk_still_answers(tmp_path, monkeypatch, caplog):
    home = tmp_path / "home"
    make(home)
    col = ls.open("c", home=home)
    import latentsearch.latent as latent

    monkeypatch.setattr(latent.np, "savez", enospc)
    assert len(col.project("pca").ids) == 300
    assert any("projection not cached" in r.getMessage() for r in caplog.records)
    assert temp_files(home) == []
    col.close()
