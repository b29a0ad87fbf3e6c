"""Outlier detection quality and speed against PyOD and scikit-learn, on real labelled data.

Data (see benchmarks/datasets.py), every feature standardised (z-score), all methods on the same input,
unsupervised on the whole set (fit, then score the fitted items):

- Shuttle (ODDS form, from the river wheel): 49,097 × 9, 3,511 anomalies (7%).
- WBC: scikit-learn's bundled Wisconsin breast cancer data in the ODDS "wbc" construction: all 357
  benign cases plus 21 malignant ones drawn with a fixed seed (5.6% anomalies), 30 features.

Reported per method: ROC-AUC, average precision, and wall time of fit + scoring. PyOD's KNN (its
defaults: 5 neighbours, "largest") and scikit-learn's IsolationForest (its defaults) run in the same
process on the same arrays.

    python -m benchmarks.outliers

Writes benchmarks/results/outliers.json and the README table between the bench:outliers markers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from benchmarks import report
from benchmarks.datasets import shuttle


def wbc(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Breast cancer in the ODDS wbc construction: 357 benign + 21 malignant (fixed seed)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    benign = np.flatnonzero(data.target == 1)
    malignant = np.random.default_rng(seed).choice(np.flatnonzero(data.target == 0), size=21, replace=False)
    rows = np.concatenate([benign, malignant])
    return data.data[rows], np.r_[np.zeros(len(benign), int), np.ones(len(malignant), int)]


def methods() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> function(X) returning anomaly scores (higher is more anomalous) of X's rows."""
    from pyod.models.knn import KNN
    from sklearn.ensemble import IsolationForest

    from latentsearch.analysis.outliers import make_scorer

    def ours(method: str, **options) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: make_scorer(method, **options).fit(x).train_scores_

    return {
        "latentsearch knn (k=5)": ours("knn", k=5),
        "latentsearch knn (k=10)": ours("knn", k=10),
        "latentsearch lof (k=10)": ours("lof", k=10),
        "latentsearch iforest": ours("iforest"),
        "latentsearch ensemble": ours("ensemble", k=10),
        "PyOD KNN (k=5)": lambda x: KNN(n_neighbors=5).fit(x).decision_scores_,
        "scikit-learn IsolationForest": lambda x: -IsolationForest(random_state=0).fit(x).score_samples(x),
    }


def main() -> None:
    sets = {"Shuttle": shuttle(), "WBC": wbc()}
    results: dict[str, dict] = {}
    for name, (x, y) in sets.items():
        x = StandardScaler().fit_transform(x).astype(np.float32)
        print(f"{name}: {x.shape[0]:,} × {x.shape[1]}, {int(y.sum()):,} anomalies")
        results[name] = {"rows": int(x.shape[0]), "features": int(x.shape[1]), "anomalies": int(y.sum()), "methods": {}}
        for method, run in methods().items():
            start = time.perf_counter()
            scores = run(x)
            seconds = time.perf_counter() - start
            row = {
                "roc_auc": float(roc_auc_score(y, scores)),
                "average_precision": float(average_precision_score(y, scores)),
                "seconds": seconds,
            }
            results[name]["methods"][method] = row
            print(f"  {method:30s} ROC-AUC {row['roc_auc']:.3f}  AP {row['average_precision']:.3f}  {seconds:.2f}s")
    path = report.save("outliers", {"datasets": results})
    rows = [
        [name, method, r["roc_auc"], r["average_precision"], f"{r['seconds']:.2f}"]
        for name, data in results.items()
        for method, r in data["methods"].items()
    ]
    table = report.markdown_table(["data", "method", "ROC-AUC", "avg precision", "seconds (fit + score)"], rows)
    machine = report.machine()
    note = f"\n\n`python -m benchmarks.outliers`; {machine['cpu_count']} CPU cores, {machine['date']}."
    updated = report.update_readme("outliers", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))


if __name__ == "__main__":
    main()
