"""Speed and memory beside what users would use instead, in the same run.

1. ANN on Fashion-MNIST (ann-benchmarks' fashion-mnist-784-euclidean: 60,000 base vectors, 10,000
   queries, exact ground truth by brute force): recall@10 and queries per second, one query at a time
   and in one batch, for latentsearch's own path (``Collection.search`` / ``search_batch``, which
   also read the hits from SQLite) over flat, HNSW and IVF, raw FAISS with the same index and
   parameters, and hnswlib (same M and ef). The recall/QPS curve goes to benchmarks/results/ann.png.
   Every timing is the best of 3 rounds that alternate with its baseline, so a busy neighbour on a
   shared machine slows both alike.
2. Filtered search: recall@10 and latency at 50%, 10%, 1% and 0.1% selectivity, against
   post-filtering (search k × 10, then filter) as wrappers without pre-filtering do it.
3. Ingest: end-to-end text ingest (encode + SQLite + FAISS) against bare ``SentenceTransformer.encode``
   on the same texts; ``minilm-int8`` (ONNX) throughput and agreement with the PyTorch encoder.
4. Memory: bytes per vector and recall@10 of flat, HNSW, IVF-PQ and SQ8 (compressed ones re-ranked on
   the stored float vectors).
5. Start-up: wall time of ``latentsearch search`` on a 100,000-item collection, and whether
   ``latentsearch --help`` imports torch.

    python -m benchmarks.performance [--quick]

``--quick`` uses 20,000 base vectors and 1,000 queries. Writes benchmarks/results/performance.json,
the curve, and the README table between the bench:performance markers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.datasets import fashion_mnist

K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / K for f, t in zip(found, truth)]))


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


ROUNDS = 3  # timings alternate between latentsearch and its baseline; the best round of each counts


def best_of(*contenders) -> list[tuple[float, object]]:
    """Time each callable ROUNDS times, alternating between them so that a noisy neighbour on a shared
    machine hits both alike; return each one's fastest time and its last output."""
    best: list[list] = [[float("inf"), None] for _ in contenders]
    for _ in range(ROUNDS):
        for slot, fn in zip(best, contenders):
            elapsed, out = timed(fn)
            slot[0], slot[1] = min(slot[0], elapsed), out
    return [(t, out) for t, out in best]


def ann(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, home: Path, single: int) -> list[dict]:
    """Recall@10 and QPS of latentsearch vs raw FAISS vs hnswlib."""
    import faiss

    import latentsearch as ls

    rows = []
    ids = [str(i) for i in range(len(base))]
    configs = [("flat", [None]), ("hnsw", [16, 32, 64, 128]), ("ivf", [1, 4, 16, 64])]
    for spec, knobs in configs:
        col = ls.create(f"ann-{spec}", encoder="precomputed", dim=base.shape[1], metric="l2", index=spec, home=home)
        col.add(ids, vectors=base)
        raw = faiss.index_factory(base.shape[1], col.index.factory, faiss.METRIC_L2)
        if hasattr(raw, "hnsw"):
            raw.hnsw.efConstruction = 80
        if not raw.is_trained:
            raw.train(base)
        raw.add(base)
        for knob in knobs:
            options = {"ef_search": knob} if spec == "hnsw" else {"nprobe": knob} if spec == "ivf" else {}
            if spec == "hnsw":
                raw.hnsw.efSearch = knob
            elif spec == "ivf":
                raw.nprobe = knob
            col.search(queries[0], k=K, **options)  # warm
            (t_raw1, _), (t_ls1, _) = best_of(
                lambda: [raw.search(q[None], K) for q in queries[:single]],
                lambda: [col.search(q, k=K, **options) for q in queries[:single]],
            )
            (t_rawb, (_, labels)), (t_lsb, hits) = best_of(
                lambda: raw.search(queries, K), lambda: col.search_batch(queries, k=K, **options)
            )
            found_ls = np.array([[int(h.id) for h in hs] + [-1] * (K - len(hs)) for hs in hits])
            rows.append(
                {
                    "index": col.index.factory,
                    "knob": knob,
                    "recall_latentsearch": recall(found_ls, truth),
                    "recall_faiss": recall(labels, truth),
                    "qps_single_latentsearch": single / t_ls1,
                    "qps_single_faiss": single / t_raw1,
                    "qps_batch_latentsearch": len(queries) / t_lsb,
                    "qps_batch_faiss": len(queries) / t_rawb,
                }
            )
            print(
                f"  {col.index.factory:14s} {knob!s:>5}: "
                + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in rows[-1].items()
                    if k not in ("index", "knob")
                )
            )
        col.close()
    try:
        import hnswlib
    except ImportError:
        print("  hnswlib not installed: pip install hnswlib")
        return rows
    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=16, ef_construction=80)  # hnswlib's M = FAISS HNSW32's M/2
    index.add_items(base, np.arange(len(base)))
    for ef in (16, 32, 64, 128):
        index.set_ef(max(ef, K))
        (t1, _), (tb, (labels, _)) = best_of(
            lambda: [index.knn_query(q[None], K) for q in queries[:single]], lambda: index.knn_query(queries, K)
        )
        rows.append(
            {
                "index": "hnswlib M=16",
                "knob": ef,
                "recall_hnswlib": recall(labels.astype(int), truth),
                "qps_single_hnswlib": single / t1,
                "qps_batch_hnswlib": len(queries) / tb,
            }
        )
        print(
            f"  hnswlib ef {ef}: recall {rows[-1]['recall_hnswlib']:.3f}, qps single {single / t1:.0f}, batch {len(queries) / tb:.0f}"
        )
    return rows


