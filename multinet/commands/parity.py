"""``multinet parity``: every backend and dtype against the NumPy float64 reference on
MNIST (forward pass, gradients, a full-batch training run); exit 1 if any is outside
tolerance."""

from __future__ import annotations

import json

from multinet import parity
from multinet.checks import NON_NEGATIVE_INTEGER, POSITIVE_INTEGER
from multinet.commands import inputs, options
from multinet.errors import MultinetError
from multinet.registry import DTYPES, backend_names, get_backend

DESCRIPTION = ("Run the network on every available backend and dtype and compare forward "
               "pass, gradients and a full-batch training run with NumPy float64. Exits 1 "
               "if any comparison is outside tolerance.")


def add_arguments(parser) -> None:
    """``--backend``, ``--dtype`` (each repeatable), ``--samples``, ``--steps``, the data
    options and ``--json``."""
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help="backend to check (repeatable; default: all registered)")
    parser.add_argument("--dtype", action="append", choices=DTYPES,
                        help="dtype to check (repeatable; default: both)")
    parser.add_argument("--samples", type=options.in_range(POSITIVE_INTEGER), default=2048,
                        help="training images used (default: 2048)")
    parser.add_argument("--steps", type=options.in_range(NON_NEGATIVE_INTEGER), default=100,
                        help="full-batch training steps compared (default: 100)")
    options.add_data_options(parser)
    options.add_json_option(parser)


def run(args) -> int:
    """The comparison table (or JSON); 1 if any row fails."""
    for name in args.backend or ():
        # Named on the command line: one that cannot run here is an error, as for train,
        # not a skipped row (those are for the registered ones nobody asked for).
        get_backend(name)
    dataset = inputs.load_data(args)
    if args.samples > len(dataset.train_labels):
        raise MultinetError(f"--samples {args.samples} exceeds the "
                            f"{len(dataset.train_labels)} training images")
    problem = parity.mnist_problem(dataset, args.samples, args.steps)
    rows = parity.report(problem, args.backend or backend_names(), args.dtype or DTYPES)
    if args.json:
        print(json.dumps({"samples": args.samples, "steps": args.steps, "rows": rows}))
    else:
        print_table(rows, args.steps)
    return 1 if any(row["verdict"] == "fail" for row in rows) else 0


def print_table(rows: list[dict], steps: int) -> None:
    """The rows of ``multinet.parity.report`` as the table ``multinet parity`` prints
    (``scripts/gpu-check.sh`` prints a saved ``--json`` report with it too)."""
    columns = ("forward", "loss", "grads", "step", "train", "curve")
    print(f"max relative error against NumPy float64 ({steps} steps on MNIST); "
          "tolerance in brackets")
    width = max([8, *(len(row["backend"]) for row in rows)])
    header = f"{'backend':<{width}} {'device':<6} {'dtype':<8}" + "".join(
        f" {name if name != 'train' else f'{steps} steps':>20}" for name in columns)
    print(header + "  verdict")
    for row in rows:
        start = f"{row['backend']:<{width}} {row.get('platform', '-'):<6} {row['dtype']:<8}"
        if "errors" not in row:
            print(f"{start} {row['verdict']}: {row['reason']}")
            continue
        cells = "".join(
            f" {row['errors'][c]:>9.2e} [{row['tolerances'][c]:7.1e}]" if c in row["errors"]
            else f" {'-':>20}" for c in columns)
        mismatches = int(row["errors"]["predictions"])
        verdict = row["verdict"] + (f" ({mismatches} predictions differ)" if mismatches else "")
        print(f"{start}{cells}  {verdict}")
