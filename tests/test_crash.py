"""A writer SIGKILLed mid-add loses nothing it acknowledged and leaves no partial batch."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import latentsearch as ls

BATCH, DIM = 250, 24

WRITER = (
    textwrap.dedent(
        """
    import sys, numpy as np, latentsearch as ls
    home, batches, save_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    col = ls.open("crash", home=home)
    for b in range(batches):
        rng = np.random.default_rng(b)
        ids = [f"b{b}-{i}" for i in range(BATCH)]
        col.add(ids, vectors=rng.normal(size=(BATCH, DIM)).astype("float32"), metadata=[{"batch": b}] * BATCH)
        if save_every and b % save_every == 0:
            col.save()  # checkpoints of the index get killed too
        print(f"ack {b}", flush=True)
    """
    )
    .replace("BATCH", str(BATCH))
    .replace("DIM", str(DIM))
)


@pytest.mark.parametrize(("index", "save_every", "kill_after"), [("hnsw", 1, 3), ("flat", 2, 5), ("ivf", 1, 8)])
def test_sigkill_mid_add_keeps_every_acknowledged_batch(home, tmp_path, index, save_every, kill_after):
    ls.create("crash", encoder="precomputed", dim=DIM, index=index, home=home).close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(home), "1000", str(save_every)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked = []
    for line in proc.stdout:
        acked.append(int(line.split()[1]))
        if len(acked) == kill_after:
            time.sleep(0.01 * kill_after)  # land somewhere inside the next add or save
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    col = ls.open("crash", home=home)
    count = col.count()
    # Every acknowledged batch is there; whatever else is there is whole batches (no partial batch).
    assert count >= len(acked) * BATCH
    assert count % BATCH == 0
    present = {it.metadata["batch"] for it in col.items()}
    assert set(acked) <= present
    assert present == set(range(len(present)))
    # And searchable: each acknowledged batch's vectors find themselves.
    for b in acked:
        vectors = np.random.default_rng(b).normal(size=(BATCH, DIM)).astype("float32")
        for i in (0, BATCH // 2, BATCH - 1):
            assert col.search(vectors[i], k=1, ef_search=128)[0].id == f"b{b}-{i}"
    assert col.backend.index.ntotal - len(col.backend.index.tombstones) == count
    col.close()
