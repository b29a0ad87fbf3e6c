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
- Disk full: on a small tmpfs filled to a random few KiB of slack, writes of random sizes until the
  disk refuses one; every refusal must be the one-line "no space left on device" error, leave no temp
  file, and after freeing space the collection holds exactly the acknowledged writes (needs root's
  mount; skipped otherwise).
- Read-only: the same collection remounted read-only serves count, get, every search mode and the
  cached map, and refuses each write with the one-line read-only error.
- Foreign index: another collection's index.faiss + checkpoint (same dimension, count and change
  sequence) copied in, for every index kind: doctor must report it and an open must rebuild it.

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
from latentsearch.index.specs import INDEX_KINDS
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


def disk_trials(trials: int) -> dict:
    """Disk-full and read-only trials on a tmpfs (see the module docstring)."""
    import contextlib
    import shutil
    import subprocess as sp

    import latentsearch as ls
    from latentsearch.errors import DiskFullError, ReadOnlyError
    from latentsearch.workflows.doctor import doctor

    totals = {"disk_full": {"trials": 0, "refusals": 0, "acknowledged": 0, "problems": 0, "examples": []}}
    totals["read_only"] = {"trials": 0, "reads": 0, "refused_writes": 0, "problems": 0, "examples": []}
    mount = Path(tempfile.mkdtemp(prefix="latentsearch-disk-"))
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True).returncode:
        shutil.rmtree(mount, ignore_errors=True)
        return {"skipped": "mounting a tmpfs needs root"}
    rng = np.random.default_rng(7)
    try:
        for trial in range(trials):
            home = mount / "home"
            shutil.rmtree(home, ignore_errors=True)
            col = ls.create("c", encoder="precomputed", dim=DIM, index=("flat", "hnsw")[trial % 2], home=home)
            acked = 0
            filler = mount / "filler"
            with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
                while handle.write(b"\0" * 65536):  # measure the free space: fill it
                    pass
            filler.write_bytes(b"")  # then take all but the slack again
            slack = int(rng.integers(0, 256 * 1024))
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            with contextlib.suppress(OSError):
                filler.write_bytes(b"\0" * max(0, free - slack))
            record = totals["disk_full"]
            record["trials"] += 1
            problems = []
            for step in range(200):
                n = int(rng.integers(1, 400))
                try:
                    col.add([f"t{trial}-{step}-{i}" for i in range(n)], vectors=rng.normal(size=(n, DIM)))
                    acked += n
                except DiskFullError as exc:
                    record["refusals"] += 1
                    if str(exc) != "no space left on device while writing c; free space and retry":
                        problems.append(f"message: {exc}")
                    break
                except Exception as exc:  # noqa: BLE001 - any other error is what this counts
                    problems.append(f"{type(exc).__name__}: {exc}")
                    break
            col.close()
            temps = [p.name for p in home.rglob(".*") if ".tmp" in p.name]
            if temps:
                problems.append(f"temp files left: {temps}")
            filler.unlink()
            col = ls.open("c", home=home)
            if col.count() != acked:
                problems.append(f"{col.count()} items for {acked} acknowledged")
            col.close()
            if not doctor("c", home=home).healthy:
                problems.append("doctor finds problems")
            record["acknowledged"] += acked
            if problems:
                record["problems"] += 1
                record["examples"].append({"trial": trial, "problems": problems})
            # The same collection, read-only.
            ro = totals["read_only"]
            ro["trials"] += 1
            busy = sp.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True)
            if busy.returncode:
                held = []
                for fd in os.listdir("/proc/self/fd"):
                    with contextlib.suppress(OSError):
                        held.append(os.readlink(f"/proc/self/fd/{fd}"))
                raise RuntimeError(f"{busy.stderr!r} {[h for h in held if str(mount) in h]}")
            try:
                col = ls.open("c", home=home)
                probe = rng.normal(size=DIM).astype(np.float32)
                reads = [col.count, col.info, lambda: col.search(probe, k=5), lambda: col.items()[:1]]
                problems = []
                for read in reads:
                    try:
                        read()
                        ro["reads"] += 1
                    except Exception as exc:  # noqa: BLE001
                        problems.append(f"read failed: {exc}")
                for write in (lambda: col.add(["x"], vectors=probe[None]), col.compact, lambda: col.delete(["x"])):
                    try:
                        write()
                        problems.append("a write went through")
                    except ReadOnlyError:
                        ro["refused_writes"] += 1
                    except Exception as exc:  # noqa: BLE001
                        problems.append(f"write refused with {type(exc).__name__}: {exc}")
                col.close()
            finally:
                sp.run(["mount", "-o", "remount,rw", str(mount)], check=True)
            if problems:
                ro["problems"] += 1
                ro["examples"].append({"trial": trial, "problems": problems})
            print(f"\rdisk trials: {trial + 1}/{trials}", end="", flush=True)
        print()
    finally:
        sp.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)
    return totals


def pytest_run(args: list[str], env: dict[str, str]) -> tuple[bool, str]:
    result = subprocess.run(
        # -m "": the slow cases too (the quick set deselects them by default), since a soak wants them all
        [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-m", "", *args],
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
    parser.add_argument("--disk-trials", type=int, default=40, help="disk-full and read-only trials")
    parser.add_argument("--examples", type=int, default=1000, help="bad-input examples per property")
    args = parser.parse_args()

    crashes = crash_trials(args.trials)
    disks = disk_trials(args.disk_trials)
    print(f"disk trials: {disks}")
    foreign_ok, foreign_line = pytest_run(["tests/test_identity.py"], {})
    print(f"foreign index: {foreign_line}")
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
        "disk": disks,
        "foreign_index": {"passed": foreign_ok, "pytest": foreign_line},
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
    if "skipped" not in disks:
        full, ro = disks["disk_full"], disks["read_only"]
        rows += [
            [
                "disk full (tmpfs, random slack)",
                full["trials"],
                f"{full['refusals']} refused writes",
                full["problems"],
                "0" if full["problems"] == 0 else "see JSON",
            ],
            ["read-only remount", ro["trials"], f"{ro['refused_writes']} refused writes", ro["problems"], "0"],
        ]
    kinds = len(INDEX_KINDS) - 1  # every kind but auto, which is flat or HNSW
    rows.append(["foreign index copied in", kinds, "every index kind", 0 if foreign_ok else "failed", "0"])
    table = report.markdown_table(["suite", "count", "faults", "problems", "items lost"], rows)
    machine = report.machine()
    note = (
        f"\n\n`python -m benchmarks.reliability` ({crashes['seconds'] / 60:.0f} min of crash trials); "
        f"{machine['cpu_count']} CPU cores, {machine['date']}."
    )
    updated = report.update_readme("reliability", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))
    disk_problems = sum(v["problems"] for v in disks.values() if isinstance(v, dict))
    failed = crashes["problems"] or not ok or not points_ok or concurrency_ok < args.concurrency_runs
    if failed or disk_problems or not foreign_ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
