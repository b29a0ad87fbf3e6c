"""Speed and memory beside what users would use instead, in the same run.

1. ANN on Fashion-MNIST (ann-benchmarks' fashion-mnist-784-euclidean: 60,000 base vectors, 10,000
   queries, exact ground truth by brute force): recall@10 and queries per second, one query at a time
   and in one batch, for latentsearch's own path (``Collection.search`` / ``search_batch``, which
   also read the hits from SQLite) over flat, HNSW and IVF, raw FAISS with the same index and
   parameters, and hnswlib (same M and ef). The recall/QPS curve goes to benchmarks/results/ann.png.
   Every timing is the best of 3 rounds (9 for one query at a time on HNSW and IVF) that alternate
   with its baseline, so a busy neighbour on a shared machine slows both alike.
2. Filtered search: recall@10, results returned, latency, the filter planner's plan and queries/s
   against unfiltered at 100%, 50%, 10%, 1%, 0.1% and 0.01% selectivity, beside post-filtering
   (search k × 10, then filter) as wrappers without pre-filtering do it: a filter's first use before
   and after the collection has its filter partition, and a filter repeated until it has a sub-index.
3. Bulk ingest of precomputed vectors: ``Collection.add`` of the 60,000 Fashion-MNIST vectors into an
   HNSW collection beside FAISS alone building the same index; disk bytes per vector; reopening beside
   ``faiss.read_index``.
4. Ingest: end-to-end text ingest with ``minilm`` (onnxruntime; encode + SQLite + FAISS) against bare
   ``SentenceTransformer.encode`` (batch 32) on the same texts; the encoders alone (``minilm`` on
   onnxruntime and on PyTorch, ``minilm-int8``) and their agreement; EfficientNet-Lite0 images per
   second on onnxruntime vs PyTorch.
5. Memory: bytes per vector and recall@10 of flat, HNSW, IVF-PQ and SQ8 (compressed ones re-ranked on
   the stored float vectors).
6. Peers (``benchmarks/peers.py``): latentsearch, Chroma ``PersistentClient``, LanceDB (local, with and
   without an index) and Qdrant's local mode on the same 60,000 vectors: ingest, disk bytes per vector,
   reopening, and recall@10 with queries/s unfiltered and under 10% and 1% filters.
7. Start-up: wall time of ``latentsearch search`` by text and by vector on a 100,000-item ``minilm``
   collection beside ``latentsearch --help`` and ``import sentence_transformers``, whether they
   import torch, and ``latentsearch serve``'s time to answer and first-request latency.

    python -m benchmarks.performance [--quick] [--only bulk,ingest,peers,startup]

``--quick`` uses 20,000 base vectors and 1,000 queries. Writes benchmarks/results/performance.json,
the curve, and the README table between the bench:performance markers.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import peers, report
from benchmarks.datasets import fashion_mnist
from latentsearch.index.subindex import SUBINDEX_BYTES

K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / K for f, t in zip(found, truth)]))


def timed(fn, *args) -> tuple[float, object]:
    gc.collect()  # each timing starts from a collected heap: the garbage of the one before is not charged to it
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def each(fn, items) -> None:
    """Call ``fn`` on every item, keeping nothing."""
    for item in items:
        fn(item)


SMALL_WRITE = 1_000  # vectors a write, for a collection grown by small writes (bulk, filtered)
ROUNDS = 3  # timings alternate between latentsearch and its baseline; the best round of each counts
# One query at a time against an ANN index: a loop of a fraction of a second, whose best of 3 moved the
# ratios to raw FAISS by ±10% from run to run on a shared machine (more than the gaps to the targets).
SINGLE_QUERY_ROUNDS = 9
# Bulk ingest: 8–10 s a round, whose best moves by ±10% from run to run on this machine with 3 rounds.
BULK_ROUNDS = 5


def best_of(*contenders, rounds: int = ROUNDS) -> list[tuple[float, object]]:
    """Time each callable ``rounds`` times, alternating between them so that a noisy neighbour on a
    shared machine hits both alike; return each one's fastest time and its last output."""
    best: list[list] = [[float("inf"), None] for _ in contenders]
    for _ in range(rounds):
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
        raw = faiss.index_factory(base.shape[1], col.backend.index.factory, faiss.METRIC_L2)
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
            # One query at a time, each answer dropped as a caller's loop would (kept, 100,000 hits would
            # be charged to the garbage collector's later passes, on every side alike).
            (t_raw1, _), (t_named1, _), (t_ls1, _), (t_ids1, _) = best_of(
                lambda: each(lambda q: raw.search(q[None], K), queries[:single]),
                # The least a FAISS user adds: the positions' string ids, in a Python list per query.
                lambda: each(lambda q: [ids[i] for i in raw.search(q[None], K)[1][0].tolist()], queries[:single]),
                lambda: each(lambda q: col.search(q, k=K, **options), queries[:single]),
                lambda: each(lambda q: col.search(q, k=K, include=[], **options), queries[:single]),
                rounds=ROUNDS if spec == "flat" else SINGLE_QUERY_ROUNDS,  # (a flat loop takes seconds)
            )
            (t_rawb, (_, labels)), (t_lsb, hits), (t_idsb, _) = best_of(
                lambda: raw.search(queries, K),
                lambda: col.search_batch(queries, k=K, **options),
                lambda: col.search_batch(queries, k=K, include=[], **options),
            )
            found_ls = np.array([[int(h.id) for h in hs] + [-1] * (K - len(hs)) for hs in hits])
            rows.append(
                {
                    "index": col.backend.index.factory,
                    "knob": knob,
                    "recall_latentsearch": recall(found_ls, truth),
                    "recall_faiss": recall(labels, truth),
                    "qps_single_latentsearch": single / t_ls1,
                    "qps_single_faiss": single / t_raw1,
                    "qps_single_faiss_ids": single / t_named1,
                    "qps_single_latentsearch_ids": single / t_ids1,
                    "qps_batch_latentsearch": len(queries) / t_lsb,
                    "qps_batch_faiss": len(queries) / t_rawb,
                    "qps_batch_latentsearch_ids": len(queries) / t_idsb,
                }
            )
            print(
                f"  {col.backend.index.factory:14s} {knob!s:>5}: "
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
            lambda: each(lambda q: index.knn_query(q[None], K), queries[:single]), lambda: index.knn_query(queries, K)
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


SELECTIVITIES = (100, 50, 10, 1, 0.1, 0.01)  # percent of the items a filter matches


def filtered(base: np.ndarray, queries: np.ndarray, home: Path) -> list[dict]:
    """Pre-filtered search (the planner's choice, default breadth) at every selectivity from 100% to
    0.01%: recall@10, results returned, ms, the plan, and queries/s against the same collection's
    unfiltered queries/s (timed alternately); post-filtering (search k×10 then filter) beside it."""
    import faiss

    import latentsearch as ls

    rng = np.random.default_rng(0)
    buckets = rng.integers(0, 10_000, size=len(base))
    col = ls.create("filtered", encoder="precomputed", dim=base.shape[1], metric="l2", index="hnsw", home=home)
    ids, meta = [str(i) for i in range(len(base))], [{"b": int(b)} for b in buckets]
    col.add(ids, vectors=base, metadata=meta)
    # The same items in writes of SMALL_WRITE: each keeps the filter partition in the background.
    grown = ls.create("grown", encoder="precomputed", dim=base.shape[1], metric="l2", index="hnsw", home=home)
    for at in range(0, len(base), SMALL_WRITE):
        grown.add(ids[at : at + SMALL_WRITE], vectors=base[at : at + SMALL_WRITE], metadata=meta[at : at + SMALL_WRITE])
    grown.backend.index.partitioner.wait()
    grown.backend.subindexes.limit = 0
    kept = grown.backend.index.partitioner.current
    kept_by_writes = {} if kept is None else {"lists": kept.lists, "trained": kept.trained, "assigned": kept.assigned}
    qs = queries[:200]
    partitioner = col.backend.index.partitioner
    out = []
    for pct in SELECTIVITIES:
        limit = int(pct * 100)  # buckets below this many ten-thousandths
        subset = np.flatnonzero(buckets < limit)
        where = f"b < {limit}"
        _, truth_pos = faiss.knn(qs, base[subset], min(K, len(subset)))
        truth = [set(subset[row[row >= 0]].tolist()) for row in truth_pos]

        def recall_of(results):  # of the k (or fewer, when fewer match) true neighbours
            return float(np.mean([len({int(h.id) for h in r} & t) / max(len(t), 1) for r, t in zip(results, truth)]))

        def post(q):
            hits = col.search(q, k=K * 10, ef_search=max(64, K * 10))
            return [h for h in hits if h.metadata["b"] < limit][:K]

        # First use: every query as the planner plans it on its own, no sub-index (none is built), and
        # without the filter partition the bulk add built (switched off): as on a collection opened
        # without one (saved by an older version), whose filtered walks have not yet paid for it.
        col.backend.subindexes.limit = 0
        partitioner.enabled = False
        plan = col.search(qs[0], k=K, where=where, explain=True)[0].details.get("plan")
        (t_pre, pre), (t_plain, _), (t_post, posted) = best_of(
            lambda: [col.search(q, k=K, where=where) for q in qs],
            lambda: [col.search(q, k=K) for q in qs],
            lambda: [post(q) for q in qs],
        )
        wanted = min(K, len(subset))
        row = {
            "selectivity_pct": pct,
            "matches": int(len(subset)),
            "plan": plan,
            "recall_prefilter": recall_of(pre),
            "results_prefilter": float(np.mean([len(r) for r in pre])),
            "results_wanted": wanted,
            "ms_prefilter": 1000 * t_pre / len(qs),
            "qps_prefilter": len(qs) / t_pre,
            "qps_unfiltered": len(qs) / t_plain,
            "qps_ratio_vs_unfiltered": t_plain / t_pre,
            "recall_postfilter": recall_of(posted),
            "ms_postfilter": 1000 * t_post / len(qs),
            "results_returned_postfilter": float(np.mean([len(r) for r in posted])),
        }
        # First use on the collection grown by small writes, with the partition they kept.
        grown_plan = grown.search(qs[0], k=K, where=where, explain=True)[0].details.get("plan")
        (t_grown, in_grown), (t_grown_plain, _) = best_of(
            lambda: [grown.search(q, k=K, where=where) for q in qs], lambda: [grown.search(q, k=K) for q in qs]
        )
        row.update(
            partition_grown=kept_by_writes,
            plan_grown=grown_plan,
            recall_grown=recall_of(in_grown),
            results_grown=float(np.mean([len(r) for r in in_grown])),
            ms_grown=1000 * t_grown / len(qs),
            qps_ratio_grown_vs_unfiltered=t_grown_plain / t_grown,
        )
        # First use as the bulk add left the collection: with the filter partition it built (where a
        # collection has none, the walks of the first filter that pays for one build it, counted here).
        partitioner.enabled = True
        if partitioner.current is None:
            row["queries_before_partition"] = repeat_until_partitioned(col, qs, where)
        plan_partitioned = col.search(qs[0], k=K, where=where, explain=True)[0].details.get("plan")
        if plan_partitioned != plan:
            (t_part, part), (t_plain, _) = best_of(
                lambda: [col.search(q, k=K, where=where) for q in qs], lambda: [col.search(q, k=K) for q in qs]
            )
            row.update(
                plan_partitioned=plan_partitioned,
                recall_partitioned=recall_of(part),
                results_partitioned=float(np.mean([len(r) for r in part])),
                ms_partitioned=1000 * t_part / len(qs),
                qps_ratio_partitioned_vs_unfiltered=t_plain / t_part,
            )
        # Repeated: the same filter query after query, as a tenant's or a facet's; its walks pay for a
        # sub-index of its matches once they have cost what one costs (see latentsearch.index.subindex).
        col.backend.subindexes.limit = SUBINDEX_BYTES
        repeated = repeat_until_planned(col, qs, where)
        if repeated:
            row["queries_before_subindex"] = repeated
            row["plan_repeated"] = col.search(qs[0], k=K, where=where, explain=True)[0].details.get("plan")
            (t_rep, rep), (t_plain, _) = best_of(
                lambda: [col.search(q, k=K, where=where) for q in qs], lambda: [col.search(q, k=K) for q in qs]
            )
            row.update(
                recall_repeated=recall_of(rep),
                results_repeated=float(np.mean([len(r) for r in rep])),
                ms_repeated=1000 * t_rep / len(qs),
                qps_ratio_repeated_vs_unfiltered=t_plain / t_rep,
            )
        out.append(row)
        print(
            f"  {pct}%: "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in out[-1].items())
        )
    col.close()
    grown.close()
    return out


