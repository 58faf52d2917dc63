"""Before and after multinet.heap, side by side in one run: each backend's workloads with
glibc's default malloc thresholds and with ``heap.retain_freed_memory``, the two
interleaved round by round (each in a fresh process, as ``multinet bench`` runs them), and
the ratio of their medians.

    python scripts/bench-heap.py --backend numpy --backend torch --rounds 3
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

from multinet import bench, machine
from multinet.checks import POSITIVE_INTEGER
from multinet.cli import EXIT_INTERRUPTED, EXIT_USAGE, _Parser
from multinet.commands.bench import SAMPLES
from multinet.commands.options import in_range
from multinet.errors import MultinetError
from multinet.registry import get_backend


def fail(message) -> None:
    """Stop with one line and status 2, as ``multinet`` does for a mistake found after
    the options were read (no pointer to ``--help``: the options were fine)."""
    print(f"multinet: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def check_heap(name, retain, rows) -> None:
    """Stop (one line, status 2) where the "after" process did not raise the thresholds:
    the user's own MALLOC_* settings, or no glibc, make both columns the same run."""
    status = next((r["heap"] for r in rows if r.get("heap")), None)
    if retain and status != "retained":
        fail(f"{name}: nothing to compare, the thresholds were not raised: {status}")


def main() -> None:
    try:
        compare()
    except KeyboardInterrupt:  # the worker of the moment is killed by subprocess.run
        print("multinet: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def compare() -> None:
    # multinet's parser: a mistake is one line (``multinet: error: ...``) and status 2.
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", help="default: numpy")
    parser.add_argument("--workload", action="append", choices=bench.WORKLOADS,
                        help="default: notebook-float32, mlp-epoch, inference")
    parser.add_argument("--rounds", type=in_range(POSITIVE_INTEGER), default=3, help="default: 3")
    parser.add_argument("--samples", default=59000, help="at least 128; default: 59,000",
                        type=in_range(SAMPLES))
    args = parser.parse_args()
    config = bench.BenchConfig(samples=args.samples, repeats=5, epoch_repeats=3,
                               workloads=tuple(dict.fromkeys(args.workload or (
                                   "notebook-float32", "mlp-epoch", "inference"))))
    names = list(dict.fromkeys(args.backend or ["numpy"]))
    for name in names:  # a typo or a missing library: before any process starts
        try:
            get_backend(name)
        except MultinetError as exc:
            fail(exc)
    try:
        bench.check_images_fit(config)
    except MultinetError as exc:
        fail(exc)
    m = machine.machine()
    print("\n".join(machine.describe_machine(m)))
    times: dict = {}
    skipped: dict = {}
    for _ in range(args.rounds):
        for name in names:
            for retain in (False, True):
                run = dataclasses.replace(config, extra={"retain_heap": retain})
                result = bench.run_in_subprocess(name, run)
                if result.get("error"):
                    fail(f"{name}: {result['error']}")
                check_heap(name, retain, result["rows"])
                for row in result["rows"]:
                    if "skipped" in row:
                        skipped[f"{name} {row['workload']}"] = row["skipped"]
                    if "median_seconds" in row:
                        key = (name, row["workload"], row["dtype"])
                        times.setdefault(key, {}).setdefault(retain, []).append(
                            row["median_seconds"])
    if not times:
        fail("nothing was timed: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    print(f"medians of {args.rounds} rounds (each the median of its repeats), ms")
    print(f"{'backend':8} {'workload':18} {'default':>9} {'retained':>9} {'ratio':>6}")
    for (name, workload, _), pair in times.items():
        before, after = statistics.median(pair[False]), statistics.median(pair[True])
        print(f"{name:8} {workload:18} {before * 1e3:9.1f} {after * 1e3:9.1f} "
              f"{after / before:6.2f}")


if __name__ == "__main__":
    main()
