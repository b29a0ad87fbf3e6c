"""Load test of the HTTP server on loopback: concurrent searches while a writer adds, nothing lost.

Starts ``latentsearch serve``'s app under uvicorn on 127.0.0.1 (a free port), then runs a bounded
load: CLIENTS threads each send REQUESTS searches (vector queries, then MiniLM text queries) while one
writer posts BATCHES batches of new items. Reports throughput and p50/p99 latency per phase, and
checks that every acknowledged write is present afterwards.

    python -m benchmarks.server_load

Writes benchmarks/results/server_load.json and the README table between the bench:server markers.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import report

CLIENTS, REQUESTS, BATCHES, BATCH = 4, 100, 20, 50
DIM, BASE = 384, 10_000


def run_phase(url: str, phase: str, make_body, collection: str) -> dict:
    """CLIENTS searching threads and one writer at once; then check every acknowledged write."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    acknowledged: list[str] = []
    lock = threading.Lock()
    rng = np.random.default_rng(1)

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(REQUESTS):
                start = time.perf_counter()
                r = http.post(f"/api/collections/{collection}/search", json=make_body(worker * REQUESTS + i))
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if r.status_code != 200:
                        errors.append(r.text)

    def writer() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for b in range(BATCHES):
                ids = [f"{phase[:6]}-{b}-{i}" for i in range(BATCH)]
                items = [{"id": x, "vector": v.tolist()} for x, v in zip(ids, rng.normal(size=(BATCH, DIM)))]
                r = http.post("/api/collections/vectors/items", json={"items": items})
                if r.status_code == 200:
                    acknowledged.extend(ids)
                else:
                    errors.append(r.text)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)] + [threading.Thread(target=writer)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    present: set[str] = set()
    with httpx.Client(base_url=url, timeout=60) as http:
        for s in range(0, len(acknowledged), 500):
            got = http.get("/api/collections/vectors/items", params={"ids": acknowledged[s : s + 500]})
            present |= {item["id"] for item in got.json()} if got.status_code == 200 else set()
    return {
        "clients": CLIENTS,
        "requests": len(latencies),
        "errors": len(errors),
        "throughput_rps": len(latencies) / wall,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "writes_acknowledged": len(acknowledged),
        "writes_lost": len(set(acknowledged) - present),
    }


def main() -> None:
    import latentsearch as ls
    from latentsearch.server import create_app, running

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        col = ls.create("vectors", encoder="precomputed", dim=DIM, index="hnsw", home=home)
        col.add([f"base{i}" for i in range(BASE)], vectors=rng.normal(size=(BASE, DIM)).astype(np.float32))
        col.close()
        texts = ls.create("texts", encoder="minilm", home=home)
        from latentsearch.workflows.demo import demo_corpus

        corpus = demo_corpus(300)
        texts.add([c["id"] for c in corpus], [c["text"] for c in corpus])
        texts.close()
        phases = (
            (
                "vector search (HNSW, 10k × 384)",
                lambda i: {"vector": rng.normal(size=DIM).tolist(), "k": 10},
                "vectors",
            ),
            ("text search (MiniLM, 300 docs)", lambda i: {"query": f"how to read file number {i}", "k": 10}, "texts"),
        )
        with running(create_app(home)) as url:
            results = {phase: run_phase(url, phase, body, name) for phase, body, name in phases}
        for phase, r in results.items():
            print(
                f"{phase}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
            )
    path = report.save("server_load", {"results": results})
    rows = [
        [
            phase,
            r["clients"],
            r["requests"],
            f"{r['throughput_rps']:.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            r["writes_acknowledged"],
            r["writes_lost"],
            r["errors"],
        ]
        for phase, r in results.items()
    ]
    table = report.markdown_table(
        ["phase", "clients", "requests", "req/s", "p50 ms", "p99 ms", "items written meanwhile", "lost", "errors"], rows
    )
    machine = report.machine()
    note = f"\n\n`python -m benchmarks.server_load`; loopback, {machine['cpu_count']} CPU cores, {machine['date']}."
    updated = report.update_readme("server", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))


if __name__ == "__main__":
    main()
