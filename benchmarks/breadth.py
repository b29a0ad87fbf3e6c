"""How wide a filtered HNSW walk must be, and what the filter partition does instead: recall of each
under a filter, by selectivity and k.

The filter planner's index plan searches the HNSW graph with an ID selector at a breadth (efSearch)
chosen from the caller's efSearch, the filter's share ``s`` of the items and ``k``
(:func:`latentsearch.backends.planner.filtered_ef_search`). This benchmark measures that breadth
against the rule it replaced, ``efSearch / √s``, on the same graph and the same random filters:
recall@k of the walk alone against the exact neighbours among the matches, the distances it
computes (FAISS's ``hnsw_stats.ndis``, the walk's cost, the same in every run), the share of queries
that found fewer than k (those the planner answers exactly afterwards), and the plan the planner
picks for that many matches (where it is ``exact``, the walk is not run by latentsearch at all).
Beside the walk, the filter partition (:mod:`latentsearch.index.partition`) on the same vectors: its
recall@k at the lists the planner probes, the candidates it scores per query, and its time.

Data: Fashion-MNIST (60,000 × 784, L2), clustered synthetic unit vectors (100,000 × 128, 1,000
clusters, inner product: ``benchmarks.scaling``'s data) and text embeddings (60,000 WordNet glosses
encoded by the default text encoder, MiniLM, 384-d, cosine); the base efSearch is the default, 64.

    python -m benchmarks.breadth

Writes benchmarks/results/breadth.json and the README table between the bench:breadth markers.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from benchmarks import report
from benchmarks.datasets import cache_dir, fashion_mnist, wordnet
from benchmarks.scaling import block
from benchmarks.scaling import queries as scaling_queries
from latentsearch.backends.planner import filtered_ef_search, plan_filtered
from latentsearch.index.partition import Partition, probe_count
from latentsearch.index.partition import build as build_partition
from latentsearch.index.specs import DEFAULT_EF_SEARCH, HNSW_EF_CONSTRUCTION, HNSW_M
from latentsearch.limits import MAX_EF_SEARCH

QUERIES = 300
TIMED = 100  # single queries timed for the walk and the exact scan, best of ROUNDS alternating loops
ROUNDS = 3
CASES = [
    (1, 0.01),
    (10, 0.5),
    (10, 0.2),
    (10, 0.1),
    (10, 0.05),
    (10, 0.02),
    (10, 0.01),
    (100, 0.5),
    (100, 0.1),
]  # (k, share)


def sqrt_rule(ef: int, k: int, share: float) -> int:
    """The breadth before k counted: efSearch scaled by 1/√s."""
    return min(MAX_EF_SEARCH, max(ef, math.ceil(ef / math.sqrt(share))))


TEXT_BASE = 60_000  # WordNet synsets in the text data's base (of 117,659); QUERIES others are its queries


def wordnet_vectors() -> tuple[np.ndarray, np.ndarray]:
    """Text embeddings as a collection holds them: the default encoder's (``minilm``, 384-d, unit length)
    vectors of WordNet synsets ("lemmas: definition"), TEXT_BASE of them for the base and QUERIES
    others for the queries, drawn at random from every part of speech. Encoded once (minutes on two
    cores) and kept in the data cache."""
    cached = cache_dir() / f"wordnet-minilm-{TEXT_BASE}-{QUERIES}.npy"
    if not cached.exists():
        from latentsearch.encoders import get_encoder

        synsets = wordnet()["synsets"]
        chosen = np.random.default_rng(0).permutation(len(synsets))[: TEXT_BASE + QUERIES]
        texts = [f"{', '.join(synsets[i]['lemmas'])}: {synsets[i]['definition']}" for i in chosen]
        print(f"  encoding {len(texts):,} WordNet glosses with minilm (once: kept in {cached})", flush=True)
        vectors = get_encoder("minilm").encode(texts, batch_size=256).astype(np.float32)
        np.save(cached, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    vectors = np.load(cached)
    return vectors[:TEXT_BASE], vectors[TEXT_BASE:]


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """name -> (base, queries, metric)."""
    data = fashion_mnist()
    base = data["train_images"].reshape(len(data["train_images"]), -1).astype(np.float32) / 255
    queries = data["test_images"].reshape(len(data["test_images"]), -1).astype(np.float32)[:QUERIES] / 255
    clustered = block(0, 100_000, 128)[0]
    texts, text_queries = wordnet_vectors()
    return {
        "Fashion-MNIST 60,000 × 784": (base, queries, "l2"),
        "clustered 100,000 × 128": (clustered, scaling_queries(128)[:QUERIES], "ip"),
        f"WordNet glosses (MiniLM) {TEXT_BASE:,} × 384": (texts, text_queries, "ip"),
    }


def walk_params(mask: np.ndarray, ef: int) -> tuple:
    """FAISS search parameters of a walk at ``ef`` among the positions ``mask`` sets, with the selector
    and the bitmap it points into (which must outlive the parameters' use)."""
    import faiss

    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    params = faiss.SearchParametersHNSW()
    params.sel, params.efSearch = selector, ef
    return params, selector, bitmap


def walk(index, queries: np.ndarray, k: int, mask: np.ndarray, ef: int, truth: np.ndarray) -> dict:
    """Recall@k, distances per query and the share short of k of one filtered walk."""
    import faiss

    params, *_ = kept = walk_params(mask, ef)
    faiss.cvar.hnsw_stats.reset()
    _, found = index.search(queries, k, params=params)
    del kept
    return {
        "ef_search": ef,
        "recall": float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth)])),
        "distances": faiss.cvar.hnsw_stats.ndis / len(queries),
        "short": float(np.mean((found < 0).any(axis=1))),
    }


