"""Retrieval quality of lexical, vector and hybrid search on two labelled text sets.

1. Reuters-21578 grain and corn subsets shipped in Debian's ``weka`` package (2,158 news articles,
   160 about grain, 69 about corn; see benchmarks/datasets.py). 20 queries below, 10 per topic, from
   keyword-style to paraphrases; an article is relevant when it carries the query's topic label.
2. Python's documentation (the demo corpus: help topics and standard-library docstrings, shipped with
   Python). 28 queries below with the API items that answer them: paraphrases ("delete a directory
   tree" -> shutil.rmtree) and identifiers ("zip_longest"), as people search code docs.

Reported per mode: nDCG@10 (binary gains), precision@10, recall@100, and the mean latency of one
search call.

    python -m benchmarks.retrieval [--rebuild]

Writes benchmarks/results/retrieval.json and the README table between the bench:retrieval markers.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.datasets import cache_dir, reuters

QUERIES = {
    "corn": [
        "corn",
        "maize",
        "US corn crop production estimates",
        "corn export tenders and shipments",
        "price of corn futures",
        "feed grain sales to the Soviet Union",
        "maize harvest in southern Africa",
        "sorghum and corn imports",
        "farmers idle acres under the corn program",
        "yellow kernels bought by Asian importers",
    ],
    "grain": [
        "grain",
        "wheat exports",
        "cereal crops harvest",
        "grain shipments to China",
        "agriculture department crop report",
        "rice and barley production",
        "government subsidies for wheat farmers",
        "harvest shortfall because of drought",
        "Soviet Union buys American wheat",
        "European Community export restitution tender",
    ],
}
PYDOCS_QUERIES = {
    "compress bytes in memory": ["gzip.compress", "zlib.compress", "lzma.compress"],
    "delete a directory tree": ["shutil.rmtree"],
    "find an executable on PATH": ["shutil.which"],
    "create a temporary folder that is removed automatically": ["tempfile.TemporaryDirectory", "tempfile.mkdtemp"],
    "serialize an object to a JSON string": ["json.dumps"],
    "parse a URL into its components": ["urllib.parse.urlparse", "urllib.parse.urlsplit"],
    "escape a string for use in a shell command": ["shlex.quote"],
    "split a command line like a shell would": ["shlex.split"],
    "pause the program for some seconds": ["time.sleep"],
    "walk a directory tree": ["os.walk", "os.fwalk"],
    "generate a secure random token for URLs": ["secrets.token_urlsafe", "secrets.token_hex", "secrets.token_bytes"],
    "keyed message authentication code": ["hmac", "hmac.new", "hmac.HMAC", "hmac.digest"],
    "memoize function results": ["functools.lru_cache", "functools.cache"],
    "double-ended queue with fast appends and pops at both ends": ["collections.deque"],
    "count occurrences of items": ["collections.Counter"],
    "tuple with named fields": ["collections.namedtuple", "typing.NamedTuple"],
    "fix some arguments of a function": ["functools.partial"],
    "median of data": ["statistics.median", "statistics.median_low", "statistics.median_high"],
    "run a program and capture its output": [
        "subprocess.check_output",
        "subprocess.run",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
    ],
    "create all missing parent directories": ["os.makedirs"],
    "read an environment variable": ["os.getenv"],
    "unique identifier based on host and time": ["uuid.uuid1"],
    "urlsafe_b64encode": ["base64.urlsafe_b64encode"],
    "getaddrinfo": ["socket.getaddrinfo"],
    "NamedTemporaryFile": ["tempfile.NamedTemporaryFile"],
    "file_digest": ["hashlib.file_digest"],
    "zip_longest": ["itertools.zip_longest"],
    "BoundedSemaphore": ["threading.BoundedSemaphore"],
}
MODES = {
    "lexical (BM25)": {"mode": "lexical"},
    "vector (MiniLM)": {"mode": "vector"},
    "hybrid (RRF k=60)": {"mode": "hybrid"},
    "hybrid (weighted 0.5)": {"mode": "hybrid", "fusion": "weighted", "alpha": 0.5},
}


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    """Binary-gain nDCG@k."""
    dcg = sum(1.0 / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if doc in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def cached_collection(home: Path, name: str, items: list[dict], rebuild: bool):
    """A flat MiniLM collection of ``items`` ({id, text, metadata}), encoded once and cached."""
    import latentsearch as ls

    if not rebuild and name in ls.list_collections(home=home):
        col = ls.open(name, home=home)
        if col.count() == len(items):
            return col
        col.close()
    if name in ls.list_collections(home=home):
        ls.drop(name, home=home)
    col = ls.create(name, encoder="minilm", index="flat", home=home)
    col.add(
        [d["id"] for d in items],
        [d["text"] for d in items],
        metadata=[d["metadata"] for d in items],
        progress=lambda done, total: print(f"\rencoding {name}: {done}/{total}", end="", flush=True),
    )
    print()
    return col


def evaluate(col, queries: list[tuple[str, set[str]]]) -> tuple[dict, dict]:
    """Mean metrics per mode, and nDCG@10 per query and mode."""
    col.search(queries[0][0], k=1, mode="vector")  # load the model before timing
    results: dict[str, dict] = {}
    per_query: dict[str, dict[str, float]] = {}
    for name, options in MODES.items():
        ndcg, p10, r100, latency = [], [], [], []
        for query, rel in queries:
            start = time.perf_counter()
            hits = col.search(query, k=100, **options)
            latency.append(time.perf_counter() - start)
            ranked = [h.id for h in hits]
            ndcg.append(ndcg_at(ranked, rel))
            p10.append(sum(doc in rel for doc in ranked[:10]) / 10)
            r100.append(sum(doc in rel for doc in ranked[:100]) / len(rel))
            per_query.setdefault(query, {})[name] = round(ndcg[-1], 4)
        results[name] = {
            "ndcg@10": float(np.mean(ndcg)),
            "p@10": float(np.mean(p10)),
            "recall@100": float(np.mean(r100)),
            "latency_ms": 1000 * float(np.mean(latency)),
        }
        print(f"  {name:24s} " + "  ".join(f"{k} {v:.3f}" for k, v in results[name].items()))
    return results, per_query


def datasets(rebuild: bool):
    """Yield (name, collection, [(query, relevant ids)]) for each benchmark set."""
    from latentsearch.workflows.demo import demo_corpus

    home = cache_dir() / "home"
    docs = reuters()["docs"]
    items = [
        {"id": d["id"], "text": d["text"], "metadata": {"corn": d["corn"], "grain": d["grain"], "split": d["split"]}}
        for d in docs
    ]
    relevant = {topic: {d["id"] for d in docs if d[topic]} for topic in QUERIES}
    queries = [(q, relevant[topic]) for topic, qs in QUERIES.items() for q in qs]
    yield "Reuters-21578 corn+grain", cached_collection(home, "reuters", items, rebuild), queries
    corpus = demo_corpus()
    present = {item["id"] for item in corpus}
    queries = [(q, set(ids) & present) for q, ids in PYDOCS_QUERIES.items() if set(ids) & present]
    yield "Python docs", cached_collection(home, "pydocs", corpus, rebuild), queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="re-encode the collections even if cached")
    args = parser.parse_args()
    data: dict = {"datasets": {}}
    rows = []
    for name, col, queries in datasets(args.rebuild):
        print(f"{name}: {col.count():,} documents, {len(queries)} queries")
        results, per_query = evaluate(col, queries)
        data["datasets"][name] = {
            "documents": col.count(),
            "queries": len(queries),
            "results": results,
            "per_query_ndcg@10": per_query,
        }
        col.close()
        for mode, r in results.items():
            rows.append([name, mode, r["ndcg@10"], r["p@10"], r["recall@100"], f"{r['latency_ms']:.1f}"])
    # Which mode is best over both sets (mean of the per-set means, so each set weighs the same).
    overall = {
        mode: float(np.mean([d["results"][mode]["ndcg@10"] for d in data["datasets"].values()])) for mode in MODES
    }
    data["mean_ndcg@10_over_sets"] = overall
    path = report.save("retrieval", data)
    for mode, value in overall.items():
        rows.append(["**mean of both sets**", mode, value, "", "", ""])
        print(f"mean nDCG@10 over sets  {mode:24s} {value:.3f}")
    table = report.markdown_table(["data", "mode", "nDCG@10", "P@10", "recall@100", "ms / query"], rows)
    machine = data["machine"]
    note = f"\n\n`python -m benchmarks.retrieval`; {machine['cpu_count']} CPU cores, {machine['date']}."
    updated = report.update_readme("retrieval", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))


if __name__ == "__main__":
    main()