def bulk(base: np.ndarray, home: Path) -> dict:
    """Adding precomputed vectors: ``Collection.add`` into an HNSW collection (SQLite + FAISS, saved and
    closed) beside FAISS alone building the same index (same factory and efConstruction) from the same
    array; best of 3 alternating rounds. Then disk bytes per vector of the collection's files beside
    float32, and reopening (open + first search: the lean index reads its vectors from SQLite) beside
    ``faiss.read_index`` of the same index written by FAISS, vectors included, + a search."""
    import faiss

    import latentsearch as ls

    ids = [str(i) for i in range(len(base))]
    rounds = iter(range(BULK_ROUNDS))
    made: list[str] = []

    def add() -> None:
        name = f"bulk-{next(rounds)}"
        col = ls.create(name, encoder="precomputed", dim=base.shape[1], metric="l2", index="hnsw", home=home)
        col.add(ids, vectors=base)
        col.close()
        made.append(name)

    def build() -> faiss.Index:
        raw = faiss.index_factory(base.shape[1], "HNSW32", faiss.METRIC_L2)
        raw.hnsw.efConstruction = 80
        raw.add(base)
        return raw

    (t_faiss, raw), (t_add, _) = best_of(build, add, rounds=BULK_ROUNDS)
    folder = home / made[-1]
    sizes = {f.name: f.stat().st_size for f in folder.iterdir() if f.is_file()}
    fat = home / "bulk-faiss.index"
    faiss.write_index(raw, str(fat))
    del raw

    def reopen() -> None:
        col = ls.open(made[-1], home=home)
        col.search(base[0], k=K)
        col.close()

    def read_fat() -> None:
        faiss.read_index(str(fat)).search(base[:1], K)

    (t_open, _), (t_read, _) = best_of(reopen, read_fat)

    def add_small(keep: bool) -> None:  # the same vectors in writes of SMALL_WRITE
        name = f"small-{keep}-{next(small_rounds)}"
        col = ls.create(name, encoder="precomputed", dim=base.shape[1], metric="l2", index="hnsw", home=home)
        col.backend.index.partitioner.enabled = keep
        for at in range(0, len(base), SMALL_WRITE):
            col.add(ids[at : at + SMALL_WRITE], vectors=base[at : at + SMALL_WRITE])
        col.backend.index.partitioner.wait()  # (its background work counts)
        col.close()
        shutil.rmtree(home / name)

    small_rounds = iter(range(2 * BULK_ROUNDS))
    (t_small_off, _), (t_small_kept, _) = best_of(lambda: add_small(False), lambda: add_small(True), rounds=BULK_ROUNDS)
    result = {
        "vectors": len(base),
        "dim": int(base.shape[1]),
        "seconds_faiss": t_faiss,
        "seconds_latentsearch": t_add,
        "ratio_vs_faiss": t_add / t_faiss,
        "bytes_per_vector_sqlite": sizes.get("collection.sqlite", 0) / len(base),
        "bytes_per_vector_index": sizes.get("index.faiss", 0) / len(base),
        "bytes_per_vector_total": sum(sizes.values()) / len(base),
        "bytes_per_vector_faiss_file": fat.stat().st_size / len(base),
        "float_bytes_per_vector": 4 * int(base.shape[1]),
        "open_seconds_latentsearch": t_open,
        "open_seconds_faiss_read_index": t_read,
        "small_write": SMALL_WRITE,
        "seconds_small_writes_partition_off": t_small_off,
        "seconds_small_writes_partition_kept": t_small_kept,
    }
    print("  " + ", ".join(f"{k} {v:.3g}" for k, v in result.items()))
    return result


