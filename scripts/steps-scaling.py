"""How a training run's cost grows with its steps, for a backend: ``multinet train`` with
only ``--iterations`` changed from the default run (the notebook preset, full batch,
``--log-every 10``), each in a fresh process, ``--rounds`` times over, and the growth
exponent of the median time between each length and the one before, and between the
shortest and the longest (1: the cost grows linearly; 2: with the square, as a lazy
library's does when nothing materialises the parameters between steps).

    python scripts/steps-scaling.py --backend module://dask.array --backend numpy \
        --steps 50 100 200 500 --rounds 3
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

from multinet import machine
from multinet.checks import POSITIVE_INTEGER
from multinet.cli import EXIT_INTERRUPTED, EXIT_USAGE, _Parser
from multinet.commands.options import in_range
from multinet.errors import MultinetError
from multinet.registry import get_backend


def fail(message) -> None:
    """Stop with one line and status 2, as ``multinet`` does."""
    print(f"multinet: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def train_seconds(backend: str, steps: int, data_dir: str | None) -> tuple[float, float]:
    """``(training seconds, accuracy on the test set)`` of one run in a fresh process."""
    command = [sys.executable, "-m", "multinet", "train", "--backend", backend,
               "--iterations", str(steps), "--json", "--no-progress"]
    if data_dir:
        command += ["--data-dir", data_dir]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{backend}, {steps} steps: {done.stderr.strip().splitlines()[-1]}")
    summary = json.loads(done.stdout)
    return summary["seconds"], summary["test_accuracy"]


def main() -> None:
    # multinet's parser: a mistake is one line (``multinet: error: ...``) and status 2.
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append",
                        help="repeatable; default: module://dask.array")
    parser.add_argument("--steps", nargs="+", type=in_range(POSITIVE_INTEGER),
                        default=[50, 100, 200], help="run lengths; default: 50 100 200")
    parser.add_argument("--rounds", type=in_range(POSITIVE_INTEGER), default=1,
                        help="runs of each length, interleaved; default: 1")
    parser.add_argument("--data-dir", help="the MNIST files; default: as multinet train "
                                           "finds them")
    args = parser.parse_args()
    names = list(dict.fromkeys(args.backend or ["module://dask.array"]))
    for name in names:  # a typo or a missing library: before any run starts
        try:
            get_backend(name)
        except MultinetError as exc:
            fail(exc)
    print("\n".join(machine.describe_machine(machine.machine())))
    lengths = sorted(set(args.steps))
    seconds: dict = {}
    accuracy: dict = {}
    try:
        # Every length of every backend once per round, so that a machine shared with
        # other jobs loads all of them alike; the medians over the rounds are compared.
        for round_ in range(args.rounds):
            for steps in lengths:
                for name in names:
                    taken, accuracy[name, steps] = train_seconds(name, steps, args.data_dir)
                    seconds.setdefault((name, steps), []).append(taken)
                    print(f"round {round_ + 1}: {name} {steps} steps {taken:.1f} s",
                          file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("multinet: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    print(f"medians of {args.rounds} round(s); exponent: log(time ratio) / log(steps ratio) "
          "against the length before")
    print(f"{'backend':20} {'steps':>5} {'seconds':>8} {'s/step':>7} {'exponent':>8} "
          f"{'test acc':>8}")
    for name in names:
        median = {steps: statistics.median(seconds[name, steps]) for steps in lengths}
        for before, steps in zip([None, *lengths], lengths):
            exponent = "-" if before is None else f"{_growth(median, before, steps):.2f}"
            print(f"{name:20} {steps:5} {median[steps]:8.1f} {median[steps] / steps:7.3f} "
                  f"{exponent:>8} {accuracy[name, steps]:8.4f}")
        if len(lengths) > 1:
            print(f"{name:20} {lengths[0]} to {lengths[-1]} steps: exponent "
                  f"{_growth(median, lengths[0], lengths[-1]):.2f}")


def _growth(median: dict, shorter: int, longer: int) -> float:
    return math.log(median[longer] / median[shorter]) / math.log(longer / shorter)


if __name__ == "__main__":
    main()
