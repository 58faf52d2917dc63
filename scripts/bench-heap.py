"""Before and after multinet.heap, side by side in one run: each backend's workloads with
glibc's default malloc thresholds and with ``heap.retain_freed_memory``, the two
interleaved round by round (each in a fresh process, as ``multinet bench`` runs them), and
the ratio of their medians.

    python scripts/bench-heap.py --backend numpy --backend torch --rounds 3
"""

from __future__ import annotations

import dataclasses
import statistics

from multinet import bench
from multinet.cli import _number, _Parser, _positive


def check_heap(parser, name, retain, rows) -> None:
    """Stop (one line, status 2) where the "after" process did not raise the thresholds:
    the user's own MALLOC_* settings, or no glibc, make both columns the same run."""
    status = next((r["heap"] for r in rows if r.get("heap")), None)
    if retain and status != "retained":
        parser.error(f"{name}: nothing to compare, the thresholds were not raised: {status}")


def main() -> None:
    # multinet's parser: a mistake is one line (``multinet: error: ...``) and status 2.
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", help="default: numpy")
    parser.add_argument("--workload", action="append", choices=bench.WORKLOADS,
                        help="default: notebook-float32, mlp-epoch, inference")
    parser.add_argument("--rounds", type=_positive(int), default=3, help="default: 3")
    parser.add_argument("--samples", default=59000, help="at least 128; default: 59,000",
                        type=_number(int, lambda n: n >= 128, ">= 128, one batch"))
    args = parser.parse_args()
    config = bench.BenchConfig(samples=args.samples, repeats=5, epoch_repeats=3,
                               workloads=tuple(args.workload or (
                                   "notebook-float32", "mlp-epoch", "inference")))
    m = bench.machine()
    print("\n".join(bench.describe_machine(m)))
    times: dict = {}
    for _ in range(args.rounds):
        for name in args.backend or ["numpy"]:
            for retain in (False, True):
                run = dataclasses.replace(config, extra={"retain_heap": retain})
                result = bench.run_in_subprocess(name, run)
                if result.get("error"):
                    parser.error(f"{name}: {result['error']}")
                check_heap(parser, name, retain, result["rows"])
                for row in result["rows"]:
                    if "median_seconds" in row:
                        key = (name, row["workload"], row["dtype"])
                        times.setdefault(key, {}).setdefault(retain, []).append(
                            row["median_seconds"])
    print(f"medians of {args.rounds} rounds (each the median of its repeats), ms")
    print(f"{'backend':8} {'workload':18} {'default':>9} {'retained':>9} {'ratio':>6}")
    for (name, workload, _), pair in times.items():
        before, after = statistics.median(pair[False]), statistics.median(pair[True])
        print(f"{name:8} {workload:18} {before * 1e3:9.1f} {after * 1e3:9.1f} "
              f"{after / before:6.2f}")


if __name__ == "__main__":
    main()
