"""Backups while writers run (SQLite's online backup), restores, and their refusals."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app

from .conftest import random_vectors

runner = CliRunner()
DIM = 16


def items_of(col):
    return {i.id: (i.metadata, i.vector.tobytes()) for i in col.iter_items(with_vectors=True)}


def test_a_backup_taken_while_a_writer_adds_is_a_consistent_prefix_and_restores(home, tmp_path):
    col = ls.create("live", encoder="precomputed", dim=DIM, metric="l2", index="hnsw", home=home)
    col.add([f"a{i}" for i in range(500)], vectors=random_vectors(500, DIM), metadata=[{"n": i} for i in range(500)])
    stop, written = threading.Event(), []
    writer = ls.open("live", home=home)  # another connection, as another process's writer would be

    def write() -> None:
        batch = 0
        while not stop.is_set():
            ids = [f"w{batch}-{j}" for j in range(20)]
            writer.add(ids, vectors=random_vectors(20, DIM, seed=batch + 1), metadata=[{"batch": batch}] * 20)
            written.append(batch)
            batch += 1

    thread = threading.Thread(target=write)
    thread.start()
    copied = []
    try:
        while not written:  # the writer is under way before the copy starts
            stop.wait(0.01)
        col.backup(tmp_path / "copy", on_file=copied.append)
        during = len(written)
    finally:
        stop.set()
        thread.join()
    assert during >= 1 and copied[-1] == "collection.sqlite" and "index.faiss" in copied
    restored = ls.connect(home).restore(tmp_path / "copy", "restored")
    kept, source = items_of(restored), items_of(writer)
    batches = {m["batch"] for m, _ in kept.values() if "batch" in m}
    assert set(batches) == set(range(len(batches)))  # whole batches, from the first on: one snapshot
    assert all(sum(m.get("batch") == b for m, _ in kept.values()) == 20 for b in batches)
    assert all(kept[k] == source[k] for k in kept)  # every kept item as it is in the source
    assert sum(k.startswith("a") for k in kept) == 500
    assert restored.search(random_vectors(1, DIM, seed=1)[0], k=1)[0].id == "w0-0"  # the index caught up
    for c in (restored, writer, col):
        c.close()


def test_items_written_after_the_index_was_copied_are_found_in_the_restored_collection(home, tmp_path):
    col = ls.create("c", encoder="precomputed", dim=DIM, metric="l2", index="hnsw", home=home)
    col.add([f"a{i}" for i in range(200)], vectors=random_vectors(200, DIM))
    late = random_vectors(5, DIM, seed=9)

    def between_files(path: str) -> None:
        if path == "index.faiss":  # the index is copied, the database not yet: a write lands between
            col.add([f"late{i}" for i in range(5)], vectors=late)

    col.backup(tmp_path / "copy", on_file=between_files)
    restored = ls.connect(home).restore(tmp_path / "copy", "r")
    assert restored.count() == 205
    assert [restored.search(v, k=1)[0].id for v in late] == [f"late{i}" for i in range(5)]
    assert restored.info()["change_seq"] == col.info()["change_seq"]
    restored.close()
    col.close()


def test_refusals_change_nothing(home, tmp_path):
    col = ls.create("c", encoder="precomputed", dim=DIM, home=home)
    col.add(["x"], vectors=random_vectors(1, DIM))
    (tmp_path / "taken").mkdir()
    with pytest.raises(ls.ConflictError, match="exists: back up into a new folder"):
        col.backup(tmp_path / "taken")
    assert list((tmp_path / "taken").iterdir()) == []
    with pytest.raises(ls.InvalidInputError, match="does not exist"):
        col.backup(tmp_path / "no" / "such" / "place")
    col.backup(tmp_path / "copy")
    with pytest.raises(ls.ConflictError, match="collection 'c' exists"):
        ls.connect(home).restore(tmp_path / "copy", "c")
    with pytest.raises(ls.CollectionNotFoundError, match="holds no collection backup"):
        ls.connect(home).restore(tmp_path / "taken", "other")
    assert ls.connect(home).list() == ["c"] and col.count() == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial copies left
    col.close()


def test_the_cli_backs_up_and_restores(home, tmp_path):
    col = ls.create("c", encoder="precomputed", dim=DIM, home=home)
    col.add(["x", "y"], vectors=random_vectors(2, DIM), metadata=[{"k": 1}, {"k": 2}])
    col.close()
    done = runner.invoke(app, ["backup", "c", str(tmp_path / "bk")])
    assert done.exit_code == 0 and "backed up c into" in done.output
    again = runner.invoke(app, ["backup", "c", str(tmp_path / "bk")])
    assert again.exit_code != 0 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    back = runner.invoke(app, ["restore", str(tmp_path / "bk"), "c2"])
    assert back.exit_code == 0 and "restored c2 (2 items)" in back.output
    restored = ls.open("c2", home=home)
    assert items_of(restored) == items_of(ls.open("c", home=home))
    assert np.allclose(restored.get(["y"], with_vectors=True)[0].vector, ls.open("c", home=home).vectors_of(["y"])[0])
    clash = runner.invoke(app, ["restore", str(tmp_path / "bk"), "c"])
    assert clash.exit_code != 0 and "exists" in clash.stderr


def test_a_copy_that_fails_its_check_never_appears(home, tmp_path, monkeypatch):
    from latentsearch import collection as collection_module

    col = ls.create("c", encoder="precomputed", dim=DIM, home=home)
    col.add(["x"], vectors=random_vectors(1, DIM))

    def broken(folder):
        raise ls.CorruptCollectionError(f"{folder.name} does not open")

    monkeypatch.setattr(collection_module, "_check_copy", broken)
    with pytest.raises(ls.CorruptCollectionError, match="does not open"):
        col.backup(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    col.close()


def test_the_index_and_its_checkpoint_are_copied_under_the_index_lock(home, tmp_path, monkeypatch, caplog):
    from latentsearch.storage import backup as backup_module

    col = ls.create("c", encoder="precomputed", dim=DIM, index="hnsw", home=home)
    col.add(["x", "y"], vectors=random_vectors(2, DIM))
    col.save()
    held = []
    real = backup_module.exclusive_lock
    monkeypatch.setattr(backup_module, "exclusive_lock", lambda path: held.append(path.name) or real(path))
    copied = []
    col.backup(tmp_path / "copy", on_file=copied.append)
    assert held == ["index.lock"] and {"index.faiss", "index.checkpoint.json"} <= set(copied)
    with caplog.at_level("WARNING", logger="latentsearch"):
        restored = ls.connect(home).restore(tmp_path / "copy", "r")
        assert restored.backend.index.ntotal == 2
    assert "rebuilding" not in caplog.text  # the copied pair loaded as it was
    col.close()
    restored.close()
