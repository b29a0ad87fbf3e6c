"""Metadata filters on a large collection, with and without a field index, in the same run.

A filter's first use reads every item's JSON metadata in SQLite (later uses hit the per-collection
cache until the next write). ``Collection.index_field`` adds an SQLite expression index on a field,
so the same filter becomes an index lookup. This measures, on synthetic metadata (tenant: 100
values, year: 30 values, lang: 3 values):

- the time of a filter's first use (the SQL that finds its matching items), median of 5 runs,
  scanning (baseline) and with the field indexed;
- a whole filtered search on a fresh handle (filter + FAISS + reading the hits);
- what the index costs: seconds to build, bytes added to the database.

    python -m benchmarks.filters [--quick]      # 1,000,000 items; --quick: 200,000

Writes benchmarks/results/filters.json and the README table between the bench:filters markers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report

DIM = 8
FILTERS = {
    "tenant = 't7' (1%)": ("tenant", 'tenant = "t7"'),
    "year >= 2017 (10%)": ("year", "year >= 2017"),
    "lang in ('de', 'fr') (67%)": ("lang", 'lang in ("de", "fr")'),
}


def populate(home: Path, n: int):
    import latentsearch as ls

    col = ls.create("facets", encoder="precomputed", dim=DIM, index="flat", home=home)
    rng = np.random.default_rng(0)
    batch = 50_000
    for start in range(0, n, batch):
        idx = range(start, min(start + batch, n))
        col.add(
            [f"v{i}" for i in idx],
            vectors=rng.normal(size=(len(idx), DIM)).astype(np.float32),
            metadata=[{"tenant": f"t{i % 100}", "year": 1990 + i % 30, "lang": ("en", "de", "fr")[i % 3]} for i in idx],
        )
    return col


def database_bytes(col) -> int:
    """The database's logical size, pages still in the write-ahead log included (a file's size is not)."""
    conn = col.backend.store.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    return pages * conn.execute("PRAGMA page_size").fetchone()[0]


def first_use_ms(col, where: str, repeats: int = 5) -> tuple[float, int]:
    """Median time of the SQL that finds a filter's items (what a filter's first use costs)."""
    from latentsearch.storage.filters import compile_filter

    sql, params = compile_filter(where)
    times, found = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        found = len(col.backend.store.rowids_matching(sql, params))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, found


def search_ms(home: Path, where: str, query: np.ndarray) -> float:
    """A filtered search on a freshly opened collection (index loaded beforehand): no cached filter."""
    import latentsearch as ls

    col = ls.open("facets", home=home)
    col.backend.index  # noqa: B018 - load FAISS outside the timing
    start = time.perf_counter()
    hits = col.search(query, k=10, where=where)
    elapsed = time.perf_counter() - start
    assert len(hits) == 10
    col.close()
    return elapsed * 1000


WRITE_BATCH = 50_000


def write_cost(home: Path, n: int) -> dict[str, float]:
    """Seconds to add WRITE_BATCH more items (5,000 a call) without field indexes, then with all three."""
    import latentsearch as ls

    col = ls.open("facets", home=home)
    rng = np.random.default_rng(1)

    def add(offset: int) -> float:
        start = time.perf_counter()
        for first in range(offset, offset + WRITE_BATCH, 5_000):
            idx = range(first, first + 5_000)
            col.add(
                [f"w{i}" for i in idx],
                vectors=rng.normal(size=(len(idx), DIM)).astype(np.float32),
                metadata=[{"tenant": f"t{i % 100}", "year": 1990 + i % 30, "lang": "en"} for i in idx],
            )
        return time.perf_counter() - start

    plain = add(n)
    for field, _ in FILTERS.values():
        col.index_field(field)
    indexed = add(n + WRITE_BATCH)
    col.close()
    return {"plain_s": plain, "indexed_s": indexed}


def main() -> None:
    import latentsearch as ls

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 items instead of 1,000,000")
    args = parser.parse_args()
    n = 200_000 if args.quick else 1_000_000
    query = np.ones(DIM, dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        start = time.perf_counter()
        col = populate(home, n)
        print(f"{n:,} items added in {time.perf_counter() - start:.0f}s")
        col.close()
        for label, (field, where) in FILTERS.items():
            col = ls.open("facets", home=home)
            scan_ms, matches = first_use_ms(col, where)
            scan_search = search_ms(home, where, query)
            size = database_bytes(col)
            start = time.perf_counter()
            col.index_field(field)
            build_s = time.perf_counter() - start
            added = database_bytes(col) - size
            indexed_ms, indexed_matches = first_use_ms(col, where)
            assert indexed_matches == matches
            indexed_search = search_ms(home, where, query)
            col.drop_field_index(field)  # each filter is measured against a scan, not other indexes
            col.close()
            rows.append(
                {
                    "filter": label,
                    "matches": matches,
                    "scan_ms": scan_ms,
                    "indexed_ms": indexed_ms,
                    "speedup": scan_ms / indexed_ms,
                    "search_scan_ms": scan_search,
                    "search_indexed_ms": indexed_search,
                    "index_build_s": build_s,
                    "index_bytes_per_item": added / n,
                }
            )
            print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()))
        write = write_cost(home, n)
        print(
            f"  adding {WRITE_BATCH:,} items: {write['plain_s']:.2f}s plain, {write['indexed_s']:.2f}s with 3 field indexes"
        )
    results = {"items": n, "quick": args.quick, "filters": rows, "write": write}
    path = report.save("filters", results)
    table = report.markdown_table(
        [
            "filter",
            "matches",
            "first use, scan ms",
            "indexed ms",
            "speed-up",
            "search scan ms",
            "search indexed ms",
            "index build s",
            "index bytes / item",
        ],
        [
            [
                r["filter"],
                f"{r['matches']:,}",
                f"{r['scan_ms']:.1f}",
                f"{r['indexed_ms']:.1f}",
                f"{r['speedup']:.1f}×",
                f"{r['search_scan_ms']:.1f}",
                f"{r['search_indexed_ms']:.1f}",
                f"{r['index_build_s']:.1f}",
                f"{r['index_bytes_per_item']:.0f}",
            ]
            for r in rows
        ],
    )
    machine = report.machine()
    report.update_readme(
        "filters",
        f"{n:,} items with synthetic metadata; first use is the median of 5 runs.\n\n{table}\n\n"
        f"Upkeep: adding {WRITE_BATCH:,} more items took {write['plain_s']:.1f} s without field indexes and "
        f"{write['indexed_s']:.1f} s with all three ({write['indexed_s'] / write['plain_s']:.2f}×).\n\n"
        f"`python -m benchmarks.filters`; {machine['cpu_count']} CPU cores, {machine['date']}.\n",
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