def partition_search(
    part: Partition, storage, queries: np.ndarray, k: int, mask: np.ndarray, nprobe: int, l2: bool, truth: np.ndarray
) -> dict:
    """Recall@k and candidates per query of the partition's search at ``nprobe`` lists (its probe scale:
    what its check at build chose, None where it found the partition not worth using)."""
    _, found = part.search(storage, queries, k, nprobe, mask, l2=l2)
    candidates = [len(part.candidates(q[None], nprobe, mask)) for q in queries]
    return {
        "nprobe": nprobe,
        "lists": part.lists,
        "probe_scale": part.probe_scale,
        "recall": float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth)])),
        "candidates": float(np.mean(candidates)),
    }


def timed_us(
    index, part, queries: np.ndarray, k: int, mask: np.ndarray, ef: int, nprobe: int, kind: int
) -> list[float]:
    """µs per single query of the walk at ``ef``, of the exact scan of the matches' vectors (held in
    memory, as the exact plan holds them) and of the partition at ``nprobe`` lists, best of ROUNDS
    alternating loops."""
    import faiss

    params, *kept = walk_params(mask, ef)
    matches = np.ascontiguousarray(index.reconstruct_n(0, index.ntotal)[mask])
    storage, l2 = faiss.downcast_index(index.storage), kind == faiss.METRIC_L2
    singles = [q[None] for q in queries[:TIMED]]
    runs = (
        lambda q: index.search(q, k, params=params),
        lambda q: faiss.knn(q, matches, k, metric=kind),
        lambda q: part.search(storage, q, k, nprobe, mask, l2=l2),
    )
    best = [float("inf")] * len(runs)
    for _ in range(ROUNDS):
        for slot, run in enumerate(runs):
            start = time.perf_counter()
            for q in singles:
                run(q)
            best[slot] = min(best[slot], (time.perf_counter() - start) / len(singles) * 1e6)
    del kept
    return best


def unfiltered_walk_us(index, queries: np.ndarray) -> float:
    """µs per single query of the unfiltered walk at the default efSearch (k 10, one thread), best of
    ROUNDS loops of TIMED: what a filtered plan's time is set against."""
    index.hnsw.efSearch = DEFAULT_EF_SEARCH
    singles = [q[None] for q in queries[:TIMED]]
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for q in singles:
            index.search(q, 10)
        best = min(best, (time.perf_counter() - start) / len(singles) * 1e6)
    return best


