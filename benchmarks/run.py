"""Run every benchmark, save its JSON under benchmarks/results/ and regenerate the README tables.

    python -m benchmarks.run            # everything (about an hour on 2 cores: the soak run is most of it)
    python -m benchmarks.run --quick    # the fast subset, under 10 minutes on 2 cores
    python -m benchmarks.run retrieval outliers    # just these

Each benchmark runs in its own process, so one failing does not stop the others; the exit code is
non-zero if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name: (arguments for the full run, arguments for --quick, or None to skip it in --quick)
BENCHMARKS: dict[str, tuple[list[str], list[str] | None]] = {
    "retrieval": ([], ["--only", "retrieval"]),  # the long-document section encodes for minutes
    "recommend": ([], []),
    "outliers": ([], []),
    "clusters": ([], None),  # encodes about 4,000 texts
    "server_load": ([], []),
    "performance": ([], ["--quick"]),
    "hot_path": ([], []),  # half a minute
    "filters": ([], ["--quick"]),
    "images": ([], None),
    "distributed": ([], None),
    "reliability": (["--trials", "200"], None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the fast subset (under 10 minutes on 2 cores)")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)} [default: all]")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name, (full, quick) in BENCHMARKS.items():
        if args.names and name not in args.names:
            continue
        extra = quick if args.quick else full
        if extra is None:
            print(f"== {name}: skipped in --quick")
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *extra], cwd=ROOT).returncode
        print(
            f"== {name}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.perf_counter() - start:.0f}s", flush=True
        )
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
