"""`make bench`: run every benchmark in turn; each writes its own section of bench/RESULTS.md."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ["bench.bench_search"],
    ["bench.bench_export"],
    ["bench.bench_server"],
    ["bench.bench_load"],
    ["bench.bench_sdk"],
    ["bench.suite", "--full"],
    ["bench.bench_strategies", "--seeds", "0", "1"],
    ["bench.bench_ray"],  # needs the ray extra (in `all`)
    ["bench.bench_ray", "--engine", "autohas_edge.server.engine", "--concurrency", "1", "2"],
]


def main() -> int:
    """Run each benchmark module as its own process; report which failed."""
    failed = []
    for module in BENCHMARKS:
        print(f"== python -m {' '.join(module)}", flush=True)
        if subprocess.run([sys.executable, "-m", *module]).returncode != 0:
            failed.append(module[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
