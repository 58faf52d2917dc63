"""``multinet parity``: every backend and dtype against the NumPy float64 reference on
MNIST (forward pass, gradients, a full-batch training run) of the notebook's network or
the ``cnn`` preset's; exit 1 if any is outside tolerance."""

from __future__ import annotations

import json
import textwrap

from multinet import parity
from multinet.checks import NON_NEGATIVE_INTEGER, POSITIVE_INTEGER
from multinet.commands import inputs, options
from multinet.commands.bench import signals_interrupt
from multinet.errors import MultinetError
from multinet.machine import WIDTH
from multinet.registry import DTYPES, backend_names, get_backend

DESCRIPTION = ("Run the network on every available backend and dtype and compare forward "
               "pass, gradients and a full-batch training run with NumPy float64. Exits 1 "
               "if any comparison is outside tolerance.")

#: The network each ``--preset`` checks, and its problem's default (images, steps): the
#: notebook's 784-10-10 at lr 0.2; the cnn preset's layers, He's initialisation, lr 0.05
#: on one batch of the preset's size (``multinet.parity.cnn_problem``).
PROBLEMS = {"notebook": (parity.mnist_problem, 2048, 100),
            "cnn": (parity.cnn_problem, parity.CNN_SAMPLES, parity.CNN_STEPS)}


def add_arguments(parser) -> None:
    """``--preset``, ``--backend``, ``--dtype`` (each repeatable), ``--samples``,
    ``--steps``, the data options and ``--json``."""
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help="backend to check (repeatable; default: all registered)")
    parser.add_argument("--dtype", action="append", choices=DTYPES,
                        help="dtype to check (repeatable; default: both)")
    parser.add_argument("--preset", choices=tuple(PROBLEMS), default="notebook",
                        help="network to check: the notebook's 784-10-10 (default) or the "
                             "cnn preset's convolutional network")
    parser.add_argument("--samples", type=options.in_range(POSITIVE_INTEGER),
                        help="training images used (default: notebook 2048, cnn "
                             f"{parity.CNN_SAMPLES})")
    parser.add_argument("--steps", type=options.in_range(NON_NEGATIVE_INTEGER),
                        help="full-batch training steps compared (default: notebook 100, "
                             f"cnn {parity.CNN_STEPS})")
    options.add_data_options(parser)
    options.add_json_option(parser)


def run(args) -> int:
    """The comparison table (or JSON); 1 if any row fails; a ``MultinetError`` (exit 2)
    when every row was skipped: nothing was compared. SIGTERM and SIGHUP stop it as
    Ctrl-C does, with one line and 128 + the signal's number."""
    with signals_interrupt("the parity check stopped"):
        return _compare(args)


def _compare(args) -> int:
    for name in args.backend or ():
        # Named on the command line: one that cannot run here is an error, as for train,
        # not a skipped row (those are for the registered ones nobody asked for).
        get_backend(name)
    make_problem, samples, steps = PROBLEMS[args.preset]
    samples = samples if args.samples is None else args.samples
    steps = steps if args.steps is None else args.steps
    dataset = inputs.load_data(args)
    if samples > len(dataset.train_labels):
        raise MultinetError(f"--samples {samples} exceeds the "
                            f"{len(dataset.train_labels)} training images")
    problem = make_problem(dataset, samples, steps)
    rows = parity.report(problem, args.backend or backend_names(), args.dtype or DTYPES)
    if args.json:
        print(json.dumps({"preset": args.preset, "network": describe(problem),
                          "samples": samples, "steps": steps, "rows": rows}))
    else:
        print_table(rows, steps, f"{describe(problem)}; {samples} images")
    if all(row["verdict"] == "skipped" for row in rows):
        reasons = dict.fromkeys(f"{row['backend']} {row['dtype']}: {row['reason']}"
                                for row in rows)
        raise MultinetError("nothing was compared: every backend and dtype was skipped ("
                            + "; ".join(reasons) + ")")
    return 1 if any(row["verdict"] == "fail" for row in rows) else 0


def describe(problem: parity.Problem) -> str:
    """The network of ``problem`` as ``multinet train`` describes it: ``784-10-10``, or
    its layers as text."""
    if problem.layers:
        return ", ".join(map(str, problem.network()))
    return "-".join(map(str, problem.sizes))


def print_table(rows: list[dict], steps: int, network: str | None = None) -> None:
    """The rows of ``multinet.parity.report`` as the table ``multinet parity`` prints
    (``scripts/gpu-check.sh`` prints a saved ``--json`` report with it too): each level's
    error over its tolerance, in under 100 columns (the errors and tolerances themselves
    are in the JSON). ``network``: a line saying what was checked, if given."""
    columns = ("forward", "loss", "grads", "step", "train", "curve")
    headings = [name if name != "train" else f"{steps} steps" for name in columns]
    widths = [max(7, len(h)) for h in headings]
    print("each level's largest relative error against NumPy float64 over its tolerance "
          "(within it: <= 1)")
    print(f"{headings[4]}: the parameters along {steps} full-batch steps on MNIST; curve: "
          "their losses")
    print("the errors and tolerances themselves: --json; the tolerance policy: docs/parity.md")
    for line in textwrap.wrap(f"network: {network}", WIDTH) if network else ():
        print(line)
    width = max([7, *(len(row["backend"]) for row in rows)])
    print(f"{'backend':<{width}} {'device':<6} {'dtype':<7}"
          + "".join(f" {h:>{w}}" for h, w in zip(headings, widths)) + "  verdict")
    for row in rows:
        start = f"{row['backend']:<{width}} {row.get('platform', '-'):<6} {row['dtype']:<7}"
        if "errors" not in row:
            for i, line in enumerate(textwrap.wrap(f"{row['verdict']}: {row['reason']}",
                                                   WIDTH - len(start) - 1,
                                                   break_on_hyphens=False)):
                print(f"{start if i == 0 else ' ' * len(start)} {line}")
            continue
        cells = "".join(
            f" {_over(row['errors'][c], row['tolerances'][c]):>{w}}" if c in row["errors"]
            else f" {'-':>{w}}" for c, w in zip(columns, widths))
        mismatches = int(row["errors"]["predictions"])
        verdict = row["verdict"] + (f" ({mismatches} predictions differ)" if mismatches else "")
        print(f"{start}{cells}  {verdict}")


def _over(error: float, tolerance: float) -> str:
    """``error / tolerance`` in two significant digits: ``0.0017``, ``0``, ``2.4``."""
    return f"{error / tolerance:.2g}" if tolerance else ("0" if error == 0 else "inf")
