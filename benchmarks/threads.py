"""One query on one thread or on all: what FAISS's threads cost a single query's exact scan.

FAISS splits one query's exact scan (``faiss.knn``, a flat index) over its OpenMP threads. Waking
them for every query can cost more than they save, so latentsearch runs a single query's scan on one
thread (:func:`latentsearch.index.faiss_index.one_thread`; batches keep every thread, an HNSW walk is
one thread's work either way). This benchmark times, single queries, best of ROUNDS alternating loops:

- ``faiss.knn`` of one 128-d query against 2,000 to 200,000 vectors, on one thread and on all cores;
- latentsearch's single-query search of a 20,000-vector flat collection and of a 100,000-vector HNSW
  collection under a 10% filter (the exact plan), as it runs now and with FAISS's threads left on
  (``one_thread`` replaced by a plain call, the code before this change).

    python -m benchmarks.threads

Writes benchmarks/results/threads.json and the README lines between the bench:threads markers.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.scaling import block
from benchmarks.scaling import queries as scaling_queries

ROUNDS = 5
QUERIES = 200
SIZES = (2_000, 10_000, 50_000, 200_000)


def best_us(contenders: dict, queries: np.ndarray) -> dict[str, float]:
    """Each contender's best loop over single queries (alternating, ROUNDS times), µs per query."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(ROUNDS):
        for name, run in contenders.items():
            start = time.perf_counter()
            for q in queries:
                run(q)
            best[name] = min(best[name], (time.perf_counter() - start) / len(queries) * 1e6)
    return best


def on_threads(threads: int, call):
    """``call`` wrapped to run with FAISS on ``threads`` OpenMP threads."""
    import faiss

    def run(q: np.ndarray) -> object:
        faiss.omp_set_num_threads(threads)
        return call(q)

    return run


def main() -> None:
    import faiss

    import latentsearch as ls
    from latentsearch.backends import local
    from latentsearch.index import faiss_index

    cores = os.cpu_count() or 1
    queries = [q[None] for q in scaling_queries(128)[:QUERIES]]
    results: dict = {"cores": cores, "knn": [], "latentsearch": {}}
    for n in SIZES:
        base = block(0, n, 128)[0]
        timings = best_us(
            {
                "one": on_threads(1, lambda q, base=base: faiss.knn(q, base, 10)),
                "all": on_threads(cores, lambda q, base=base: faiss.knn(q, base, 10)),
            },
            queries,
        )
        results["knn"].append({"vectors": n, "us_one_thread": timings["one"], "us_all_threads": timings["all"]})
        print(f"  knn {n:,}: {timings}")
    faiss.omp_set_num_threads(cores)

    def plain(search, *args, **kwargs):
        return search(*args, **kwargs)

    with tempfile.TemporaryDirectory() as home:
        x, buckets = block(0, 100_000, 128)
        flat = ls.create("flat", encoder="precomputed", dim=128, index="flat", home=Path(home))
        flat.add([str(i) for i in range(20_000)], vectors=x[:20_000])
        hnsw = ls.create("hnsw", encoder="precomputed", dim=128, index="hnsw", home=Path(home))
        hnsw.add([str(i) for i in range(len(x))], vectors=x, metadata=[{"b": int(b)} for b in buckets])
        hnsw.backend.subindexes.limit = 0  # the plan on every query, no sub-index
        where = {"b": {"$lt": 1_000}}  # 10%
        plan = hnsw.search(queries[0][0], k=10, where=where, explain=True)[0].details["plan"]
        cases = {
            "flat 20,000 × 128": lambda q: flat.search(q[0], k=10, include=[]),
            f"HNSW 100,000 × 128, 10% filter ({plan})": lambda q: hnsw.search(q[0], k=10, where=where, include=[]),
        }
        for name, search in cases.items():
            search(queries[0])  # warm: the index, the filter's matches

            def threaded(q, search=search):  # the code before: FAISS's threads left on
                faiss_index.one_thread, local.one_thread = plain, plain
                try:
                    return search(q)
                finally:
                    faiss_index.one_thread = local.one_thread = kept

            kept = faiss_index.one_thread
            timings = best_us({"one": search, "all": threaded}, queries)
            results["latentsearch"][name] = {"us_one_thread": timings["one"], "us_all_threads": timings["all"]}
            print(f"  {name}: {timings}")
        flat.close()
        hnsw.close()
    report.save("threads", results)
    report.update_readme("threads", readme(results))


def readme(results: dict) -> str:
    rows = [
        [f"`faiss.knn`, {r['vectors']:,} × 128", f"{r['us_one_thread']:,.0f}", f"{r['us_all_threads']:,.0f}"]
        for r in results["knn"]
    ] + [
        [f"latentsearch, {name}", f"{r['us_one_thread']:,.0f}", f"{r['us_all_threads']:,.0f}"]
        for name, r in results["latentsearch"].items()
    ]
    return (
        f"**One query, one thread** (µs per single query, best of {ROUNDS} alternating loops of {QUERIES}; "
        f"*all threads*: FAISS's OpenMP threads, {results['cores']} here, as before this change):\n\n"
        + report.markdown_table(["exact scan", "one thread", "all threads"], rows)
        + f"\n\n`python -m benchmarks.threads`; {results['cores']} CPU cores, {time.strftime('%Y-%m-%d')}.\n"
    )


if __name__ == "__main__":
    main()
