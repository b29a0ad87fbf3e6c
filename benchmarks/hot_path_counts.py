"""What latentsearch adds to FAISS's single-query search, counted rather than timed: instructions and
cache misses per query under callgrind, which are the same from run to run whatever else the machine
is doing (its timings, ``benchmarks.hot_path``, move by more than the gaps left to the targets).

Three processes search the same 60,000 Fashion-MNIST vectors (200 queries at ef 16, then 200 at ef 64):
raw FAISS (``IndexHNSWFlat.search`` on the collection's own graph, its Python wrapper), latentsearch
ids only (``include=[]``) and full hits. Each loop runs inside a C function of its own
(``itertools.starmap`` for ef 16, ``filterfalse`` for ef 64) whose inclusive counts are read from
callgrind's output. Caches are simulated with a 1 MiB last level, about a core's L2: a graph walk
sweeps it, so what the Python after it touches is fetched again, the cost that makes the same code
slower after a search than in a loop of its own.

    python -m benchmarks.hot_path_counts [--before COMMIT]

``--before``: the same counts for latentsearch as of an earlier commit (its package, from ``git archive``,
searching the same collection), side by side. Needs valgrind (Debian's package). Writes benchmarks/results/hot_path_counts.json and the README lines
between the bench:hot_path_counts markers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.datasets import fashion_mnist

QUERIES = 200
LAST_LEVEL = "1048576,16,64"  # 1 MiB, 16-way, 64-byte lines
LOOPS = {16: "starmap_next", 64: "filterfalse_next"}  # ef: the C function its loop runs in
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")

# The measured process: opens the collection, warms each loop (every query once, as the timed benchmark's
# best of several rounds is), then runs it inside its C function.
CHILD = """
import gc, itertools, sys
from pathlib import Path
import numpy as np, faiss
import latentsearch as ls
faiss.omp_set_num_threads(1)
home, mode = Path(sys.argv[1]), sys.argv[2]
queries = np.load(home / "queries.npy")
col = ls.open("counts", home=home)
col.search(queries[0], k=10)
raw = faiss.downcast_index(col.backend.index.index.index)  # the collection's own graph
def loop(ef):
    if mode == "faiss":
        raw.hnsw.efSearch = ef
        return lambda q: raw.search(q[None], 10)
    if mode == "ids":
        return lambda q: col.search(q, k=10, include=[], ef_search=ef)
    return lambda q: col.search(q, k=10, ef_search=ef)
for ef, wrap in ((16, "starmap"), (64, "filterfalse")):
    search = loop(ef)
    for q in queries:  # (warm: the index, the ids, and the rows of every hit kept once read)
        search(q)
    gc.collect()
    if wrap == "starmap":
        for _ in itertools.starmap(search, [(q,) for q in queries]):
            pass
    else:
        for _ in itertools.filterfalse(search, queries):
            pass
"""


def counted(home: Path, mode: str, code: Path | None = None) -> dict[int, dict[str, int]]:
    """Per-query events of one mode's two loops (by ef), with latentsearch from ``code`` if given."""
    out = home / f"callgrind.{mode}{'.before' if code else ''}"
    env = {**os.environ, "PYTHONPATH": str(code)} if code else None
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--cache-sim=yes",
            f"--LL={LAST_LEVEL}",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            CHILD,
            str(home),
            mode,
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=home,  # (python -c puts its folder first on the path: not this checkout's package)
    )
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", f"--show={','.join(EVENTS)}", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = {}
    for ef, function in LOOPS.items():
        line = next(line for line in annotated.splitlines() if re.search(rf":{function} \[", line))
        numbers = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) \(", line)]
        found[ef] = {event: value // QUERIES for event, value in zip(EVENTS, numbers)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="an earlier commit to count beside this code")
    before = parser.parse_args().before
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    import latentsearch as ls

    data = fashion_mnist()
    base = data["train_images"].reshape(len(data["train_images"]), -1).astype(np.float32) / 255
    queries = data["test_images"].reshape(len(data["test_images"]), -1).astype(np.float32)[:QUERIES] / 255
    buckets = np.random.default_rng(0).integers(0, 10, size=len(base))
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        np.save(home / "queries.npy", queries)
        col = ls.create("counts", encoder="precomputed", dim=base.shape[1], metric="l2", index="hnsw", home=home)
        col.add([str(i) for i in range(len(base))], vectors=base, metadata=[{"b": int(b)} for b in buckets])
        col.close()
        runs: list[tuple[str, str, Path | None]] = [
            ("faiss", "faiss", None),
            ("ids", "ids", None),
            ("hits", "hits", None),
        ]
        if before:
            code = home / "before"
            code.mkdir()
            archive = subprocess.run(["git", "archive", before, "latentsearch"], check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
            runs += [("ids_before", "ids", code), ("hits_before", "hits", code)]
        with ThreadPoolExecutor(2) as pool:  # (two cores: two valgrind processes at a time)
            found = pool.map(lambda run: counted(home, run[1], run[2]), runs)
            modes = dict(zip([name for name, _, _ in runs], found))
    results: dict = {"queries": QUERIES, "last_level": LAST_LEVEL, "before": before, "rows": []}
    for ef in LOOPS:
        faiss_row = modes["faiss"][ef]
        row = {"ef_search": ef, "faiss": faiss_row}
        for mode in [name for name, _, _ in runs if name != "faiss"]:
            row[mode] = modes[mode][ef]
            row[f"added_{mode}"] = {event: modes[mode][ef][event] - faiss_row[event] for event in EVENTS}
        results["rows"].append(row)
        print(
            f"  ef {ef}: "
            + "; ".join(f"{k[6:]} +{v['Ir']:,} instructions" for k, v in row.items() if k.startswith("added_"))
        )
    report.save("hot_path_counts", results)
    report.update_readme("hot_path_counts", readme(results))


def last_level_misses(events: dict[str, int]) -> int:
    """Misses of the simulated 1 MiB last level: instructions and data, read and written."""
    return events["ILmr"] + events["DLmr"] + events["DLmw"]


def readme(results: dict) -> str:
    def added(row: dict, mode: str) -> str:
        events = row.get(f"added_{mode}")
        return "" if events is None else f"+{events['Ir']:,} (+{last_level_misses(events):,})"

    before = results.get("before")
    header = ["ef", "raw FAISS instructions (1 MiB misses)", "ids only adds", "full hits adds"]
    if before:
        header += [f"ids only adds, at {before}", f"full hits adds, at {before}"]
    rows = []
    for r in results["rows"]:
        row = [
            r["ef_search"],
            f"{r['faiss']['Ir']:,} ({last_level_misses(r['faiss']):,})",
            added(r, "ids"),
            added(r, "hits"),
        ]
        if before:
            row += [added(r, "ids_before"), added(r, "hits_before")]
        rows.append(row)
    return (
        "**The hot path, counted** (callgrind, per query, 200 Fashion-MNIST queries: what latentsearch adds to "
        "raw FAISS searching the same graph, in instructions and, in brackets, misses of a simulated 1 MiB "
        "last-level cache, which a graph walk sweeps; the same in every run):\n\n"
        + report.markdown_table(header, rows)
        + f"\n\n`python -m benchmarks.hot_path_counts{' --before ' + before if before else ''}`; "
        f"{time.strftime('%Y-%m-%d')}.\n"
    )


if __name__ == "__main__":
    main()