def main() -> None:
    import faiss

    rows, unfiltered_us = [], {}
    rng = np.random.default_rng(0)
    for name, (base, queries, metric) in datasets().items():
        kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexHNSWFlat(base.shape[1], HNSW_M, kind)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(base)
        storage = faiss.downcast_index(index.storage)
        part = build_partition(storage.reconstruct_batch, len(base), base.shape[1], metric, index)
        faiss.omp_set_num_threads(1)  # (the counts do not depend on it; single queries run on one thread)
        draw = rng.random(len(base))
        unfiltered_us[name] = unfiltered_walk_us(index, queries)
        unfiltered = {}
        for k in sorted({k for k, _ in CASES}):
            _, truth = faiss.knn(queries, base, k, metric=kind)
            unfiltered[k] = walk(index, queries, k, np.ones(len(base), bool), DEFAULT_EF_SEARCH, truth)["recall"]
        for k, share in CASES:
            mask = draw < share
            matches = np.flatnonzero(mask)
            _, nearest = faiss.knn(queries, base[matches], k, metric=kind)
            truth = matches[nearest]
            plan = plan_filtered(
                len(matches),
                len(base),
                k=k,
                factory=f"HNSW{HNSW_M}",
                dim=base.shape[1],
                partition=(part.lists, part.probe_scale) if part.probe_scale else (0, 1.0),
            )
            before = walk(index, queries, k, mask, sqrt_rule(DEFAULT_EF_SEARCH, k, share), truth)
            breadth = filtered_ef_search(DEFAULT_EF_SEARCH, k, share)
            now = walk(index, queries, k, mask, breadth, truth)
            nprobe = probe_count(part.lists, k, share, part.probe_scale or 1.0)
            lists = partition_search(part, storage, queries, k, mask, nprobe, kind == faiss.METRIC_L2, truth)
            walk_us, exact_us, partition_us = timed_us(index, part, queries, k, mask, breadth, nprobe, kind)
            rows.append(
                {
                    "data": name,
                    "k": k,
                    "share": share,
                    "matches": len(matches),
                    "plan": plan.kind,
                    "unfiltered_recall": unfiltered[k],
                    "sqrt_rule": before,
                    "planner": now,
                    "partition": lists,
                    "walk_us": walk_us,
                    "exact_us": exact_us,
                    "partition_us": partition_us,
                }
            )
            print(f"  {name} k {k} s {share}: {rows[-1]}", flush=True)
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # all cores for the next build
    results = {"base_ef_search": DEFAULT_EF_SEARCH, "rows": rows, "unfiltered_us": unfiltered_us}
    report.save("breadth", results)
    report.update_readme("breadth", readme(results))


def readme(results: dict) -> str:
    def cell(r: dict) -> str:
        short = f", {r['short']:.0%} short" if r["short"] else ""
        return f"{r['ef_search']}: {r['recall']:.3f} ({r['distances']:,.0f} distances{short})"

    rows = [
        [
            r["data"],
            r["k"],
            f"{r['share']:.0%}",
            f"{r['matches']:,}",
            r["plan"],
            f"{r['unfiltered_recall']:.3f}",
            cell(r["sqrt_rule"]),
            cell(r["planner"]),
            f"{r['walk_us']:,.0f}" + (" ◀" if r["plan"] == "index" else ""),
            f"{r['exact_us']:,.0f}" + (" ◀" if r["plan"] == "exact" else ""),
            f"{r['partition']['nprobe']}/{r['partition']['lists']}: {r['partition']['recall']:.3f} "
            f"({r['partition']['candidates']:,.0f} candidates)",
            f"{r['partition_us']:,.0f}" + (" ◀" if r["plan"] == "partition" else ""),
        ]
        for r in results["rows"]
    ]
    return (
        f"**Filtered walks** (HNSW32, base efSearch {results['base_ef_search']}, random filters, {QUERIES} queries; "
        "each cell: efSearch, then the walk's recall@k against the exact neighbours among the matches, its "
        "distances per query and the share of queries short of k; *plan*: what the planner runs for that many "
        "matches once the index has its filter partition, the walk only where it says `index`; *partition*: "
        "lists probed of all, recall@k, candidates scored per query; *walk µs*, *exact µs* and *partition µs*: "
        "a single query, one thread, the planner's breadth against an exact scan of the matches' vectors held "
        f"in memory and the partition, best of {ROUNDS} alternating loops of {TIMED}, ◀ marking the planner's "
        "choice):\n\n"
        + report.markdown_table(
            [
                "data",
                "k",
                "filter",
                "matches",
                "plan",
                "unfiltered recall",
                "efSearch / √s",
                "the planner's breadth",
                "walk µs",
                "exact µs",
                "partition",
                "partition µs",
            ],
            rows,
        )
        + "\n\nThe partition's check of itself at build (recall@10 of 64 of its own vectors under 10% and 3% "
        "filters, at least 0.97) chose its probe scale: "
        + "; ".join(
            f"{data}: {'×' + format(scale, 'g') if scale else 'not used, the walk or the exact scan serve it'}"
            for data, scale in dict.fromkeys((r["data"], r["partition"].get("probe_scale")) for r in results["rows"])
        )
        + " (the partition column probes at that scale, ×1 where not used). The unfiltered walk of each graph "
        f"(efSearch {DEFAULT_EF_SEARCH}, k 10, one thread), what the filtered plans' µs compare with: "
        + "; ".join(f"{data}: {us:,.0f} µs" for data, us in results.get("unfiltered_us", {}).items())
        + "."
        + f"\n\n`python -m benchmarks.breadth`; 2 CPU cores, {time.strftime('%Y-%m-%d')}.\n"
    )


if __name__ == "__main__":
    main()
