"""Crashes, concurrency and corruption: nothing acknowledged is lost, nothing half-written is seen."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.workflows.doctor import doctor

from .faults import DIM, crash_points, run_trial


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf"])
def test_sigkilled_writer_at_random_moments(home, index):
    ls.create("faults", encoder="precomputed", dim=DIM, index=index, home=home).close()
    rng = np.random.default_rng(7)
    state: dict[str, str] = {}
    for trial in range(3):
        record = run_trial(home, seed=trial + 1, index=index, kill_after=float(rng.uniform(1.0, 2.5)), before=state)
        assert record["problems"] == [], record
        assert record["acked"] > 0
        state = record["state"]
    assert doctor("faults", home=home).healthy


READER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import latentsearch as ls
    home, seconds, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    col = ls.open("shared", home=home)
    end, reads = time.time() + seconds, 0
    while time.time() < end:
        n = col.count()
        assert n % batch == 0, f"partial batch visible: {n} items"
        hits = col.search(np.ones(8, dtype="float32"), k=5)
        assert min(5, n) <= len(hits) <= 5  # items only grow meanwhile
        reads += 1
    print("reads", reads, flush=True)
    """
)
WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import latentsearch as ls
    home, name = sys.argv[1], sys.argv[2]
    batches, batch, timeout = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    col = ls.open("shared", home=home)
    col.backend.store.timeout = timeout
    col.backend.store.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    done = locked = 0
    for b in range(batches):
        ids = [f"{name}-{b}-{i}" for i in range(batch)]
        vectors = np.random.default_rng(b).normal(size=(batch, 8)).astype("float32")
        while True:
            try:
                col.add(ids, vectors=vectors)
                done += 1
                break
            except ls.LockTimeoutError as exc:
                assert "locked by another writer" in str(exc)
                locked += 1
    col.close()
    print("batches", done, "locked", locked, flush=True)
    """
)


def test_concurrent_writers_and_readers(home, tmp_path):
    ls.create("shared", encoder="precomputed", dim=8, index="hnsw", home=home).close()
    (tmp_path / "reader.py").write_text(READER)
    (tmp_path / "writer.py").write_text(WRITER)
    batch, batches = 20, 15
    writers = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "writer.py"), str(home), f"w{i}", str(batches), str(batch), str(timeout)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, timeout in enumerate((30.0, 30.0, 0.001))  # the last one gives up quickly, then retries
    ]
    readers = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "reader.py"), str(home), "6", str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in writers + readers]
    for proc, (_, err) in zip(writers + readers, outputs):
        assert proc.returncode == 0, err
    assert all(int(out.split()[1]) > 0 for out, _ in outputs[len(writers) :])  # readers really read
    col = ls.open("shared", home=home)
    assert col.count() == 3 * batches * batch
    assert col.backend.index.ntotal - len(col.backend.index.tombstones) == col.count()
    assert doctor("shared", home=home).healthy
    col.close()


def test_one_damaged_collection_does_not_hide_the_others(home):
    import json

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from latentsearch.cli import app
    from latentsearch.server import create_app

    for name in ("good", "bad"):
        ls.create(name, encoder="precomputed", dim=4, home=home).close()
    (home / "bad" / "collection.sqlite").write_bytes(b"this is not a database" * 100)
    listed = CliRunner().invoke(app, ["list", "--json", "--home", str(home)])
    assert listed.exit_code == 0, listed.output
    good, bad = sorted(json.loads(listed.stdout), key=lambda row: row["name"] != "good")
    assert good == {"name": "good", "count": 0, "encoder": "precomputed", "dim": 4, "modality": "vector"}
    assert bad["name"] == "bad" and "latentsearch doctor bad --repair" in bad["problem"]
    table = CliRunner().invoke(app, ["list", "--home", str(home)])
    assert table.exit_code == 0 and "cannot be opened" in table.stdout and "good" in table.stdout
    with TestClient(create_app(home)) as client:
        rows = client.get("/api/collections").json()
    assert [row["name"] for row in rows] == ["bad", "good"] and "problem" in rows[0] and rows[1]["count"] == 0


def damaged_collection(home, name="broken", n=3000):
    col = ls.create(name, encoder="precomputed", dim=16, home=home)
    vectors = np.random.default_rng(0).normal(size=(n, 16)).astype("float32")
    col.add([f"v{i}" for i in range(n)], vectors=vectors, metadata=[{"pad": "x" * 50}] * n)
    col.close()
    db = home / name / "collection.sqlite"
    data = bytearray(db.read_bytes())
    third = len(data) // 3  # the middle of the file: table and index pages, whatever the page size
    data[third : 2 * third] = b"Z" * third
    db.write_bytes(bytes(data))
    return db


@pytest.mark.slow  # (over 15 s: run by .ci/run's second step)
def test_a_repair_killed_at_any_file_operation_never_loses_the_collection(home, tmp_path):
    """Crash-point enumeration: kill ``doctor --repair`` before each of its file operations in turn;
    the collection must still be there, and a second repair must end with what one repair gives."""
    import shutil

    damaged_collection(home)
    pristine = tmp_path / "pristine"
    shutil.copytree(home / "broken", pristine)
    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference / "broken")
    assert doctor("broken", home=reference, repair=True).healthy
    expected = ls.open("broken", home=reference).count()

    def reset():
        shutil.rmtree(home / "broken")
        shutil.copytree(pristine, home / "broken")

    def check(point):
        assert (home / "broken" / "collection.sqlite").exists(), f"killed before file operation {point}"
        assert doctor("broken", home=home, repair=True).healthy, point
        col = ls.open("broken", home=home)
        assert col.count() == expected, point
        col.close()
        assert not list((home / "broken").glob(".salvage-*")), point  # nothing half-made is left

    prelude = f"from latentsearch.workflows.doctor import doctor\nHOME = {str(home)!r}"
    assert crash_points(tmp_path, prelude, "doctor('broken', home=HOME, repair=True)", reset, check) > 3


def test_damaged_sqlite_gives_a_clear_error_and_doctor_salvages(home):
    col = ls.create("broken", encoder="precomputed", dim=16, home=home)
    vectors = np.random.default_rng(0).normal(size=(3000, 16)).astype("float32")
    col.add([f"v{i}" for i in range(3000)], vectors=vectors, metadata=[{"pad": "x" * 50}] * 3000)
    col.close()
    db = home / "broken" / "collection.sqlite"
    data = bytearray(db.read_bytes())
    third = len(data) // 3  # the middle of the file: table and index pages, whatever the page size
    data[third : 2 * third] = b"Z" * third
    db.write_bytes(bytes(data))
    with pytest.raises(ls.CorruptCollectionError, match=r"collection.sqlite.*latentsearch doctor broken --repair"):
        ls.open("broken", home=home).count()
    report = doctor("broken", home=home)
    assert not report.healthy and "damaged" in report.findings[-1].detail
    repaired = doctor("broken", home=home, repair=True)
    assert repaired.healthy
    col = ls.open("broken", home=home)
    assert 1000 < col.count() < 3000
    kept = sorted(it.id for it in col.items())
    assert col.search(vectors[int(kept[-1][1:])], k=1)[0].id == kept[-1]
    col.add(["after"], vectors=vectors[:1])  # writable again, and the index stays in step
    assert col.backend.index.ntotal == col.count()
    col.close()
    assert list((home / "broken").glob("collection.sqlite.damaged-*"))  # the damaged file is kept


def test_doctor_repairs_a_stale_full_text_index_and_temp_files(home):
    col = ls.create("t", home=home, index="flat")
    col.add(["a", "b"], ["bread and butter", "stars at night"])
    col.close()
    (home / "t" / ".index.faiss.123.tmp").write_bytes(b"left over")
    import sqlite3

    conn = sqlite3.connect(home / "t" / "collection.sqlite")
    conn.execute("INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', 1 << 16, 'bread and butter')")
    conn.commit()
    conn.close()
    report = doctor("t", home=home)
    assert not report.healthy
    assert {f.check for f in report.findings if not f.ok} == {"temp files", "full-text index"}
    assert doctor("t", home=home, repair=True).healthy
    assert doctor("t", home=home).healthy
    col = ls.open("t", home=home)
    assert col.search("bread", mode="lexical", k=1)[0].id == "a"
    col.close()


@pytest.mark.slow  # each crash point starts a process that imports PyTorch and trains
@pytest.mark.parametrize("over_an_old_model", [False, True])
def test_autoencoder_save_killed_at_any_file_operation_leaves_a_loadable_model(tmp_path, over_an_old_model):
    """A save killed just before each of its file operations in turn (crash-point enumeration, no
    sleeps): the folder holds either no model or a whole one (the old or the new), and the next save
    completes and leaves no temp files."""
    import shutil

    from latentsearch.encoders.autoencoder import load_autoencoder

    folder = tmp_path / "model"
    prelude = f"""
        import numpy as np
        from latentsearch.encoders.autoencoder import AutoencoderConfig, train_autoencoder, save_autoencoder
        FOLDER = {str(folder)!r}
        config = AutoencoderConfig(image_size=8, latent_dim=4, base_filters=8)
        images = np.random.default_rng(0).random((16, 1, 8, 8)).astype("float32")
        model, losses = train_autoencoder(images, config, epochs=1)
        if {over_an_old_model}:
            save_autoencoder(model, config, FOLDER, losses=[9.0])  # the old model, saved before any crash
        """

    def reset() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def check(point: int) -> None:
        if (folder / "config.json").exists():
            model, config = load_autoencoder(folder)  # a folder with a config always has its weights
            assert config.latent_dim == 4, point
        else:
            assert not over_an_old_model, point  # the old model is never lost
        if not folder.exists():
            return
        from latentsearch.encoders.autoencoder import AutoencoderConfig, ConvAutoencoder, save_autoencoder

        config = AutoencoderConfig(image_size=8, latent_dim=4, base_filters=8)
        save_autoencoder(ConvAutoencoder(config), config, folder)  # the next save completes over the debris
        assert load_autoencoder(folder)[1].latent_dim == 4, point
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], point

    points = crash_points(tmp_path, prelude, "save_autoencoder(model, config, FOLDER, losses=losses)", reset, check)
    assert points >= 4  # mkdir, the weights' fsync and rename, the config's fsync and rename


def test_temp_files_of_killed_writers_are_removed_on_open(home):
    col = ls.create("tmpfiles", encoder="precomputed", dim=4, index="hnsw", home=home)
    col.add(["a", "b", "c", "d"], vectors=np.eye(4, dtype=np.float32))
    col.project("pca")
    col.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folder = home / "tmpfiles"
        stale = [folder / f".index.faiss.{dead.pid}.tmp", folder / "projections" / f".abc.{dead.pid}.tmp.npz"]
        busy = folder / f".index.checkpoint.json.{alive.pid}.tmp"
        for path in [*stale, busy]:
            path.write_bytes(b"partial")
        col = ls.open("tmpfiles", home=home)
        col.search(np.ones(4), k=1)  # loads the index
        col.add(["e"], vectors=np.ones((1, 4), dtype=np.float32))
        col.project("pca")  # writes a new cache
        col.close()
        assert not any(p.exists() for p in stale)
        assert busy.exists()  # a live process may still be writing it
    finally:
        alive.kill()
        alive.wait()