def ingest(home: Path, quick: bool) -> dict:
    """Texts per second: `Collection.add` with `minilm` (onnxruntime) beside bare
    `SentenceTransformer.encode` (batch 32), the encoders alone (onnx, PyTorch, int8), and
    EfficientNet-Lite0 images per second on onnxruntime vs PyTorch; best of 3 alternating rounds."""
    import latentsearch as ls
    from latentsearch.encoders import get_encoder
    from latentsearch.encoders.image import EfficientNetLite0Encoder
    from latentsearch.encoders.minilm import MiniLMEncoder
    from latentsearch.workflows.demo import demo_corpus

    texts = [item["text"] for item in demo_corpus()][: 400 if quick else 1000]
    onnx_minilm, torch_minilm, int8 = get_encoder("minilm"), MiniLMEncoder(backend="torch"), get_encoder("minilm-int8")
    for encoder in (onnx_minilm, torch_minilm, int8):
        encoder.encode(texts[:16])  # load the models outside the timings
    bare = torch_minilm.runtime.model
    adds = iter(range(ROUNDS))

    def add() -> None:
        col = ls.create(f"ingest-{next(adds)}", encoder="minilm", index="hnsw", home=home)
        col.add([str(i) for i in range(len(texts))], texts)
        col.close()

    (t_bare, reference), (t_add, _), (t_onnx, onnx_vectors), (t_torch, torch_vectors), (t_int8, int8_vectors) = best_of(
        lambda: bare.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False),
        add,
        lambda: onnx_minilm.encode(texts),
        lambda: torch_minilm.encode(texts),
        lambda: int8.encode(texts),
    )
    agreement = (int8_vectors * torch_vectors).sum(1)
    images = np.random.default_rng(0).uniform(0, 255, (64, 256, 256, 3)).astype(np.uint8)
    from PIL import Image

    pictures = [Image.fromarray(a) for a in images]
    onnx_image, torch_image = get_encoder("efficientnet-lite0"), EfficientNetLite0Encoder(backend="torch")
    onnx_image.encode(pictures[:2]), torch_image.encode(pictures[:2])
    (t_img_onnx, img_onnx), (t_img_torch, img_torch) = best_of(
        lambda: onnx_image.encode(pictures), lambda: torch_image.encode(pictures)
    )
    result = {
        "texts": len(texts),
        "items_per_s_latentsearch_add": len(texts) / t_add,
        "items_per_s_bare_sentence_transformers": len(texts) / t_bare,
        "ratio_add_vs_bare": t_bare / t_add,
        "items_per_s_minilm_onnx": len(texts) / t_onnx,
        "items_per_s_minilm_torch": len(texts) / t_torch,
        "minilm_onnx_max_abs_diff": float(np.abs(onnx_vectors - reference).max()),
        "items_per_s_minilm_int8": len(texts) / t_int8,
        "int8_speedup": t_torch / t_int8,
        "int8_mean_cosine": float(agreement.mean()),
        "int8_min_cosine": float(agreement.min()),
        "images": len(pictures),
        "images_per_s_onnx": len(pictures) / t_img_onnx,
        "images_per_s_torch": len(pictures) / t_img_torch,
        "image_onnx_speedup": t_img_torch / t_img_onnx,
        "image_onnx_max_abs_diff": float(np.abs(img_onnx - img_torch).max()),
    }
    print("  " + ", ".join(f"{k} {v:.3g}" for k, v in result.items()))
    return result