def filtered(base: np.ndarray, queries: np.ndarray, home: Path) -> list[dict]:
    """Pre-filtering (latentsearch) vs post-filtering (search k×10 then filter) at several selectivities."""
    import latentsearch as ls

    rng = np.random.default_rng(0)
    buckets = rng.integers(0, 1000, size=len(base))
    col = ls.create("filtered", encoder="precomputed", dim=base.shape[1], metric="l2", index="hnsw", home=home)
    col.add([str(i) for i in range(len(base))], vectors=base, metadata=[{"b": int(b)} for b in buckets])
    out = []
    for pct in (50, 10, 1, 0.1):
        limit = int(pct * 10)  # buckets below this many thousandths
        subset = np.flatnonzero(buckets < limit)
        where = f"b < {limit}"
        qs = queries[:200]
        import faiss

        _, truth_pos = faiss.knn(qs, base[subset], K)
        truth = subset[truth_pos]

        def post(q):
            hits = col.search(q, k=K * 10, ef_search=max(64, K * 10))
            return [h for h in hits if h.metadata["b"] < limit][:K]

        (t_pre, pre), (t_post, posted) = best_of(
            lambda: [col.search(q, k=K, where=where, ef_search=64) for q in qs], lambda: [post(q) for q in qs]
        )
        as_array = lambda results: np.array([[int(h.id) for h in r] + [-1] * (K - len(r)) for r in results])  # noqa: E731
        out.append(
            {
                "selectivity_pct": pct,
                "recall_prefilter": recall(as_array(pre), truth),
                "ms_prefilter": 1000 * t_pre / len(qs),
                "recall_postfilter": recall(as_array(posted), truth),
                "ms_postfilter": 1000 * t_post / len(qs),
                "results_returned_postfilter": float(np.mean([len(r) for r in posted])),
            }
        )
        print(f"  {pct}%: " + ", ".join(f"{k} {v:.3f}" for k, v in out[-1].items()))
    col.close()
    return out


def ingest(home: Path, quick: bool) -> dict:
    """End-to-end ingest vs bare SentenceTransformer.encode; int8 ONNX vs PyTorch."""
    import latentsearch as ls
    from latentsearch.demo import demo_corpus
    from latentsearch.encoders import get_encoder

    texts = [item["text"] for item in demo_corpus()][: 400 if quick else 1000]
    minilm = get_encoder("minilm")
    minilm.encode(texts[:16])  # load the model outside the timings
    t_bare, reference = timed(lambda: minilm.model.encode(texts, batch_size=64, normalize_embeddings=True))
    col = ls.create("ingest", encoder="minilm", index="hnsw", home=home)
    t_ls, _ = timed(lambda: col.add([str(i) for i in range(len(texts))], texts))
    col.close()
    fast = get_encoder("minilm-int8")
    fast.encode(texts[:16])
    t_fast, fast_vectors = timed(lambda: fast.encode(texts))
    t_torch, torch_vectors = timed(lambda: minilm.encode(texts))
    agreement = (fast_vectors * torch_vectors).sum(1)
    result = {
        "texts": len(texts),
        "items_per_s_latentsearch_add": len(texts) / t_ls,
        "items_per_s_bare_sentence_transformers": len(texts) / t_bare,
        "ratio_add_vs_bare": t_bare / t_ls,
        "items_per_s_minilm_int8": len(texts) / t_fast,
        "items_per_s_minilm_torch": len(texts) / t_torch,
        "int8_speedup": t_torch / t_fast,
        "int8_mean_cosine": float(agreement.mean()),
        "int8_min_cosine": float(agreement.min()),
    }
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    return result


