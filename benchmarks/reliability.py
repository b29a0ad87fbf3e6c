"""Soak run of the fault, concurrency and bad-input suites, with the figures for the README.

- Crash trials: a writer doing random adds, upserts, deletes, index checkpoints, compactions and
  projection caching is SIGKILLed at a random moment, TRIALS times over flat, HNSW and IVF indexes;
  after each kill the collection must open, hold exactly the acknowledged writes (plus, at most, the
  whole operation in flight), store the written vectors, and search like a clean rebuild
  (tests/faults.py).
- Concurrency: the tests' several-writers-and-readers run, repeated.
- Crash points: tests/test_crash_points.py and the repair test kill checkpoint, compaction, projection
  caching, create, drop and ``doctor --repair`` just before each of their file operations in turn.
- Bad input: the property-based suite (tests/test_properties.py) with 1,000 examples per property.

    python -m benchmarks.reliability [--trials 200]

Writes benchmarks/results/reliability.json and the README table between the bench:reliability markers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from tests.faults import DIM, run_trial

ROOT = Path(__file__).resolve().parent.parent


def crash_trials(trials: int) -> dict:
    import latentsearch as ls

    rng = np.random.default_rng(2026)
    totals = {"trials": 0, "kills_mid_operation": 0, "acknowledged_operations": 0, "problems": 0, "examples": []}
    start = time.perf_counter()
    kinds = ("flat", "hnsw", "ivf")
    per_collection = 20
    for first in range(0, trials, per_collection):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            index = kinds[(first // per_collection) % len(kinds)]
            ls.create("faults", encoder="precomputed", dim=DIM, index=index, home=home).close()
            state: dict[str, str] = {}
            for trial in range(first, min(first + per_collection, trials)):
                record = run_trial(
                    home, seed=trial + 1, index=index, kill_after=float(rng.uniform(0.8, 2.2)), before=state
                )
                state = record["state"]
                totals["trials"] += 1
                totals["kills_mid_operation"] += record["in_flight"] is not None
                totals["acknowledged_operations"] += record["acked"]
                if record["problems"]:
                    totals["problems"] += 1
                    totals["examples"].append({"trial": trial, "index": index, "problems": record["problems"]})
                print(f"\rcrash trials: {totals['trials']}/{trials}, problems {totals['problems']}", end="", flush=True)
    print()
    totals["seconds"] = time.perf_counter() - start
    return totals


def pytest_run(args: list[str], env: dict[str, str]) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    lines = result.stdout.strip().splitlines()
    return result.returncode == 0, lines[-1] if lines else result.stderr[-200:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="crash trials (at least 200 for the README)")
    parser.add_argument("--concurrency-runs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=1000, help="bad-input examples per property")
    args = parser.parse_args()

    crashes = crash_trials(args.trials)
    concurrency_ok = 0
    for run in range(args.concurrency_runs):
        ok, line = pytest_run(["tests/test_reliability.py", "-k", "concurrent"], {})
        concurrency_ok += ok
        print(f"concurrency run {run + 1}: {line}")
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as handle:
        points_file = handle.name
    points_ok, line = pytest_run(
        [
            "tests/test_crash_points.py",
            "tests/test_reliability.py::test_a_repair_killed_at_any_file_operation_never_loses_the_collection",
        ],
        {"LATENTSEARCH_CRASH_POINTS_FILE": points_file},
    )
    operations = dict(row.split("\t") for row in Path(points_file).read_text().splitlines())
    os.unlink(points_file)
    points = sum(int(n) for n in operations.values())
    print(f"crash points: {points} over {len(operations)} operations, suite {'passed' if points_ok else 'FAILED'}")
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as handle:
        count_file = handle.name
    ok, line = pytest_run(
        ["tests/test_properties.py"],
        {"LATENTSEARCH_FUZZ_EXAMPLES": str(args.examples), "LATENTSEARCH_FUZZ_COUNT_FILE": count_file},
    )
    tried = Path(count_file).read_text().splitlines()
    os.unlink(count_file)
    by_kind = {kind: tried.count(kind) for kind in sorted(set(tried))}
    print(f"bad inputs: {len(tried):,} tried, suite {'passed' if ok else 'FAILED'}: {line}")
    data = {
        "crash": crashes,
        "crash_points": {"points": points, "operations": operations, "passed": points_ok},
        "concurrency": {"runs": args.concurrency_runs, "passed": concurrency_ok},
        "bad_inputs": {"tried": len(tried), "by_kind": by_kind, "passed": ok, "pytest": line},
    }
    path = report.save("reliability", data)
    rows = [
        [
            "crash trials (SIGKILL at a random moment)",
            crashes["trials"],
            f"{crashes['kills_mid_operation']} mid-operation",
            crashes["problems"],
            "0" if crashes["problems"] == 0 else "see JSON",
        ],
        [
            "acknowledged operations checked after kills",
            crashes["acknowledged_operations"],
            "",
            "",
            "0" if crashes["problems"] == 0 else "?",
        ],
        [
            "crash points (a kill before each file operation)",
            points,
            f"{len(operations)} operations",
            0 if points_ok else "failed",
            "0" if points_ok else "see pytest",
        ],
        [
            "concurrency runs (3 writer + 2 reader processes)",
            args.concurrency_runs,
            "",
            args.concurrency_runs - concurrency_ok,
            "0",
        ],
        ["bad inputs (API, filters, names, CLI, HTTP, image bytes)", len(tried), "", 0 if ok else "failed", "0"],
    ]
    table = report.markdown_table(["suite", "count", "faults", "problems", "items lost"], rows)
    machine = report.machine()
    note = (
        f"\n\n`python -m benchmarks.reliability` ({crashes['seconds'] / 60:.0f} min of crash trials); "
        f"{machine['cpu_count']} CPU cores, {machine['date']}."
    )
    updated = report.update_readme("reliability", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))
    if crashes["problems"] or not ok or not points_ok or concurrency_ok < args.concurrency_runs:
        sys.exit(1)


if __name__ == "__main__":
    main()
