"""Sharded collections on a local Ray: ingest throughput and query latency for 1, 2 and 4 shards.

On one machine shards share its cores, so this measures the overhead and the scaling of the
fan-out, not a cluster's capacity: 20,000 precomputed 128-d vectors (HNSW) and 500 MiniLM texts
(encoded by the encoder-actor pool), then 200 queries one at a time.

    python -m benchmarks.distributed

Writes benchmarks/results/distributed.json and the README table between the bench:distributed markers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report

N, DIM, TEXTS, QUERIES = 20_000, 128, 500, 200


def main() -> None:
    import ray

    import latentsearch as ls
    from latentsearch.workflows.demo import demo_corpus

    ray.init(include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    ids = [f"v{i}" for i in range(N)]
    corpus = demo_corpus(TEXTS)
    queries = rng.normal(size=(QUERIES, DIM)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for shards in (1, 2, 4):
            col = ls.create(f"v{shards}", encoder="precomputed", dim=DIM, index="hnsw", home=home, shards=shards)
            start = time.perf_counter()
            for s in range(0, N, 5000):
                col.add(ids[s : s + 5000], vectors=vectors[s : s + 5000])
            vector_rate = N / (time.perf_counter() - start)
            col.search(queries[0], k=10)
            latencies = []
            for q in queries:
                t = time.perf_counter()
                col.search(q, k=10)
                latencies.append(time.perf_counter() - t)
            col.close()
            texts = ls.create(f"t{shards}", encoder="minilm", home=home, shards=shards)
            start = time.perf_counter()
            texts.add([c["id"] for c in corpus], [c["text"] for c in corpus])
            text_rate = len(corpus) / (time.perf_counter() - start)
            texts.close()
            rows.append(
                {
                    "shards": shards,
                    "vectors_per_s": vector_rate,
                    "texts_per_s": text_rate,
                    "query_p50_ms": 1000 * float(np.percentile(latencies, 50)),
                    "query_p99_ms": 1000 * float(np.percentile(latencies, 99)),
                }
            )
            print(rows[-1])
    ray.shutdown()
    path = report.save("distributed", {"rows": rows, "vectors": N, "dim": DIM, "texts": TEXTS})
    table = report.markdown_table(
        ["shards", "vectors added / s", "texts added / s (MiniLM)", "query p50 ms", "query p99 ms"],
        [
            [
                r["shards"],
                f"{r['vectors_per_s']:.0f}",
                f"{r['texts_per_s']:.0f}",
                f"{r['query_p50_ms']:.1f}",
                f"{r['query_p99_ms']:.1f}",
            ]
            for r in rows
        ],
    )
    machine = report.machine()
    note = (
        f"\n\n{N:,} × {DIM} vectors (HNSW) and {TEXTS} texts on a local Ray, all shards on one machine's "
        f"{machine['cpu_count']} cores; `python -m benchmarks.distributed`, {machine['date']}."
    )
    updated = report.update_readme("distributed", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))


if __name__ == "__main__":
    main()
