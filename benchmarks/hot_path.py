"""The single-query hot path, measured finely: what latentsearch adds to FAISS's own search, in µs.

``benchmarks.performance`` times each contender over 1,000 queries, best of 3 rounds; between runs on
a shared machine its raw FAISS baseline moves by several percent, more than the gaps left to the
targets. This benchmark times the same things in more, shorter rounds (best of 9 alternating loops
of 500 queries), in one process, on the same 60,000 Fashion-MNIST vectors:

- unfiltered, at ef 16 and 64: raw FAISS (``IndexHNSWFlat.search``, its Python wrapper) as its user
  gets it (the index on 4 KiB pages), the same on a copy of that index placed on huge pages as
  latentsearch places its own (:mod:`latentsearch.index.hugepages`: the same memory, so the
  difference is the code's), raw FAISS on huge pages whose answer is made into ``Hit`` objects and
  nothing else (the least a Python library's hits cost), latentsearch ids only (``include=[]``) and
  full hits (the default fields); what each adds to raw FAISS on huge pages, and its ratio of
  queries/s to raw FAISS as its user gets it;
- a filter matching 10% of the items: raw FAISS's own filtered walk (the same breadth the planner
  picks, an ``IDSelectorBitmap`` over the matches; on huge pages), latentsearch's filtered search, and its unfiltered
  one (the ratio the 10% target is about), with no sub-index (a filter's first use) and no filter
  partition (as on a collection grown by writes too small to build one, before its filtered walks
  have paid for it); then the same with the filter partition (what a bulk load or ``compact`` builds);
- the same filter repeated until its walks have paid for a sub-index of its matches: that search,
  raw FAISS on an HNSW graph of the same matches, and the unfiltered search.

    python -m benchmarks.hot_path

Writes benchmarks/results/hot_path.json and the README lines between the bench:hot_path markers.
"""

from __future__ import annotations

import gc
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.datasets import fashion_mnist
from benchmarks.performance import repeat_until_planned
from latentsearch.index.hugepages import place_index
from latentsearch.index.subindex import SUBINDEX_BYTES
from latentsearch.records import Hit

K = 10
QUERIES = 500
ROUNDS = 9
EF_CONSTRUCTION = 80  # what latentsearch builds HNSW with (and benchmarks.performance's raw FAISS)


