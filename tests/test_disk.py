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
from latentsearch.errors import DiskFullError, ReadOnlyError
from latentsearch.fileio import file_sha256
from latentsearch.workflows.doctor import doctor

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
        # The index, fed while SQLite wrote, forgot the failed batch: reloaded, it finds what was acknowledged.
        assert col.search(vectors(1, 9)[0], k=1)[0].id == "small"
        assert col.backend.index.ntotal == 301
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

        def write_index(index, writer):  # a FAISS error that only names errno's text
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
    col.backend.store.conn = FullDisk(col.backend.store.conn)
    for write in (
        lambda: col.add(["y"], vectors=vectors(1, 3)),
        lambda: col.delete(["v1"]),
        lambda: col.update_metadata({"v1": {"g": 9}}),
    ):
        with pytest.raises(DiskFullError, match="^no space left on device while writing c; free space and retry$"):
            write()
    col.backend.store.conn = col.backend.store.conn._conn
    assert col.count() == 300 and col.get(["v1"])[0].metadata == {"g": 1}
    col.close()


def test_projection_cache_on_a_full_disk_still_answers(tmp_path, monkeypatch, caplog):
    home = tmp_path / "home"
    make(home)
    col = ls.open("c", home=home)
    import latentsearch.analysis.latent as latent

    monkeypatch.setattr(latent.np, "savez", enospc)
    assert len(col.project("pca").ids) == 300
    assert any("projection not cached" in r.getMessage() for r in caplog.records)
    assert temp_files(home) == []
    col.close()


# --- read-only data --------------------------------------------------------------------------------

READ_ONLY_WORDS = ("damaged", "--repair", "corrupt")