def memory(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, home: Path) -> list[dict]:
    """Bytes per vector (FAISS index file size / n) and recall@10 of each index kind."""
    import latentsearch as ls

    out = []
    for spec in ("flat", "hnsw", "ivfpq", "sq8"):
        col = ls.create(f"mem-{spec}", encoder="precomputed", dim=base.shape[1], metric="l2", index=spec, home=home)
        col.add([str(i) for i in range(len(base))], vectors=base)
        hits = col.search_batch(queries[:500], k=K, ef_search=64, nprobe=16)
        found = np.array([[int(h.id) for h in hs] + [-1] * (K - len(hs)) for hs in hits])
        factory = col.backend.index.factory
        col.close()  # (closed: SQLite's write-ahead log is folded into the file, as it rests on disk)
        size = (col.path / "index.faiss").stat().st_size
        total = sum(f.stat().st_size for f in col.path.iterdir() if f.is_file())
        out.append(
            {
                "index": factory,
                "bytes_per_vector": size / len(base),
                "collection_bytes_per_vector": total / len(base),
                "float_bytes_per_vector": 4 * base.shape[1],
                "recall@10": recall(found, truth[:500]),
            }
        )
        print(f"  {out[-1]}")
    return out


def _texts_collection(home: Path, n: int, dim: int = 384) -> None:
    """A `minilm` collection of n short texts; their vectors are random unit vectors, since
    start-up does not depend on what they mean and encoding 100,000 texts takes 15 minutes here."""
    import latentsearch as ls

    rng = np.random.default_rng(0)
    words = np.array("reset password billing invoice error sync service settings account email card login".split())
    col = ls.create("startup", encoder="minilm", index="hnsw", home=home)
    for start in range(0, n, 20_000):
        stop = min(n, start + 20_000)
        texts = [" ".join(rng.choice(words, 8)) + f" document {i}" for i in range(start, stop)]
        vectors = rng.normal(size=(stop - start, dim)).astype(np.float32)
        col.add([str(i) for i in range(start, stop)], texts, vectors=vectors)
    col.close()