def best_per_query(contenders: dict, queries: np.ndarray) -> dict[str, float]:
    """Each contender's best loop over ``queries`` (alternating, ROUNDS times), in µs per query."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(ROUNDS):
        for name, fn in contenders.items():
            gc.collect()
            start = time.perf_counter()
            for q in queries:
                fn(q)
            best[name] = min(best[name], (time.perf_counter() - start) / len(queries) * 1e6)
    return best


def beside_faiss(plan: str, queries: np.ndarray, **contenders) -> dict:
    """Time three contenders (raw FAISS's search, latentsearch's, latentsearch's unfiltered one, in that
    order): µs per query of each, what latentsearch adds to FAISS, and its ratio to the unfiltered one."""
    timings = best_per_query(contenders, queries)
    baseline, ours, unfiltered = contenders
    return {
        "plan": plan,
        **{f"us_{name}": us for name, us in timings.items()},
        f"us_added_{ours}": timings[ours] - timings[baseline],
        "ratio_vs_unfiltered": timings[unfiltered] / timings[ours],
    }


def floor_hits(found: tuple[np.ndarray, np.ndarray], names: list[str]) -> list[Hit]:
    """Raw FAISS's answer as hits with nothing else done: each position's id and score in a Hit."""
    distances, positions = found
    return [Hit(names[p], -math.sqrt(d)) for p, d in zip(positions[0].tolist(), distances[0].tolist()) if p >= 0]


def main() -> None:
    import faiss

    import latentsearch as ls

    faiss.omp_set_num_threads(1)  # an HNSW walk is one thread's work; pinned, raw FAISS pays no thread wake-ups
    data = fashion_mnist()
    base = data["train_images"].reshape(len(data["train_images"]), -1).astype(np.float32) / 255
    queries = data["test_images"].reshape(len(data["test_images"]), -1).astype(np.float32)[:QUERIES] / 255
    buckets = np.random.default_rng(0).integers(0, 10, size=len(base))  # b == 0: 10% of the items
    raw = faiss.IndexHNSWFlat(base.shape[1], 32)
    raw.hnsw.efConstruction = EF_CONSTRUCTION
    raw.add(base)
    huge = faiss.clone_index(raw)  # the same graph and vectors, on huge pages as latentsearch keeps its own
    place_index(huge)
    names = [str(i) for i in range(len(base))]
    results: dict = {"unfiltered": [], "filtered_10pct": {}}
    with tempfile.TemporaryDirectory() as home:
        col = ls.create("hot", encoder="precomputed", dim=base.shape[1], metric="l2", index="hnsw", home=Path(home))
        col.add([str(i) for i in range(len(base))], vectors=base, metadata=[{"b": int(b)} for b in buckets])
        for ef in (16, 64):
            raw.hnsw.efSearch = huge.hnsw.efSearch = ef
            col.search(queries[0], k=K, ef_search=ef)  # warm: the index, the ids
            timings = best_per_query(
                {
                    "faiss": lambda q: raw.search(q[None], K),
                    "faiss_huge": lambda q: huge.search(q[None], K),
                    # The least any Python library returning hits adds: the ids and a Hit object each.
                    "floor": lambda q: floor_hits(huge.search(q[None], K), names),
                    "ids": lambda q, ef=ef: col.search(q, k=K, include=[], ef_search=ef),
                    "hits": lambda q, ef=ef: col.search(q, k=K, ef_search=ef),
                },
                queries,
            )
            row = {"ef_search": ef, **{f"us_{name}": us for name, us in timings.items()}}
            for name in ("faiss_huge", "floor", "ids", "hits"):
                row[f"ratio_{name}"] = timings["faiss"] / timings[name]
                row[f"us_added_{name}"] = timings[name] - timings["faiss_huge"]
            results["unfiltered"].append(row)
            print(f"  ef {ef}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "ef_search"))

        where = {"b": 0}
        col.backend.subindexes.limit = 0  # the walk on first use; the sub-index of a repeated filter below
        partitioner = col.backend.index.partitioner
        partitioner.enabled = False  # nor the filter partition the bulk add built: it is measured after the walk
        plan = col.search(queries[0], k=K, where=where, explain=True)[0].details["plan"]
        breadth = int(plan.split("efSearch ")[1].split()[0]) if "efSearch" in plan else 64
        bitmap = np.packbits(buckets == 0, bitorder="little")  # (raw FAISS's positions are the items')
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersHNSW()
        params.sel, params.efSearch = selector, breadth
        col.search(queries[0], k=K)

        def unfiltered(q: np.ndarray) -> object:
            return col.search(q, k=K)

        def beside_faiss_walk(name: str) -> dict:
            """latentsearch's filtered search (as ``name``) beside raw FAISS's filtered walk on huge pages."""
            plan = col.search(queries[0], k=K, where=where, explain=True)[0].details["plan"]
            ours = {name: lambda q: col.search(q, k=K, where=where)}
            faiss_walk = {"faiss_filtered": lambda q: huge.search(q[None], K, params=params)}
            return beside_faiss(plan, queries, **faiss_walk, **ours, unfiltered=unfiltered)

        found = beside_faiss_walk("filtered")
        found["ratio_vs_unfiltered_if_nothing_added"] = found["us_unfiltered"] / found["us_faiss_filtered"]
        results["filtered_10pct"] = found
        print("  10%: " + ", ".join(f"{k} {v}" for k, v in found.items()))

        # The same filter's first use on a collection that has its filter partition, against the same raw
        # FAISS walk (what a user of FAISS would run) and the unfiltered search.
        partitioner.enabled = True
        started = time.perf_counter()
        col.backend.index.build_partition()  # (in this thread, on one core: as in the background)
        built = time.perf_counter() - started
        found = beside_faiss_walk("partitioned")
        found["partition_build_seconds"] = built
        results["partitioned_10pct"] = found
        print("  10% partitioned: " + ", ".join(f"{k} {v}" for k, v in found.items()))

        # Repeated: once the walks have paid for it, the filter's own graph, against raw FAISS searching
        # an HNSW graph of the same matches (built alike) at the same breadth.
        col.backend.subindexes.limit = SUBINDEX_BYTES
        repeat_until_planned(col, queries, where)
        plan = col.search(queries[0], k=K, where=where, explain=True)[0].details["plan"]
        sub = faiss.IndexHNSWFlat(base.shape[1], 32)
        sub.hnsw.efConstruction = EF_CONSTRUCTION
        sub.add(base[buckets == 0])
        place_index(sub)  # (as latentsearch's sub-indexes)
        sub.hnsw.efSearch = 64
        found = beside_faiss(
            plan,
            queries,
            faiss_subindex=lambda q: sub.search(q[None], K),
            repeated=lambda q: col.search(q, k=K, where=where),
            unfiltered=unfiltered,
        )
        results["repeated_10pct"] = found
        print("  10% repeated: " + ", ".join(f"{k} {v}" for k, v in found.items()))
        col.close()
    report.save("hot_path", results)
    report.update_readme("hot_path", readme(results))


def readme(results: dict) -> str:
    rows = [
        [
            r["ef_search"],
            f"{r['us_faiss']:.0f}",
            f"{r['us_faiss_huge']:.0f} ({r['ratio_faiss_huge']:.2f}×)",
            *(
                f"{r[f'us_{n}']:.0f} ({r[f'us_added_{n}']:+.0f}, {r[f'ratio_{n}']:.2f}×)"
                for n in ("floor", "ids", "hits")
            ),
        ]
        for r in results["unfiltered"]
    ]
    f = results["filtered_10pct"]
    return (
        "**The hot path** (µs per query, best of 9 alternating loops of 500 Fashion-MNIST queries. *Raw FAISS*: "
        "its index as its user gets it, on 4 KiB pages; *on huge pages*: a copy of it placed as latentsearch "
        "places its own index, the same memory as latentsearch's; *+ Hit objects*: that answer made into ten "
        "`Hit(id, score)` and nothing else, the least a Python library's hits cost. In brackets: µs added to raw "
        "FAISS on huge pages, what the code adds, and the ratio of queries/s to raw FAISS as its user gets it, "
        "the targets' ratio):\n\n"
        + report.markdown_table(
            ["ef", "raw FAISS", "raw FAISS on huge pages", "+ Hit objects", "ids only", "full hits"], rows
        )
        + f"\n\nUnder a filter matching 10% of the items, without the filter partition ({f['plan']}): raw FAISS's "
        "own filtered walk on huge pages "
        f"{f['us_faiss_filtered']:.0f} µs, latentsearch's filtered search {f['us_filtered']:.0f} µs "
        f"(+{f['us_added_filtered']:.0f}), its unfiltered search {f['us_unfiltered']:.0f} µs: "
        f"{f['ratio_vs_unfiltered']:.2f}× of the unfiltered queries/s, and "
        f"{f['ratio_vs_unfiltered_if_nothing_added']:.2f}× if the filtered search added nothing to FAISS's walk. "
        + partitioned_line(results.get("partitioned_10pct"))
        + repeated_line(results.get("repeated_10pct"))
        + f"`python -m benchmarks.hot_path`; 2 CPU cores, {time.strftime('%Y-%m-%d')}.\n"
    )


def partitioned_line(r: dict | None) -> str:
    """The README sentence on the 10% filter once the collection has its filter partition."""
    if not r or not r["plan"].startswith("partition"):
        return "The filter partition did not answer the 10% filter. "
    return (
        f"With the filter partition ({r['plan']}), the same filter's first use: "
        f"{r['us_partitioned']:.0f} µs against FAISS's filtered walk's {r['us_faiss_filtered']:.0f} µs, "
        f"{r['ratio_vs_unfiltered']:.2f}× of the unfiltered queries/s (building the partition took "
        f"{r['partition_build_seconds']:.1f} s on one core; the writes keep it: see the filter partition). "
    )


def repeated_line(r: dict | None) -> str:
    """The README sentence on the repeated 10% filter (its sub-index)."""
    if not r or "sub-index" not in r["plan"]:
        return "No sub-index was built for the repeated filter. "
    return (
        f"The same filter repeated ({r['plan']}): {r['us_repeated']:.0f} µs, raw FAISS on an HNSW graph of the "
        f"matches {r['us_faiss_subindex']:.0f} µs (+{r['us_added_repeated']:.0f}), "
        f"{r['ratio_vs_unfiltered']:.2f}× of the unfiltered queries/s. "
    )


if __name__ == "__main__":
    main()