def memory(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, home: Path) -> list[dict]:
    """Bytes per vector (FAISS index file size / n) and recall@10 of each index kind."""
    import latentsearch as ls

    out = []
    for spec in ("flat", "hnsw", "ivfpq", "sq8"):
        col = ls.create(f"mem-{spec}", encoder="precomputed", dim=base.shape[1], metric="l2", index=spec, home=home)
        col.add([str(i) for i in range(len(base))], vectors=base)
        col.save()
        size = (col.path / "index.faiss").stat().st_size
        hits = col.search_batch(queries[:500], k=K, ef_search=64, nprobe=16)
        found = np.array([[int(h.id) for h in hs] + [-1] * (K - len(hs)) for hs in hits])
        out.append(
            {
                "index": col.index.factory,
                "bytes_per_vector": size / len(base),
                "float_bytes_per_vector": 4 * base.shape[1],
                "recall@10": recall(found, truth[:500]),
            }
        )
        print(f"  {out[-1]}")
        col.close()
    return out


def startup(home: Path, dim: int = 384, n: int = 100_000) -> dict:
    """Seconds from `latentsearch search` invocation to its first result on a 100k-item collection."""
    import latentsearch as ls

    rng = np.random.default_rng(0)
    col = ls.create("startup", encoder="precomputed", dim=dim, index="hnsw", home=home)
    for start in range(0, n, 20_000):
        col.add(
            [str(i) for i in range(start, start + 20_000)], vectors=rng.normal(size=(20_000, dim)).astype(np.float32)
        )
    col.close()
    np.save(home / "q.npy", rng.normal(size=dim).astype(np.float32))
    cli = [sys.executable, "-m", "latentsearch.cli"]
    t_search, result = timed(
        subprocess.run,
        [*cli, "search", "startup", "--vector", str(home / "q.npy"), "--home", str(home), "--json", "-k", "5"],
    )
    t_help, _ = timed(
        subprocess.run,
        [*cli, "--help"],
    )
    probe = "import sys, latentsearch.cli as c; from typer.testing import CliRunner; CliRunner().invoke(c.app, ['--help']); print('torch' in sys.modules)"
    imports_torch = (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "True"
    )
    out = {
        "items": n,
        "search_seconds": t_search,
        "help_seconds": t_help,
        "help_imports_torch": imports_torch,
        "search_ok": result.returncode == 0,
    }
    print(f"  {out}")
    return out


