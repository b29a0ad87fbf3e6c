"""Fault injection: a writer process doing random work is SIGKILLed at a random moment; then the
collection is reopened and checked against what the writer had acknowledged.

Used by tests/test_reliability.py (a handful of trials) and benchmarks/reliability.py (hundreds).
The writer logs ``begin OP`` before each operation and ``ack OP`` after it returns. The state after a
kill must be exactly the replay of the acknowledged operations, or of those plus the one in flight
(which may have committed before its ack was printed): never anything in between.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

DIM = 16
WRITER = textwrap.dedent(
    """
    import json, sys, zlib
    import numpy as np
    import latentsearch as ls

    home, seed, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    col = ls.open("faults", home=home)
    live = sorted(it.id for it in col.items())
    next_id = len(col.items()) + 10_000 * seed

    def vector(item_id, op):
        return np.random.default_rng(zlib.crc32(f"{item_id}|{op}".encode())).normal(size=dim).astype("float32")

    def log(kind, op):
        print(kind, json.dumps(op), flush=True)

    for number in range(10_000):
        kind = rng.choice(["add", "add", "upsert", "delete", "save", "compact", "project"])
        op = {"n": number, "kind": str(kind), "seed": seed}
        if kind == "add":
            op["ids"] = [f"s{seed}-i{next_id + i}" for i in range(int(rng.integers(1, 60)))]
            next_id += len(op["ids"])
        elif kind in ("upsert", "delete"):
            if not live:
                continue
            op["ids"] = sorted(rng.choice(live, size=min(len(live), int(rng.integers(1, 20))), replace=False).tolist())
        log("begin", op)
        tag = f"{seed}:{number}"
        if kind in ("add", "upsert"):
            vectors = np.stack([vector(i, tag) for i in op["ids"]])
            getattr(col, kind)(op["ids"], vectors=vectors, metadata=[{"op": tag}] * len(op["ids"]))
            live = sorted(set(live) | set(op["ids"]))
        elif kind == "delete":
            col.delete(op["ids"])
            live = sorted(set(live) - set(op["ids"]))
        elif kind == "save":
            col.save()
        elif kind == "compact":
            col.compact()
        elif kind == "project" and len(live) >= 4:
            col.project("pca")
        log("ack", op)
    """
)


def expected_vector(item_id: str, tag: str) -> np.ndarray:
    """The vector the writer stores for an item written by operation ``tag`` (the same seed in both processes)."""
    return np.random.default_rng(zlib.crc32(f"{item_id}|{tag}".encode())).normal(size=DIM).astype("float32")


def replay(state: dict[str, str], op: dict[str, Any]) -> dict[str, str]:
    """Apply one logged operation to an ``id -> op tag`` map."""
    state = dict(state)
    tag = f"{op['seed']}:{op['n']}"
    if op["kind"] in ("add", "upsert"):
        state.update({i: tag for i in op["ids"]})
    elif op["kind"] == "delete":
        for i in op["ids"]:
            state.pop(i, None)
    return state


def run_trial(home: Path, seed: int, *, index: str, kill_after: float, before: dict[str, str]) -> dict[str, Any]:
    """One trial: start the writer, kill it after ``kill_after`` seconds, check the collection.

    ``before`` is the state the collection had (``id -> op tag``); returns the trial's record with the
    state after it and a list of problems (empty when nothing was lost or half-written).
    """
    import latentsearch as ls

    script = home / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(home), str(seed), str(DIM)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(kill_after)
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    acked, in_flight = [], None
    for line in out.splitlines():
        kind, _, payload = line.partition(" ")
        try:
            op = json.loads(payload)
        except json.JSONDecodeError:
            continue  # the line the kill cut short
        if kind == "begin":
            in_flight = op
        elif kind == "ack":
            acked.append(op)
            in_flight = None
    problems: list[str] = []
    if proc.returncode != -signal.SIGKILL:
        problems.append(f"writer ended by itself (code {proc.returncode}): {err.strip().splitlines()[-1:]}")
    state = before
    for op in acked:
        state = replay(state, op)
    candidates = [state] + ([replay(state, in_flight)] if in_flight else [])
    try:
        col = ls.open("faults", home=home)
    except ls.LatentSearchError as exc:
        return {
            "seed": seed,
            "acked": len(acked),
            "in_flight": in_flight,
            "problems": [f"cannot open: {exc}"],
            "state": state,
        }
    try:
        seen = {it.id: it.metadata.get("op") for it in col.items()}
        if seen not in candidates:
            missing = set(state) - set(seen)
            extra = set(seen) - set(candidates[-1])
            problems.append(f"state is no replay of the log: {len(missing)} acknowledged missing, {len(extra)} extra")
        else:
            state = seen
        ids = sorted(seen)
        if ids:
            stored = col.vectors_of(ids)
            wanted = np.stack([expected_vector(i, seen[i]) for i in ids])
            wanted /= np.linalg.norm(wanted, axis=1, keepdims=True)
            if not np.allclose(stored, wanted, atol=1e-5):
                problems.append("stored vectors differ from the ones written")
            # Search equals a clean rebuild: exact top-10 over the SQLite vectors.
            index = col.backend.index
            if index.ntotal - len(index.tombstones) != len(ids):
                problems.append(f"index holds {index.ntotal - len(index.tombstones)} vectors for {len(ids)} items")
            for q in wanted[:: max(1, len(ids) // 5)][:5]:
                truth = [ids[j] for j in np.argsort(-(stored @ q), kind="stable")[:10]]
                got = [h.id for h in col.search(q, k=10, ef_search=256, nprobe=4096)]
                if set(got) != set(truth):
                    problems.append(f"search differs from a clean rebuild ({index.factory})")
                    break
            if len(ids) >= 4 and sorted(col.project("pca").ids) != ids:
                problems.append("cached projection does not match the items")
    finally:
        col.close()
    return {"seed": seed, "acked": len(acked), "in_flight": in_flight, "problems": problems, "state": state}


# --- crash-point enumeration -----------------------------------------------------------------------

CRASH_POINT_RUNNER = textwrap.dedent(
    """
    import os, signal, sys

    stop_at, prelude, action = int(sys.argv[1]), open(sys.argv[2]).read(), open(sys.argv[3]).read()
    scope = {}
    exec(prelude, scope)  # imports and set-up run before any crash is armed
    calls = [0]

    def killing(fn):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == stop_at:
                os.kill(os.getpid(), signal.SIGKILL)  # a crash just before this file operation
            return fn(*args, **kwargs)
        return wrapped

    for name in ("replace", "rename", "link", "unlink", "rmdir", "mkdir", "fsync"):
        setattr(os, name, killing(getattr(os, name)))
    exec(action, scope)
    print("finished", calls[0])
    """
)


def crash_points(workdir: Path, prelude: str, action: str, reset, check, limit: int = 80) -> int:
    """Kill a process running ``action`` just before its 1st, 2nd, ... file operation (rename, unlink,
    fsync, mkdir...), calling ``reset()`` before and ``check(point)`` after each crash, until a run
    finishes. Returns the number of crash points tried. Tests use it to show that a crash anywhere in
    an operation leaves a state the next process handles."""
    runner, prelude_file, action_file = workdir / "runner.py", workdir / "prelude.py", workdir / "action.py"
    runner.write_text(CRASH_POINT_RUNNER)
    prelude_file.write_text(textwrap.dedent(prelude))
    action_file.write_text(textwrap.dedent(action))
    for point in range(1, limit + 1):
        reset()
        proc = subprocess.run(
            [sys.executable, str(runner), str(point), str(prelude_file), str(action_file)],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            tally = os.environ.get("LATENTSEARCH_CRASH_POINTS_FILE")  # the soak run's count
            if tally:
                with open(tally, "a") as handle:
                    handle.write(f"{action.strip().splitlines()[-1]}\t{point - 1}\n")
            return point - 1
        if proc.returncode != -signal.SIGKILL:
            raise AssertionError(f"crash point {point}: the action failed by itself: {proc.stderr.strip()[-800:]}")
        check(point)
    raise AssertionError(f"the action still had file operations after {limit} crash points")