def make_readable(home: Path, *, drop_index: bool = False) -> None:
    """A collection with texts (for lexical search), metadata and a cached PCA map."""
    col = ls.create("c", encoder="precomputed", dim=DIM, index="hnsw", home=home)
    texts = [f"item number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(200)]
    col.add([f"v{i}" for i in range(200)], texts, vectors=vectors(200, 0), metadata=[{"g": i % 3} for i in range(200)])
    col.delete(["v0"])
    col.project("pca")
    col.close()
    if drop_index:
        (home / "c" / "index.faiss").unlink()


def check_reads(home: Path, monkeypatch) -> None:
    import latentsearch.analysis.latent as latent

    col = ls.open("c", home=home)
    assert col.backend.store.read_only
    assert col.count() == 199 and col.info()["count"] == 199
    assert col.get(["v3"])[0].text == "item number 3 about cats"
    probe = vectors(200, 0)[3]
    assert col.search(probe, k=1)[0].id == "v3"
    lexical = col.search("cats", mode="lexical", k=5)
    assert len(lexical) == 5 and all("cats" in h.text for h in lexical)
    for mode in ("hybrid", "vector"):
        hits = col.search(mode=mode, like="v3", k=3)
        assert len(hits) == 3 and "v3" not in {h.id for h in hits}
    assert all(h.metadata["g"] == 1 for h in col.search(probe, k=10, where={"g": 1}))
    with monkeypatch.context() as patch:  # the cached map is read, not recomputed
        patch.setattr(latent, "_run", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
        assert len(col.project("pca").ids) == 199
    for write in (
        lambda: col.add(["new"], vectors=vectors(1, 4)),
        lambda: col.delete(["v1"]),
        lambda: col.update_metadata({"v1": {"g": 7}}),
        lambda: col.index_field("g"),
        lambda: col.compact(),
    ):
        with pytest.raises(ReadOnlyError) as caught:
            write()
        assert "read-only" in str(caught.value) and "\n" not in str(caught.value)
        assert not any(word in str(caught.value) for word in READ_ONLY_WORDS)
    col.close()
    report = doctor("c", home=home)
    assert report.healthy, report.findings
    with pytest.raises(ReadOnlyError):
        doctor("c", home=home, repair=True)


def check_cli_reads(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "map.html"
    reads = [
        ["count", "c"],
        ["info", "c", "--json"],
        ["get", "c", "v3"],
        ["search", "c", "cats", "--mode", "lexical", "--json"],
        ["map", "c", "--method", "pca", "--out", str(out)],
        ["doctor", "c"],
    ]
    for args in reads:
        result = runner.invoke(app, [*args, "--home", str(home)])
        assert result.exit_code == 0, (args, result.output)
        assert not any(word in result.output for word in READ_ONLY_WORDS), (args, result.output)
    assert out.exists()
    source = tmp_path / "one.jsonl"
    source.write_text('{"id": "n1", "text": "x", "vector": [' + ",".join(["0.5"] * DIM) + "]}\n")
    for args in (["add", "c", str(source), "--vector-field", "vector"], ["delete", "c", "v1"], ["compact", "c"]):
        result = runner.invoke(app, [*args, "--home", str(home)])
        assert result.exit_code == 1, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "read-only" in errors[0] and "Traceback" not in result.output, result.stderr
        assert not any(word in result.stderr for word in READ_ONLY_WORDS)


@pytest.mark.parametrize("drop_index", [False, True])
def test_a_read_only_mount_serves_every_read(tmp_path, monkeypatch, drop_index):
    with tmpfs(tmp_path / "disk", "16m") as disk:
        home = disk / "home"
        make_readable(home, drop_index=drop_index)
        before = sorted(p.name for p in (home / "c").iterdir())
        remount(disk, "ro")
        check_reads(home, monkeypatch)
        check_cli_reads(home, tmp_path)
        assert sorted(p.name for p in (home / "c").iterdir()) == before
        remount(disk, "rw")
        col = ls.open("c", home=home)  # writable again: it writes as before
        col.add(["later"], vectors=vectors(1, 8))
        assert col.count() == 200
        col.close()


def test_read_only_bind_mount_of_a_collection_being_written(tmp_path, monkeypatch):
    """Another user's files: the owner writes through the real folder while a reader has a read-only
    view of it (SQLite's write-ahead log and shared memory files exist, and are only read)."""
    source, view = tmp_path / "source", tmp_path / "view"
    make_readable(source)
    writer = ls.open("c", home=source)
    writer.add(["fresh"], vectors=vectors(1, 11))  # in the WAL, not checkpointed into the file
    view.mkdir()
    done = subprocess.run(["mount", "--bind", str(source), str(view)], capture_output=True)
    if done.returncode != 0:
        writer.close()
        pytest.skip(f"cannot bind-mount here ({done.stderr.decode().strip()}): needs root")
    try:
        remount(view, "bind,ro")
        col = ls.open("c", home=view)
        assert col.backend.store.read_only and col.count() == 200
        assert col.search(vectors(1, 11)[0], k=1)[0].id == "fresh"
        writer.add(["fresher"], vectors=vectors(1, 12))
        assert col.count() == 201 and col.search(vectors(1, 12)[0], k=1)[0].id == "fresher"
        with pytest.raises(ReadOnlyError):
            col.add(["no"], vectors=vectors(1, 13))
        col.close()
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)
        writer.close()


def test_read_only_folder_simulated(tmp_path, monkeypatch):
    """Where no mount is permitted: the folder reports itself unwritable (as to a user without write
    permission) and SQLite is opened with mode=ro; the same reads and refusals."""
    home = tmp_path / "home"
    make_readable(home)
    import latentsearch.storage.store as storage
    import latentsearch.workflows.doctor as doctor_module

    monkeypatch.setattr(storage, "folder_writable", lambda folder: False)
    monkeypatch.setattr(doctor_module, "folder_writable", lambda folder: False)
    check_reads(home, monkeypatch)


def test_http_on_read_only_and_full_data(tmp_path, monkeypatch):
    """HTTP: reads answer 200, writes 409 (read-only) or 507 (disk full) in the error shape, never 500."""
    from fastapi.testclient import TestClient

    import latentsearch.storage.store as storage
    from latentsearch.server import create_app

    home = tmp_path / "home"
    make_readable(home)
    item = {"id": "n", "vector": [0.5] * DIM}
    with monkeypatch.context() as patch:
        patch.setattr(storage, "folder_writable", lambda folder: False)
        with TestClient(create_app(home)) as client:
            assert client.get("/api/collections/c").json()["count"] == 199
            found = client.post("/api/collections/c/search", json={"query": "cats", "mode": "lexical", "k": 3})
            assert found.status_code == 200 and len(found.json()) == 3, found.text
            refused = client.post("/api/collections/c/items", json={"items": [item]})
            assert refused.status_code == 409 and "read-only" in refused.json()["error"], refused.text
    with TestClient(create_app(home)) as client:
        assert client.get("/api/collections/c").status_code == 200
        import sqlite3

        def full(self, *args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(storage.Store, "_seq", staticmethod(lambda conn: full(None)))
        answer = client.post("/api/collections/c/items", json={"items": [item]})
        assert answer.status_code == 507, answer.text
        assert answer.json()["error"] == "no space left on device while writing c; free space and retry"