def curve(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for name, recall_key, qps_key in (
        ("latentsearch HNSW32", "recall_latentsearch", "qps_single_latentsearch"),
        ("FAISS HNSW32", "recall_faiss", "qps_single_faiss"),
        ("hnswlib M=16", "recall_hnswlib", "qps_single_hnswlib"),
    ):
        points = sorted(
            (r[recall_key], r[qps_key])
            for r in rows
            if recall_key in r and ("HNSW" in r["index"] or "hnswlib" in r["index"])
        )
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=name)
    ivf = sorted((r["recall_latentsearch"], r["qps_single_latentsearch"]) for r in rows if r["index"].startswith("IVF"))
    if ivf:
        ax.plot([p[0] for p in ivf], [p[1] for p in ivf], "s--", label="latentsearch IVF")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (one at a time)")
    ax.set_yscale("log")
    ax.set_title("Fashion-MNIST 784-d, euclidean")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 base vectors and 1,000 queries")
    args = parser.parse_args()
    data = fashion_mnist()
    n_base, n_queries = (20_000, 1_000) if args.quick else (60_000, 10_000)
    base = data["train_images"].reshape(60_000, -1)[:n_base].astype(np.float32)
    queries = data["test_images"].reshape(10_000, -1)[:n_queries].astype(np.float32)
    print(f"Fashion-MNIST: {n_base:,} base, {n_queries:,} queries; exact ground truth")
    _, truth = faiss.knn(queries, base, K)
    single = min(len(queries), 1000)
    results: dict = {"base": n_base, "queries": n_queries, "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        print("ANN:")
        results["ann"] = ann(base, queries, truth, home, single)
        print("filtered:")
        results["filtered"] = filtered(base, queries, home)
        print("ingest:")
        results["ingest"] = ingest(home, args.quick)
        print("memory:")
        results["memory"] = memory(base, queries, truth, home)
        print("start-up:")
        results["startup"] = startup(home)
    curve(results["ann"], report.RESULTS / "ann.png")
    path = report.save("performance", results)
    update_readme(results)
    print(f"saved {path}")


def update_readme(results: dict) -> None:
    """The README tables of this benchmark, with each target's ratio."""
    lines = []
    best = {}
    for r in results["ann"]:
        if "recall_latentsearch" in r:
            key = r["index"].split(",")[0].rstrip("0123456789")
            if r["recall_latentsearch"] >= 0.9 and (
                key not in best or r["qps_single_latentsearch"] > best[key]["qps_single_latentsearch"]
            ):
                best[key] = r
    rows = [
        [
            r["index"],
            r["knob"],
            r["recall_latentsearch"],
            f"{r['qps_single_latentsearch']:.0f}",
            f"{r['qps_single_faiss']:.0f}",
            f"{r['qps_single_latentsearch'] / r['qps_single_faiss']:.2f}×",
            f"{r['qps_batch_latentsearch']:.0f}",
            f"{r['qps_batch_faiss']:.0f}",
            f"{r['qps_batch_latentsearch'] / r['qps_batch_faiss']:.2f}×",
        ]
        for r in results["ann"]
        if "recall_latentsearch" in r
    ]
    lines.append(
        "**ANN** (recall@10; queries/s one at a time and in one batch, best of 3 rounds alternating with the baseline; latentsearch ÷ raw FAISS with the same index; targets 0.9× and 0.95×):\n\n"
    )
    lines.append(
        report.markdown_table(
            [
                "index",
                "ef / nprobe",
                "recall@10",
                "ls q/s",
                "FAISS q/s",
                "ratio",
                "ls batch q/s",
                "FAISS batch q/s",
                "ratio",
            ],
            rows,
        )
    )
    hnswlib_rows = [
        [r["knob"], r["recall_hnswlib"], f"{r['qps_single_hnswlib']:.0f}", f"{r['qps_batch_hnswlib']:.0f}"]
        for r in results["ann"]
        if "recall_hnswlib" in r
    ]
    if hnswlib_rows:
        lines.append("\n\nhnswlib (M=16, same graph size as HNSW32), for comparison:\n\n")
        lines.append(report.markdown_table(["ef", "recall@10", "q/s", "batch q/s"], hnswlib_rows))
    lines.append(
        "\n\n![recall vs queries per second](benchmarks/results/ann.png)\n\n**Filtered search** (HNSW, ef 64; post-filtering searches k × 10 then filters):\n\n"
    )
    lines.append(
        report.markdown_table(
            ["selectivity", "recall pre-filter", "ms", "recall post-filter", "ms", "results post-filter (of 10)"],
            [
                [
                    f"{r['selectivity_pct']}%",
                    r["recall_prefilter"],
                    f"{r['ms_prefilter']:.2f}",
                    r["recall_postfilter"],
                    f"{r['ms_postfilter']:.2f}",
                    f"{r['results_returned_postfilter']:.1f}",
                ]
                for r in results["filtered"]
            ],
        )
    )
    i = results["ingest"]
    lines.append(
        f"\n\n**Ingest** ({i['texts']:,} Python-docs texts): `Collection.add` {i['items_per_s_latentsearch_add']:.0f} items/s "
        f"(encode + SQLite + HNSW) vs bare `SentenceTransformer.encode` {i['items_per_s_bare_sentence_transformers']:.0f} "
        f"items/s: {i['ratio_add_vs_bare']:.2f}× (target 0.9×). `minilm-int8` {i['items_per_s_minilm_int8']:.0f} items/s vs "
        f"PyTorch {i['items_per_s_minilm_torch']:.0f}: {i['int8_speedup']:.2f}× (target 1.8×), mean cosine agreement "
        f"{i['int8_mean_cosine']:.4f} (min {i['int8_min_cosine']:.4f}; target 0.99).\n\n**Memory** (FAISS file bytes per vector; recall@10 with re-ranking on the stored floats):\n\n"
    )
    lines.append(
        report.markdown_table(
            ["index", "bytes / vector", "float32 bytes", "recall@10"],
            [
                [m["index"], f"{m['bytes_per_vector']:.0f}", m["float_bytes_per_vector"], m["recall@10"]]
                for m in results["memory"]
            ],
        )
    )
    s = results["startup"]
    machine = results.get("machine", report.machine())
    lines.append(
        f"\n\n**Start-up**: `latentsearch search` on a {s['items']:,}-item HNSW collection, invocation to result: "
        f"{s['search_seconds']:.2f}s; `latentsearch --help`: {s['help_seconds']:.2f}s, imports torch: "
        f"{'yes' if s['help_imports_torch'] else 'no'}.\n\n`python -m benchmarks.performance{' --quick' if results['quick'] else ''}` "
        f"({results['base']:,} base vectors, {results['queries']:,} queries); {machine['cpu_count']} CPU cores, {machine['date']}."
    )
    report.update_readme("performance", "".join(lines))


if __name__ == "__main__":
    main()
