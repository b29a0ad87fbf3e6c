"""How an HNSW collection grows: 10,000, 100,000 and 1,000,000 vectors at 128 and 384 dimensions.

For each size and dimension, on synthetic clustered unit vectors (1,000 Gaussian clusters, cosine),
each with a numeric field ``b`` for filters:

- ingest: ``Collection.add`` in blocks of 100,000 (with the field), vectors per second, and the
  ingesting process's peak RSS;
- disk: the collection folder once closed, bytes per vector;
- open: a fresh process's ``open`` + first search (the lean index reads its vectors from SQLite),
  then the time until its index is on huge pages (placed in the background after the open), and
  that process's peak RSS after the searches below;
- latency (once the index is on huge pages): p50 and p99 of single queries (ids and the default hits), unfiltered and under filters
  matching 1% and 10% of the items, with recall@10 against brute force.

Each phase runs in a fresh process so that its peak RSS is its own. The data is generated block by
block from seeds, so no process holds more than one block besides the collection.

    python -m benchmarks.scaling [--sizes 10000,100000,1000000] [--dims 128,384]

Writes benchmarks/results/scaling.json, benchmarks/results/scaling.png and the README section
between the bench:scaling markers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report

K = 10
BLOCK = 100_000
CLUSTERS = 1_000
QUERIES = 1_000
FILTER_PERCENTS = (1, 10)
MEMORY_GB = 24  # this machine's memory, for the README's advice


def block(start: int, stop: int, dim: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and filter buckets of items start..stop, the same on every call (seeded by block);
    stream 1 draws the queries from the same clusters."""
    rng = np.random.default_rng([stream, dim, start, stop])
    centers = np.random.default_rng(7).normal(size=(CLUSTERS, dim)).astype(np.float32)
    x = centers[rng.integers(0, CLUSTERS, stop - start)] + rng.normal(scale=0.6, size=(stop - start, dim)).astype(
        np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, rng.integers(0, 10_000, stop - start)


def queries(dim: int) -> np.ndarray:
    return block(0, QUERIES, dim, stream=1)[0]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def ingest_phase(home: Path, n: int, dim: int) -> dict:
    import latentsearch as ls

    col = ls.create("scale", encoder="precomputed", dim=dim, index="hnsw", home=home)
    seconds = 0.0  # adding and closing; making the data is not counted
    for first in range(0, n, BLOCK):
        last = min(n, first + BLOCK)
        x, buckets = block(first, last, dim)
        ids, metadata = [str(i) for i in range(first, last)], [{"b": int(b)} for b in buckets]
        start = time.perf_counter()
        col.add(ids, vectors=x, metadata=metadata)
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    col.close()
    seconds += time.perf_counter() - start
    return {"ingest_seconds": seconds, "ingest_vectors_per_s": n / seconds, "ingest_peak_rss_bytes": peak_rss_bytes()}


def truth(n: int, dim: int, qs: np.ndarray, limit: int | None) -> list[set[str]]:
    """Brute-force top-k ids of each query among items with b < limit, block by block."""
    import faiss

    best_scores = np.full((len(qs), K), -np.inf, dtype=np.float32)
    best_ids = np.full((len(qs), K), -1, dtype=np.int64)
    for first in range(0, n, BLOCK):
        x, buckets = block(first, min(n, first + BLOCK), dim)
        keep = np.arange(len(x)) if limit is None else np.flatnonzero(buckets < limit)
        scores, rows = faiss.knn(qs, x[keep], min(K, len(keep)), metric=faiss.METRIC_INNER_PRODUCT)
        scores_all = np.concatenate([best_scores, scores], axis=1)
        ids_all = np.concatenate([best_ids, np.where(rows >= 0, keep[rows] + first, -1)], axis=1)
        top = np.argsort(-scores_all, axis=1)[:, :K]
        best_scores = np.take_along_axis(scores_all, top, 1)
        best_ids = np.take_along_axis(ids_all, top, 1)
    return [{str(i) for i in row if i >= 0} for row in best_ids]


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def search_phase(home: Path, n: int, dim: int) -> dict:
    import latentsearch as ls

    qs = queries(dim)
    warm = ls.create("warm", encoder="precomputed", dim=dim, index="hnsw", home=home / "warm")
    warm.add(["0"], vectors=qs[:1])
    warm.search(qs[0], k=K)  # the modules a search imports, before the clock: open time is the collection's
    warm.close()
    start = time.perf_counter()
    col = ls.open("scale", home=home)
    col.search(qs[0], k=K)
    opened = time.perf_counter() - start
    # The opened index moves onto huge pages in the background; the latencies below are those after it.
    col.backend.index.wait_placed()
    placed = time.perf_counter() - start
    # The filters as on their first use on the collection as loaded (its blocks are bulk writes: the
    # filter partition they built answers where its check passed): a filter repeated this often would
    # earn a sub-index of its matches mid-run (benchmarks.performance measures it), mixing two plans in
    # one percentile. (A partition that covers the index is not rebuilt by the searches.)
    col.backend.subindexes.limit = 0
    out: dict = {"open_seconds": opened, "placed_seconds": placed}
    runs = {
        "ids": (None, []),
        "hits": (None, None),
        **{f"filtered_{pct}pct": (pct * 100, None) for pct in FILTER_PERCENTS},
    }
    found = {}
    for label, (limit, include) in runs.items():
        where = None if limit is None else f"b < {limit}"
        timings, found[label] = [], []
        for q in qs:
            t0 = time.perf_counter()
            hits = col.search(q, k=K, where=where, include=include)
            timings.append(time.perf_counter() - t0)
            found[label].append({h.id for h in hits})
        out[label] = percentiles(timings)
        if limit is not None:
            out[label]["plan"] = col.search(qs[0], k=K, where=where, explain=True)[0].details.get("plan", "")
    col.close()
    out["search_peak_rss_bytes"] = peak_rss_bytes()  # before the brute force below adds its own
    for label, (limit, _) in runs.items():
        expected = truth(n, dim, qs, limit)
        out[label]["recall@10"] = float(np.mean([len(f & t) / max(len(t), 1) for f, t in zip(found[label], expected)]))
    return out


def _child(phase: str, home: Path, n: int, dim: int) -> dict:
    """Run one phase in a fresh Python, so that its peak RSS is its own."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            "--phase",
            phase,
            "--home",
            str(home),
            "--n",
            str(n),
            "--dim",
            str(dim),
        ],
        capture_output=True,
        text=True,
        cwd=report.ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{phase} of {n:,} × {dim} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n: int, dim: int, scratch: Path) -> dict:
    home = scratch / f"n{n}-d{dim}"
    home.mkdir()
    row = {"vectors": n, "dim": dim, **_child("ingest", home, n, dim)}
    disk = sum(f.stat().st_size for f in (home / "scale").iterdir() if f.is_file())
    row.update({"disk_bytes": disk, "disk_bytes_per_vector": disk / n, "float_bytes_per_vector": 4 * dim})
    row.update(_child("search", home, n, dim))
    shutil.rmtree(home)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("ingest vectors / s", lambda r: r["ingest_vectors_per_s"]),
        ("peak RSS, GB (ingest ─, search ┄)", None),
        ("disk, bytes / vector", lambda r: r["disk_bytes_per_vector"]),
        ("open + first search, s", lambda r: r["open_seconds"]),
        ("p50 / p99 latency, ms (hits)", None),
        ("p50 latency, ms: 1% ┄ and 10% ─ filters", None),
    )
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=100)
    for ax, (title, value) in zip(axes.ravel(), panels):
        for dim, colour in zip(sorted({r["dim"] for r in rows}), ("tab:blue", "tab:orange", "tab:green")):
            mine = sorted((r for r in rows if r["dim"] == dim), key=lambda r: r["vectors"])
            n = [r["vectors"] for r in mine]
            if value is not None:
                ax.plot(n, [value(r) for r in mine], "o-", color=colour, label=f"{dim}-d")
            elif title.startswith("peak"):
                ax.plot(n, [r["ingest_peak_rss_bytes"] / 1e9 for r in mine], "o-", color=colour, label=f"{dim}-d")
                ax.plot(n, [r["search_peak_rss_bytes"] / 1e9 for r in mine], "o--", color=colour)
            elif title.startswith("p50 / p99"):
                ax.plot(n, [r["hits"]["p50_ms"] for r in mine], "o-", color=colour, label=f"{dim}-d p50")
                ax.plot(n, [r["hits"]["p99_ms"] for r in mine], "o--", color=colour, label=f"{dim}-d p99")
            else:
                ax.plot(n, [r["filtered_10pct"]["p50_ms"] for r in mine], "o-", color=colour, label=f"{dim}-d")
                ax.plot(n, [r["filtered_1pct"]["p50_ms"] for r in mine], "o--", color=colour)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("vectors")
        ax.legend(fontsize=8)
    fig.suptitle("HNSW collection, synthetic clustered unit vectors (benchmarks/scaling.py)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def capacity(rows: list[dict]) -> dict[int, int]:
    """Vectors that fit in MEMORY_GB while ingesting, per dimension, from the largest run's RSS per vector
    (the marginal cost between the two largest sizes, so the interpreter's fixed cost is not counted)."""
    out = {}
    for dim in sorted({r["dim"] for r in rows}):
        mine = sorted((r for r in rows if r["dim"] == dim), key=lambda r: r["vectors"])
        if len(mine) < 2:
            continue
        small, big = mine[-2], mine[-1]
        per_vector = (big["ingest_peak_rss_bytes"] - small["ingest_peak_rss_bytes"]) / (
            big["vectors"] - small["vectors"]
        )
        fixed = big["ingest_peak_rss_bytes"] - per_vector * big["vectors"]
        out[dim] = int((MEMORY_GB * 1e9 * 0.8 - fixed) / per_vector)  # leave a fifth for the system and page cache
    return out


def update_readme(results: dict) -> None:
    rows = results["rows"]
    table = report.markdown_table(
        [
            "vectors",
            "dim",
            "ingest vectors/s",
            "ingest peak RSS GB",
            "disk bytes / vector",
            "open s",
            "on huge pages s",
            "search RSS GB",
            "p50 / p99 ms ids",
            "p50 / p99 ms hits",
            "recall@10",
        ]
        + [f"{pct}% filter p50 / p99 ms (recall)" for pct in FILTER_PERCENTS],
        [
            [
                f"{r['vectors']:,}",
                r["dim"],
                f"{r['ingest_vectors_per_s']:,.0f}",
                _gb(r["ingest_peak_rss_bytes"]),
                f"{r['disk_bytes_per_vector']:,.0f}",
                f"{r['open_seconds']:.2f}",
                f"{r['placed_seconds']:.2f}" if "placed_seconds" in r else "–",
                _gb(r["search_peak_rss_bytes"]),
                f"{r['ids']['p50_ms']:.2f} / {r['ids']['p99_ms']:.2f}",
                f"{r['hits']['p50_ms']:.2f} / {r['hits']['p99_ms']:.2f}",
                r["hits"]["recall@10"],
                *(
                    f"{r[f'filtered_{pct}pct']['p50_ms']:.2f} / {r[f'filtered_{pct}pct']['p99_ms']:.2f} "
                    f"({r[f'filtered_{pct}pct']['recall@10']:.3f})"
                    for pct in FILTER_PERCENTS
                ),
            ]
            for r in sorted(rows, key=lambda r: (r["dim"], r["vectors"]))
        ],
    )
    fits = capacity(rows)
    machine = results["machine"]
    advice = "; ".join(f"about {v / 1e6:.0f} million {dim}-d vectors" for dim, v in fits.items())
    text = (
        f"{table}\n\n![how an HNSW collection grows](benchmarks/results/scaling.png)\n\n"
        + (
            f"From the peak RSS per vector between the two largest runs, {MEMORY_GB} GB holds {advice} "
            "in an HNSW collection while ingesting (four fifths of the memory, the rest left to the system). "
            'Beyond that, keep fewer bytes per vector in memory with a compressed index (`index="ivfpq"` or '
            '`"sq8"`, re-ranked on the floats in SQLite: the Memory table in [Performance](#performance)), or '
            "spread the collection over machines with `shards=N` on Ray ([Scale out on Ray](#scale-out-on-ray)). "
            if fits
            else ""
        )
        + f"`python -m benchmarks.scaling`; {machine['cpu_count']} CPU cores, {machine['date']}."
    )
    report.update_readme("scaling", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated collection sizes")
    parser.add_argument("--dims", default="128,384", help="comma-separated dimensions")
    parser.add_argument("--phase", choices=("ingest", "search"), help=argparse.SUPPRESS)  # the child processes
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run = ingest_phase if args.phase == "ingest" else search_phase
        print(json.dumps(run(args.home, args.n, args.dim)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(dir=report.ROOT / "benchmarks") as scratch:  # on the disk, not a tmpfs
        for dim in dims:
            for n in sizes:
                print(f"{n:,} × {dim}:", flush=True)
                rows.append(measure(n, dim, Path(scratch)))
                print(f"  {rows[-1]}", flush=True)
    saved = report.RESULTS / "scaling.json"
    if saved.exists():  # a partial rerun replaces its own rows and keeps the others
        ran = {(r["vectors"], r["dim"]) for r in rows}
        rows += [r for r in json.loads(saved.read_text())["rows"] if (r["vectors"], r["dim"]) not in ran]
    results = {"rows": rows}
    path = report.save("scaling", results)
    plot(rows, report.RESULTS / "scaling.png")
    update_readme(results)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