def _run(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    return timed(lambda: subprocess.run(command, capture_output=True, text=True))


def startup(home: Path, n: int = 100_000) -> dict:
    """Seconds from invocation to printed result of `latentsearch search` on a 100,000-item `minilm`
    collection, by text and by vector, beside `latentsearch --help` and `import sentence_transformers`
    (what a text query cost before the ONNX path); best of 3 alternating rounds, fresh processes."""
    _texts_collection(home, n)
    cli = [str(Path(sys.executable).with_name("latentsearch"))]  # the console script a user runs
    if not Path(cli[0]).exists():
        cli = [sys.executable, "-m", "latentsearch.cli"]
    np.save(home / "q.npy", np.random.default_rng(1).normal(size=384).astype(np.float32))
    search = [*cli, "search", "startup", "--home", str(home), "--json", "-k", "5"]
    warm = subprocess.run([*search, "warm the page cache and the model cache"], capture_output=True, text=True)
    assert warm.returncode == 0, warm.stderr
    rounds = best_of(
        lambda: _run([*search, "how do I reset my password"]),
        lambda: _run([*search, "--vector", str(home / "q.npy")]),
        lambda: _run([*cli, "--help"]),
        lambda: _run([sys.executable, "-c", "import sentence_transformers"]),
    )
    (t_text, (_, text_run)), (t_vector, (_, vector_run)), (t_help, _), (t_st, _) = rounds
    probe = (
        "import sys; from typer.testing import CliRunner; from latentsearch.cli import app; "
        f"r = CliRunner().invoke(app, ['search', 'startup', 'reset password', '--home', {str(home)!r}]); "
        "print(r.exit_code == 0, 'torch' in sys.modules)"
    )
    text_ok, text_imports_torch = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True
    ).stdout.split()
    help_probe = "import sys, latentsearch.cli as c; from typer.testing import CliRunner; CliRunner().invoke(c.app, ['--help']); print('torch' in sys.modules)"
    help_imports_torch = subprocess.run(
        [sys.executable, "-c", help_probe], capture_output=True, text=True
    ).stdout.strip()
    out = {
        "items": n,
        "text_search_seconds": t_text,
        "search_seconds": t_vector,
        "help_seconds": t_help,
        "import_sentence_transformers_seconds": t_st,
        "text_vs_help": t_text / t_help,
        "text_search_imports_torch": text_imports_torch == "True",
        "help_imports_torch": help_imports_torch == "True",
        "search_ok": text_run.returncode == 0 and vector_run.returncode == 0 and text_ok == "True",
    }
    out["server"] = server_first_request(home, cli)
    print(f"  {out}")
    return out


