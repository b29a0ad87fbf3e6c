"""Transfer learning benchmark: does ``tune-encoder`` make vector search better on a collection's own language?

On three labelled sets of ``benchmarks/retrieval.py`` (Reuters-21578 corn+grain with its 20 topical
queries, the Python docs with their 28 queries, WordNet definitions with 200 lemma and example
queries), vector search is measured (MRR@10, recall@10) with

- the base encoder (MiniLM);
- the encoder tuned on pseudo-pairs from the collection alone (``col.tune_encoder(out)``, defaults),
  the collection re-encoded with it (``reencode``); the evaluation queries are never trained on;
- on WordNet, which has enough of them, the encoder tuned on labelled pairs: half of the 200 queries
  (by synset) are the training pairs, the other half is what every row is measured on.

When tuning keeps the base model (its own held-out pairs ranked no better), the tuned row is the
base encoder's. Tuning time is the whole ``tune_encoder`` call on 2 cores (its held-out measuring
included); re-encoding time is reported beside it.

    python -m benchmarks.tune [--rebuild]
"""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

from benchmarks import report
from benchmarks.datasets import cache_dir
from benchmarks.retrieval import datasets

SETS = ("Reuters-21578 corn+grain", "Python docs", "WordNet definitions")
LABELLED = {"WordNet definitions"}  # sets with enough labelled queries to train on half of them


def measure(col, queries: list[tuple[str, set[str]]]) -> dict[str, float]:
    """MRR@10 and recall@10 of vector search."""
    from latentsearch.search.tuning import recall_at, reciprocal_rank

    rr, recall = [], []
    for query, relevant in queries:
        ranked = [hit.id for hit in col.search(query, k=10, mode="vector", include=[])]
        rr.append(reciprocal_rank(ranked, relevant))
        recall.append(recall_at(ranked, relevant, 10))
    return {"mrr@10": sum(rr) / len(rr), "recall@10": sum(recall) / len(recall)}


def portable(value: Any) -> Any:
    """``value`` with this machine's cache folder named as ``benchmarks/.cache`` (saved results travel)."""
    if isinstance(value, str):
        return value.replace(str(cache_dir()), "benchmarks/.cache")
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    return value


def tuned_run(db, col, name: str, label: str, queries, pairs=None) -> dict[str, Any]:
    """Tune ``col``'s encoder (on pseudo-pairs, or ``pairs``), re-encode it and measure ``queries``."""
    from latentsearch.workflows.reencode import reencode

    out = cache_dir() / "models" / f"{name}-{label}"
    started = time.perf_counter()
    tuning = col.tune_encoder(out, pairs, overwrite=True)
    seconds = time.perf_counter() - started
    print(f"  {label}: {tuning.message()} ({seconds:.0f}s)")
    row: dict[str, Any] = {"tuning": portable(tuning.to_dict()), "tune_seconds": round(seconds, 1), "kept": tuning.kept}
    if not tuning.kept:
        shutil.rmtree(out, ignore_errors=True)
        return row
    target = f"{name}-{label}"
    if db.exists(target):
        db.drop(target)
    started = time.perf_counter()
    reencode(db, name, f"st:{out}", into=target)
    row["reencode_seconds"] = round(time.perf_counter() - started, 1)
    with db.open(target) as tuned:
        row["measured"] = measure(tuned, queries)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="re-encode the cached base collections")
    args = parser.parse_args()
    import latentsearch as ls

    db = ls.connect(cache_dir() / "home")
    results: dict[str, Any] = {"sets": {}}
    for set_name, col, queries in datasets(args.rebuild):
        if set_name not in SETS:
            col.close()
            continue
        name = col.name
        evaluation, pairs = queries, None
        if set_name in LABELLED:  # train on half the synsets' queries, measure on the other half
            ids = sorted({i for _, relevant in queries for i in relevant})
            train_ids = set(ids[::2])
            pairs = [{"query": q, "relevant": sorted(r)} for q, r in queries if r <= train_ids]
            evaluation = [(q, r) for q, r in queries if not r & train_ids]
        print(f"{set_name}: {col.count():,} items, {len(evaluation)} evaluation queries")
        entry: dict[str, Any] = {"items": col.count(), "queries": len(evaluation), "base": measure(col, evaluation)}
        entry["pseudo"] = tuned_run(db, col, name, "pseudo", evaluation)
        if pairs is not None:
            entry["labelled_pairs"] = len(pairs)
            entry["labelled"] = tuned_run(db, col, name, "labelled", evaluation, pairs)
        col.close()
        results["sets"][set_name] = entry
        report.save("tune", results)
        if set(results["sets"]) == set(SETS):
            break  # the long documents that come next are not one of these sets
    write_table(results)


def write_table(results: dict[str, Any]) -> None:
    """The README table, from the saved results."""

    def figures(entry: dict, key: str) -> list[Any]:
        run = entry.get(key)
        if run is None:
            return ["–", "–", "–", "–"]
        measured = run.get("measured", entry["base"])  # the base model kept: its figures
        held = run["tuning"]
        kept = "yes" if run["kept"] else "no (base kept)"
        heldout = f"{held['before']['mrr@10']:.3f} → {held['after']['mrr@10']:.3f}"
        return [measured["mrr@10"], measured["recall@10"], f"{run['tune_seconds']:.0f}", f"{kept}; {heldout}"]

    rows = []
    for set_name, entry in results["sets"].items():
        base = entry["base"]
        rows.append(
            [set_name, entry["queries"], base["mrr@10"], base["recall@10"]]
            + figures(entry, "pseudo")
            + figures(entry, "labelled")
        )
    header = [
        "data",
        "queries",
        "base MRR@10",
        "base recall@10",
        "pseudo-pairs MRR@10",
        "pseudo-pairs recall@10",
        "pseudo-pairs tuning s",
        "pseudo-pairs kept? (its held-out MRR@10)",
        "labelled MRR@10",
        "labelled recall@10",
        "labelled tuning s",
        "labelled kept? (its held-out MRR@10)",
    ]
    table = report.markdown_table(header, rows)
    date = results.get("machine", {}).get("date", time.strftime("%Y-%m-%d"))
    table += (
        "\n\nVector search, the evaluation queries never trained on; tuning with the defaults (at most 2,000 "
        "pairs, 200 steps of 16, learning rate 2e-5, 20% held out). `python -m benchmarks.tune`; "
        f"2 CPU cores, {date}."
    )
    report.update_readme("tune", table)
    print(table)


if __name__ == "__main__":
    main()
