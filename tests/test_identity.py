"""Index identity: an index.faiss + checkpoint copied in from another collection (same dimension,
count and change sequence) is detected on open, warned about and rebuilt, and ``doctor`` reports it
for every index kind."""

import logging
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.index.faiss_index import CHECKPOINT_FILE, INDEX_FILE, Checkpoint
from latentsearch.workflows.doctor import doctor

DIM = 8
# Collection sizes at which each kind is really built (not its exact stand-in).
N = {"flat": 300, "hnsw": 300, "sq8": 300, "ivf": 800, "ivfpq": 39 * 256 + 50}
KINDS = [pytest.param(k, marks=pytest.mark.slow) if k == "ivfpq" else k for k in N]  # ivfpq: a minute


def twins(home, kind: str, n: int) -> None:
    """Two collections built by the same calls (so the same rowids, count and sequence), other vectors."""
    for name, seed in (("mine", 0), ("other", 1)):
        col = ls.create(name, encoder="precomputed", dim=DIM, index=kind, home=home)
        vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
        col.add([f"v{i}" for i in range(n)], vectors=vectors)
        col.close()


def copy_index(home) -> None:
    for file in (INDEX_FILE, CHECKPOINT_FILE):
        shutil.copy(home / "other" / file, home / "mine" / file)


@pytest.mark.parametrize("kind", KINDS)
def test_foreign_index_is_reported_by_doctor_and_repaired(tmp_path, kind):
    home = tmp_path / "home"
    twins(home, kind, N[kind])
    mine, other = Checkpoint.read(home / "mine" / CHECKPOINT_FILE), Checkpoint.read(home / "other" / CHECKPOINT_FILE)
    assert (mine.seq, mine.factory, mine.rowids_digest) == (other.seq, other.factory, other.rowids_digest)
    assert mine.factory != "Flat" or kind == "flat"
    assert mine.collection_id != other.collection_id
    copy_index(home)

    report = doctor("mine", home=home)
    assert not report.healthy
    finding = next(f for f in report.findings if f.check == "faiss index")
    assert "another collection" in finding.detail
    assert Checkpoint.read(home / "mine" / CHECKPOINT_FILE).collection_id == other.collection_id  # untouched

    repaired = doctor("mine", home=home, repair=True)
    assert repaired.healthy
    assert doctor("mine", home=home).healthy
    assert Checkpoint.read(home / "mine" / CHECKPOINT_FILE).collection_id == mine.collection_id


def test_foreign_index_is_rebuilt_on_open_with_a_warning(tmp_path, caplog):
    home = tmp_path / "home"
    twins(home, "flat", 200)
    copy_index(home)
    col = ls.open("mine", home=home)
    probe = col.vectors_of(["v5"])[0]
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        hits = col.search(probe, k=1)
    assert hits[0].id == "v5" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert any("another collection" in r.getMessage() for r in caplog.records)
    col.close()
    assert doctor("mine", home=home).healthy


def diverged_copy_index(home) -> None:
    """Collection "a" and a copy "b" of its folder (same collection id) that each lost another item
    (same sequence and count, other rowids); then b's index + checkpoint copied into a."""
    col = ls.create("a", encoder="precomputed", dim=DIM, home=home)
    col.add([f"v{i}" for i in range(50)], vectors=np.random.default_rng(0).normal(size=(50, DIM)))
    col.close()
    shutil.copytree(home / "a", home / "b")
    for name, victim in (("a", "v1"), ("b", "v2")):
        col = ls.open(name, home=home)
        col.delete([victim])
        col.close()
    for file in (INDEX_FILE, CHECKPOINT_FILE):
        shutil.copy(home / "b" / file, home / "a" / file)


def test_index_of_other_contents_is_rebuilt(tmp_path, caplog):
    """Same collection id (a folder copied), other rowids: the digest catches it."""
    home = tmp_path / "home"
    diverged_copy_index(home)
    report = doctor("a", home=home)
    assert "does not hold the items" in next(f for f in report.findings if f.check == "faiss index").detail
    col = ls.open("a", home=home)
    assert "v1" not in {h.id for h in col.search(col.vectors_of(["v3"])[0], k=50)}
    assert col.backend.index.ntotal == 49
    col.close()


def test_collections_without_an_id_get_one(tmp_path):
    home = tmp_path / "home"
    col = ls.create("old", encoder="precomputed", dim=DIM, home=home)
    col.add(["x", "y"], vectors=np.eye(2, DIM))
    col.close()
    import sqlite3

    conn = sqlite3.connect(home / "old" / "collection.sqlite")
    conn.execute("DELETE FROM manifest WHERE key = 'collection_id'")
    conn.commit()
    conn.close()
    col = ls.open("old", home=home)
    first = col.backend.collection_id
    assert len(first) == 32 and col.search(np.eye(1, DIM)[0], k=1)[0].id == "x"
    col.close()
    col = ls.open("old", home=home)
    assert col.backend.collection_id == first
    col.close()


def test_cli_doctor_reports_and_repairs_a_foreign_index(tmp_path):
    home = tmp_path / "home"
    twins(home, "hnsw", 200)
    copy_index(home)
    runner = CliRunner()
    found = runner.invoke(app, ["doctor", "mine", "--json", "--home", str(home)])
    assert found.exit_code == 2 and "another collection" in found.output, found.output
    fixed = runner.invoke(app, ["doctor", "mine", "--repair", "--home", str(home)])
    assert fixed.exit_code == 0, fixed.output
    assert runner.invoke(app, ["doctor", "mine", "--home", str(home)]).exit_code == 0


def _strip_identity(folder) -> None:
    """Make a checkpoint look as one written before indexes were bound to their collection."""
    import json

    path = folder / CHECKPOINT_FILE
    data = json.loads(path.read_text())
    for key in ("collection_id", "rowids_digest", "max_rowid"):
        data.pop(key, None)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_checkpoint_from_before_identity_is_adopted_not_rebuilt(tmp_path, caplog, kind):
    home = tmp_path / "home"
    twins(home, kind, 300)
    col = ls.open("mine", home=home)
    col.delete(["v3"])  # tombstones (HNSW) and deletions must count as they did
    col.close()
    _strip_identity(home / "mine")
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        col = ls.open("mine", home=home)
        probe = col.vectors_of(["v5"])[0]
        assert col.search(probe, k=1)[0].id == "v5"
        col.close()
    assert not [r for r in caplog.records if "rebuilding" in r.getMessage()]  # adopted as it was
    adopted = Checkpoint.read(home / "mine" / CHECKPOINT_FILE)
    assert adopted.collection_id and adopted.rowids_digest  # bound from now on
    assert doctor("mine", home=home).healthy


def test_an_old_checkpoint_over_foreign_contents_is_rebuilt(tmp_path, caplog):
    home = tmp_path / "home"
    diverged_copy_index(home)
    _strip_identity(home / "a")
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        col = ls.open("a", home=home)
        assert "v2" in [h.id for h in col.search(col.vectors_of(["v2"])[0], k=3)]
        assert "v1" not in [h.id for h in col.search(np.random.default_rng(0).normal(size=(50, DIM))[1], k=50)]
        col.close()
    assert any("does not hold the items" in r.getMessage() for r in caplog.records)