def server_first_request(home: Path, cli: list[str], requests: int = 20) -> dict:
    """`latentsearch serve` on the start-up collection: seconds until it answers, then the latency of
    the first text search and the median of the next ones (the first used to load PyTorch)."""
    import json
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen(
        [*cli, "serve", "--home", str(home), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 120:
                    server.kill()  # so that its stderr ends and can be read
                    raise RuntimeError(f"the server did not start: {server.communicate()[1].decode()[-500:]}") from None
                time.sleep(0.05)
        ready = time.perf_counter() - started

        def ask(i: int) -> float:
            body = json.dumps({"query": f"how do I reset my password {i}", "k": 10}).encode()
            request = urllib.request.Request(
                f"{base}/api/collections/startup/search", body, {"Content-Type": "application/json"}
            )
            return timed(lambda: urllib.request.urlopen(request, timeout=60).read())[0]

        first = ask(0)
        rest = sorted(ask(i) for i in range(1, requests))
    finally:
        server.terminate()
        server.wait(10)
    return {"ready_seconds": ready, "first_ms": first * 1000, "median_ms": rest[len(rest) // 2] * 1000}


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


SECTIONS = ("ann", "filtered", "bulk", "ingest", "memory", "peers", "startup")


def main() -> None:
    import json

    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 base vectors and 1,000 queries")
    parser.add_argument(
        "--only",
        help=f"comma-separated sections to rerun ({', '.join(SECTIONS)}); the others keep their saved results",
    )
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else set(SECTIONS)
    if chosen - set(SECTIONS):
        parser.error(f"unknown sections {sorted(chosen - set(SECTIONS))}: choose from {', '.join(SECTIONS)}")
    saved = report.RESULTS / "performance.json"
    results: dict = json.loads(saved.read_text()) if args.only and saved.exists() else {}
    earlier = results.pop("machine", {}).get("date")
    # The day each section last ran: sections kept from an earlier run keep their own date.
    dates = results.setdefault("dates", {})
    for section in SECTIONS:
        dates.setdefault(section, earlier) if section not in chosen else dates.update(
            {section: time.strftime("%Y-%m-%d")}
        )
    n_base, n_queries = (20_000, 1_000) if args.quick else (60_000, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if chosen & {"ann", "filtered", "bulk", "memory", "peers"}:
            data = fashion_mnist()
            base = data["train_images"].reshape(60_000, -1)[:n_base].astype(np.float32)
            queries = data["test_images"].reshape(10_000, -1)[:n_queries].astype(np.float32)
            print(f"Fashion-MNIST: {n_base:,} base, {n_queries:,} queries; exact ground truth")
            _, truth = faiss.knn(queries, base, K)
            results.update({"base": n_base, "queries": n_queries, "quick": args.quick})
        if "ann" in chosen:
            print("ANN:")
            results["ann"] = ann(base, queries, truth, home, min(len(queries), 1000))
        if "filtered" in chosen:
            print("filtered:")
            results["filtered"] = filtered(base, queries, home)
        if "bulk" in chosen:
            print("bulk ingest of vectors:")
            results["bulk"] = bulk(base, home)
        if "ingest" in chosen:
            print("ingest:")
            results["ingest"] = ingest(home, args.quick)
        if "memory" in chosen:
            print("memory:")
            results["memory"] = memory(base, queries, truth, home)
        if "peers" in chosen:
            print("peers:")
            results["peers"] = peers.compare(base, queries, home, K)
        if "startup" in chosen:
            print("start-up:")
            results["startup"] = startup(home)
    if "ann" in chosen:
        curve(results["ann"], report.RESULTS / "ann.png")
    path = report.save("performance", results)
    update_readme(results)
    print(f"saved {path}")


def _dates(results: dict, machine: dict) -> str:
    """When the figures were measured: one date, or each section's when reruns (--only) differ."""
    dates = {k: v for k, v in results.get("dates", {}).items() if v}
    if len(set(dates.values())) <= 1:
        return machine["date"]
    by_day: dict[str, list[str]] = {}
    for section, day in dates.items():
        by_day.setdefault(day, []).append(section)
    return "; ".join(f"{', '.join(sections)} on {day}" for day, sections in sorted(by_day.items()))


def _peers_table(rows: list[dict]) -> str:
    """The embedded stores side by side: recall@10 beside each queries/s, since speed means little
    without the recall it was bought at."""

    def qps(r: dict, label: str) -> str:
        value = r[f"qps_{label}"]
        shown = f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
        return f"{shown} ({r[f'recall_{label}']:.3f})"

    filters = [f"filtered_{pct}pct" for pct in peers.FILTER_PERCENTS]
    table = report.markdown_table(
        ["store", "ingest vectors/s", "disk bytes / vector", "reopen s", "q/s (recall@10)"]
        + [f"q/s, {pct}% filter (recall)" for pct in peers.FILTER_PERCENTS],
        [
            [
                r["store"],
                f"{r['ingest_vectors_per_s']:,.0f}",
                f"{r['disk_bytes_per_vector']:,.0f}",
                f"{r['reopen_seconds']:.2f}",
                qps(r, "unfiltered"),
                *(qps(r, label) for label in filters),
            ]
            for r in rows
        ],
    )
    slow = [r for r in rows if r["queries"] < max(x["queries"] for x in rows)]
    return (
        f"\n\n**Beside the embedded stores** (`benchmarks/peers.py`: the same {rows[0]['vectors']:,} Fashion-MNIST "
        "vectors, a numeric field per item for the filters, euclidean distance, each store with its own defaults and "
        "returning ids and the field; one query at a time, best of 3 rounds; ingest includes building the index; "
        "disk once closed; reopen is open + first search"
        + (
            f"; {', '.join(r['store'] for r in slow)} timed on {slow[0]['queries']} queries in one round, being far slower"
            if slow
            else ""
        )
        + "):\n\n"
        + table
    )


def repeat_until_partitioned(col, qs: np.ndarray, where: dict | str, rounds: int = 60) -> int:
    """Search ``qs`` under ``where`` round after round until the collection's filter partition is built:
    how many queries that took (0: none is, this filter's walks count towards none)."""
    partitioner = col.backend.index.partitioner
    for done in range(rounds):
        for q in qs:
            col.search(q, k=K, where=where)
        partitioner.wait()
        if partitioner.current is not None:
            return (done + 1) * len(qs)
    return 0


def repeat_until_planned(col, qs: np.ndarray, where: dict | str, rounds: int = 60) -> int:
    """Search ``qs`` under ``where`` round after round until a sub-index of the matches answers: how
    many queries that took (0: none is built for this filter, its plan is another)."""
    for done in range(rounds):
        for q in qs:
            col.search(q, k=K, where=where)
        col.backend.subindexes.wait()
        if "sub-index" in col.search(qs[0], k=K, where=where, explain=True)[0].details.get("plan", ""):
            return (done + 1) * len(qs)
    return 0


def update_readme(results: dict) -> None:
    """The README tables of this benchmark, with each target's ratio."""
    lines = []

    def against(qps: float | None, faiss_qps: float) -> str:
        return "–" if qps is None else f"{qps:.0f} ({qps / faiss_qps:.2f}×)"

    rows = [
        [
            r["index"],
            r["knob"],
            r["recall_latentsearch"],
            f"{r['qps_single_faiss']:.0f}",
            against(r.get("qps_single_faiss_ids"), r["qps_single_faiss"]),
            against(r.get("qps_single_latentsearch_ids"), r["qps_single_faiss"]),
            against(r["qps_single_latentsearch"], r["qps_single_faiss"]),
            f"{r['qps_batch_faiss']:.0f}",
            against(r.get("qps_batch_latentsearch_ids"), r["qps_batch_faiss"]),
            against(r["qps_batch_latentsearch"], r["qps_batch_faiss"]),
        ]
        for r in results["ann"]
        if "recall_latentsearch" in r
    ]
    lines.append(
        "**ANN** (recall@10; queries/s one at a time and in one batch, best of 3 rounds (9 one at a time on "
        "HNSW and IVF) alternating with the "
        "baseline, and in brackets latentsearch ÷ raw FAISS with the same index. *ids*: `include=[]`, ids and "
        "scores only (targets 0.9× at ef 64, 0.8× at ef 16); *hits*: the default hits with text and metadata "
        "(target 0.75× at ef 64). *FAISS + ids*: the raw search plus the list of string ids a Python caller makes of "
        "its positions, what a bare FAISS user pays to get ids):\n\n"
    )
    lines.append(
        report.markdown_table(
            [
                "index",
                "ef / nprobe",
                "recall@10",
                "FAISS q/s",
                "FAISS + ids q/s",
                "ls ids q/s",
                "ls hits q/s",
                "FAISS batch q/s",
                "ls ids batch",
                "ls hits batch",
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
        "\n\n![recall vs queries per second](benchmarks/results/ann.png)\n\n**Filtered search** (HNSW; the plan is "
        "the filter planner's, at the default breadth; q/s against the same collection unfiltered, timed alternately. "
        "*First use* is a filter's first queries: *small writes*, on the collection grown by writes of "
        f"{SMALL_WRITE:,} vectors, with the filter partition those writes kept in the background"
        + "".join(
            f" ({p['lists']} lists, their centroids trained on the first {p['trained']:,} vectors, "
            f"{p['assigned']:,} assigned to them)"
            for p in (r.get("partition_grown") for r in results["filtered"][:1])
            if isinstance(p, dict) and p
        )
        + "; *bulk-loaded*, on the collection as one `add` of its vectors left it, with the filter partition that "
        "write built (`compact` leaves the same); *no partition*, on a collection that has none (one opened without "
        "its partition file, saved by an older version), before its filtered walks pay for one"
        + "".join(
            f" (the walks of the {r['selectivity_pct']}% filter built it after {r['queries_before_partition']:,} "
            "queries, those of the wider filters before it counting towards none)"
            for r in results["filtered"]
            if r.get("queries_before_partition")
        )
        + ". "
        "*Repeated*: the same filter again and again, once its walks have paid for a sub-index of its matches "
        "(the HNSW sub-index plan); *same*: the plan and figures of the *no partition* columns; "
        "post-filtering searches k × 10 then filters):\n\n"
    )

    def plan_columns(r: dict, suffix: str, plan: str) -> list:
        if f"recall_{suffix}" not in r:
            return ["same", "", "", ""]
        return [
            (r.get(plan) or "–").split(" over ")[0].rstrip(","),
            r[f"recall_{suffix}"],
            f"{r[f'ms_{suffix}']:.2f}",
            f"{r[f'qps_ratio_{suffix}_vs_unfiltered']:.2f}×",
        ]

    lines.append(
        report.markdown_table(
            ["selectivity", "matches", "small writes: plan", "recall", "results (of k)", "ms", "q/s vs unfiltered"]
            + ["bulk-loaded: plan", "recall", "ms", "q/s vs unfiltered"]
            + ["no partition: plan", "recall", "ms", "q/s vs unfiltered"]
            + ["repeated: recall", "ms", "q/s vs unfiltered"]
            + ["recall post-filter", "ms", "results post-filter"],
            [
                [
                    f"{r['selectivity_pct']}%",
                    f"{r.get('matches', 0):,}",
                    *plan_columns(r, "grown", "plan_grown")[:2],
                    f"{r.get('results_grown', 0):.1f} of {r.get('results_wanted', 10)}",
                    *plan_columns(r, "grown", "plan_grown")[2:],
                    *plan_columns(r, "partitioned", "plan_partitioned"),
                    (r.get("plan") or "–").split(" over ")[0],
                    r["recall_prefilter"],
                    f"{r['ms_prefilter']:.2f}",
                    f"{r.get('qps_ratio_vs_unfiltered', 0):.2f}×",
                    *(
                        [
                            r["recall_repeated"],
                            f"{r['ms_repeated']:.2f}",
                            f"{r['qps_ratio_repeated_vs_unfiltered']:.2f}×",
                        ]
                        if "recall_repeated" in r
                        else ["same", "", ""]
                    ),
                    r["recall_postfilter"],
                    f"{r['ms_postfilter']:.2f}",
                    f"{r['results_returned_postfilter']:.1f}",
                ]
                for r in results["filtered"]
            ],
        )
    )
    b = results.get("bulk")
    if b:
        lines.append(
            f"\n\n**Bulk ingest** ({b['vectors']:,} precomputed {b['dim']}-d vectors into an HNSW collection, saved and "
            f"closed, beside FAISS alone building the same `HNSW32` from the same array; best of {BULK_ROUNDS} alternating "
            "rounds): "
            f"{b['seconds_latentsearch']:.1f} s vs {b['seconds_faiss']:.1f} s, {b['ratio_vs_faiss']:.2f}× (target ≤ 1.3×). "
            f"On disk {b['bytes_per_vector_total']:,.0f} bytes per vector ({b['bytes_per_vector_sqlite']:,.0f} SQLite, "
            f"{b['bytes_per_vector_index']:,.0f} lean index), {b['bytes_per_vector_total'] / b['float_bytes_per_vector']:.2f}× "
            f"the {b['float_bytes_per_vector']:,} bytes of float32 (target ≤ 1.5×; FAISS's own file of the same index, "
            f"vectors included: {b['bytes_per_vector_faiss_file']:,.0f}). Reopening (open, first search): "
            f"{b['open_seconds_latentsearch']:.2f} s, the vectors read from SQLite, vs `faiss.read_index` of FAISS's file "
            f"and a search {b['open_seconds_faiss_read_index']:.2f} s."
            + (
                f" The same vectors in writes of {b['small_write']:,}: {b['seconds_small_writes_partition_kept']:.1f} s "
                "with the filter partition kept by them in the background (built at 10,000 vectors, its tail "
                "assigned to its lists at each sixteenth more, built anew at fourfold), "
                f"{b['seconds_small_writes_partition_off']:.1f} s without it "
                f"({b['seconds_small_writes_partition_kept'] / b['seconds_small_writes_partition_off']:.2f}×)."
                if "seconds_small_writes_partition_kept" in b
                else ""
            )
        )
    i = results["ingest"]
    lines.append(
        f"\n\n**Ingest** ({i['texts']:,} Python-docs texts; best of 3 alternating rounds): `Collection.add` with "
        f"`minilm` {i['items_per_s_latentsearch_add']:.0f} items/s (encode + SQLite + HNSW) vs bare "
        f"`SentenceTransformer.encode` (batch 32) {i['items_per_s_bare_sentence_transformers']:.0f} items/s: "
        f"{i['ratio_add_vs_bare']:.2f}× (target ≥ 1×). Encoders alone: `minilm` on onnxruntime "
        f"{i['items_per_s_minilm_onnx']:.0f} texts/s (vectors within {i['minilm_onnx_max_abs_diff']:.1g} of "
        f"sentence-transformers'), on PyTorch {i['items_per_s_minilm_torch']:.0f}; `minilm-int8` "
        f"{i['items_per_s_minilm_int8']:.0f}: {i['int8_speedup']:.2f}× PyTorch (target 2×), mean cosine agreement "
        f"{i['int8_mean_cosine']:.4f} (min {i['int8_min_cosine']:.4f}). `efficientnet-lite0` on "
        f"{i['images']} images: onnxruntime {i['images_per_s_onnx']:.1f} images/s vs PyTorch "
        f"{i['images_per_s_torch']:.1f}: {i['image_onnx_speedup']:.1f}× (features within "
        f"{i['image_onnx_max_abs_diff']:.1g}).\n\n**Memory** (bytes per vector of `index.faiss` (HNSW and flat: lean, no vectors) and of the whole collection folder, SQLite included; recall@10 with re-ranking on the stored floats):\n\n"
    )
    lines.append(
        report.markdown_table(
            ["index", "index.faiss bytes / vector", "collection bytes / vector", "float32 bytes", "recall@10"],
            [
                [
                    m["index"],
                    f"{m['bytes_per_vector']:.0f}",
                    f"{m['collection_bytes_per_vector']:.0f}" if "collection_bytes_per_vector" in m else "–",
                    m["float_bytes_per_vector"],
                    m["recall@10"],
                ]
                for m in results["memory"]
            ],
        )
    )
    if results.get("peers"):
        lines.append(_peers_table(results["peers"]))
    s = results["startup"]
    server = s["server"]
    machine = results.get("machine", report.machine())
    lines.append(
        f"\n\n**Start-up** (fresh processes on a {s['items']:,}-item `minilm` HNSW collection, invocation to printed "
        f'result, best of 3 alternating rounds): `latentsearch search NAME "text"` {s["text_search_seconds"]:.2f}s '
        f"(target ≤ 1.0 s and ≤ 3× `--help`: {s['text_vs_help']:.1f}×; imports torch: "
        f"{'yes' if s['text_search_imports_torch'] else 'no'}); by vector {s['search_seconds']:.2f}s; "
        f"`latentsearch --help` {s['help_seconds']:.2f}s (imports torch: {'yes' if s['help_imports_torch'] else 'no'}); "
        f'`python -c "import sentence_transformers"` alone {s["import_sentence_transformers_seconds"]:.2f}s, '
        f"which every text query paid before the ONNX path. `latentsearch serve`: answers after "
        f"{server['ready_seconds']:.1f}s (models loaded), first text search {server['first_ms']:.0f} ms, later ones "
        f"{server['median_ms']:.0f} ms (median).\n\n`python -m benchmarks.performance{' --quick' if results['quick'] else ''}` "
        f"({results['base']:,} base vectors, {results['queries']:,} queries); {machine['cpu_count']} CPU cores, {_dates(results, machine)}."
    )
    report.update_readme("performance", "".join(lines))


if __name__ == "__main__":
    main()
