"""The ``multinet`` command.

Every failure the user can fix (unknown backend, missing package, missing or corrupt
data) ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from multinet.data import DATASETS
from multinet.errors import MultinetError
from multinet.registry import ENV_VAR as BACKEND_ENV_VAR
from multinet.registry import describe_backends, get_backend

EXIT_USAGE = 2
DTYPES = ("float32", "float64")
EXIT_INTERRUPTED = 130


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_backend_options(parser):
    parser.add_argument("--backend", metavar="NAME",
                        help=f"array library: numpy, jax, cupy, strict, or a plugin "
                             f"(default: ${BACKEND_ENV_VAR}, else numpy)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="floating-point type of parameters and data (default: float32)")


def _add_data_options(parser, *, sources=True):
    parser.add_argument("--dataset", choices=DATASETS, default="mnist",
                        help="dataset (default: mnist)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the four IDX files, .gz or raw, or a torchvision "
                             "root (default: $MULTINET_DATA, else the cache)")
    parser.add_argument("--mirror", action="append", metavar="URL",
                        help="download from this base URL (repeatable, tried in order; "
                             "default: $MULTINET_MIRRORS, else the dataset's mirrors)")
    parser.add_argument("--offline", action="store_true",
                        help="never touch the network: use files already on disk")
    if sources:
        parser.add_argument("--data-source", choices=("multinet", "torchvision"),
                            default="multinet",
                            help="read the files with multinet (default) or load them "
                                 "through torchvision.datasets, as the notebook did")


def _load_data(args):
    from multinet.data import load_dataset, load_with_torchvision
    from multinet.download import ensure_dataset

    if args.data_source == "torchvision":
        return load_with_torchvision(args.dataset, args.data_dir, download=not args.offline)
    ensure_dataset(args.dataset, args.data_dir, offline=args.offline, mirrors=args.mirror,
                   progress=sys.stderr.isatty())
    return load_dataset(args.data_dir, args.dataset)


def _add_json_option(parser):
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on stdout")


def _cmd_train(args) -> int:
    from multinet.train import TrainConfig, train

    backend = get_backend(args.backend)
    config = TrainConfig(hidden=tuple(args.hidden), lr=args.lr, iterations=args.iterations,
                         seed=args.seed, dtype=args.dtype)
    dataset = _load_data(args)
    result = train(config, backend, dataset, progress=not args.no_progress)
    summary = result.summary
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"backend {summary['backend']} on {summary['device']}, {summary['dtype']}, "
              f"sizes {'-'.join(map(str, summary['sizes']))}, "
              f"{summary['iterations']} iterations at lr {summary['lr']}")
        print(f"accuracy: train {summary['train_accuracy']:.4f}  "
              f"dev {summary['dev_accuracy']:.4f}  test {summary['test_accuracy']:.4f}")
        rate = summary["samples_per_second"]
        print(f"time: {summary['seconds']:.2f} s"
              + (f", {rate:,.0f} samples/s" if rate else ""))
    return 0


def _cmd_backends(args) -> int:
    rows = describe_backends()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        if row["available"]:
            print(f"{row['name']:<8} available    {row['version']:<10} {', '.join(row['devices'])}")
        else:
            print(f"{row['name']:<8} unavailable  {row['reason']}")
    return 0


def _cmd_parity(args) -> int:
    from multinet import parity
    from multinet.registry import backend_names

    dataset = _load_data(args)
    if args.samples > len(dataset.train_labels):
        raise MultinetError(f"--samples {args.samples} exceeds the "
                            f"{len(dataset.train_labels)} training images")
    problem = parity.mnist_problem(dataset, args.samples, args.steps)
    rows = parity.report(problem, args.backend or backend_names(), args.dtype or DTYPES)
    if args.json:
        print(json.dumps({"samples": args.samples, "steps": args.steps, "rows": rows}))
    else:
        _print_parity_table(rows, args.steps)
    return 1 if any(row["verdict"] == "fail" for row in rows) else 0


def _print_parity_table(rows, steps):
    columns = ("forward", "loss", "grads", "step", "train", "curve")
    print(f"max relative error against NumPy float64 ({steps} steps on MNIST); "
          "tolerance in brackets")
    header = f"{'backend':<8} {'device':<6} {'dtype':<8}" + "".join(
        f" {name if name != 'train' else f'{steps} steps':>20}" for name in columns)
    print(header + "  verdict")
    for row in rows:
        start = f"{row['backend']:<8} {row.get('platform', '-'):<6} {row['dtype']:<8}"
        if "errors" not in row:
            print(f"{start} {row['verdict']}: {row['reason']}")
            continue
        cells = "".join(
            f" {row['errors'][c]:>9.2e} [{row['tolerances'][c]:7.1e}]" if c in row["errors"]
            else f" {'-':>20}" for c in columns)
        mismatches = int(row["errors"]["predictions"])
        verdict = row["verdict"] + (f" ({mismatches} predictions differ)" if mismatches else "")
        print(f"{start}{cells}  {verdict}")


def _cmd_data(args) -> int:
    from multinet import data
    from multinet.download import fetch

    spec = data.dataset_spec(args.dataset)
    if args.action == "fetch":
        if args.offline:
            raise MultinetError("'multinet data fetch' downloads; it cannot run --offline")
        target = data.explicit_dir(args.data_dir)
        files = fetch(args.dataset, target, mirrors=args.mirror,
                      progress=sys.stderr.isatty())
        print(f"{spec.name}: {len(files)} files in {next(iter(files.values())).parent}")
        return 0
    if args.action == "where":
        print(f"{spec.name}: searched, in order:")
        for directory in data.search_dirs(spec, args.data_dir):
            files = data.find_files(directory)
            print(f"  {directory}{'  <- used' if files else ''}")
            if files:
                for path in files.values():
                    print(f"    {path}")
                return 0
        print(f"not found: run 'multinet data fetch --dataset {spec.name}' or pass --data-dir")
        return 1
    files = data.locate(args.data_dir, args.dataset)
    results = data.verify_files(files, args.dataset)
    for role, path in files.items():
        print(f"{'ok' if results[role] else 'MISMATCH':<8} {path}")
    if not all(results.values()):
        print(f"checksum mismatch: delete the files marked MISMATCH and run 'multinet data "
              f"fetch --dataset {spec.name}'", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multinet",
        description="One array-API neural network, trained on NumPy, CuPy or JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train on MNIST and report accuracy",
                                description="Full-batch gradient descent on MNIST; the "
                                            "defaults are the notebook's run.")
    _add_backend_options(train)
    _add_data_options(train)
    train.add_argument("--iterations", type=_non_negative_int, default=500,
                       help="gradient-descent steps (default: 500)")
    train.add_argument("--lr", type=_positive(float), default=0.2,
                       help="learning rate (default: 0.2)")
    train.add_argument("--hidden", type=_positive(int), nargs="+", default=[10], metavar="N",
                       help="hidden layer widths, one number per layer (default: 10)")
    train.add_argument("--seed", type=_non_negative_int, default=0,
                       help="seed for the weights and the dev split (default: 0)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json_option(train)
    train.set_defaults(run=_cmd_train)

    check = commands.add_parser(
        "parity", help="compare every backend with the NumPy float64 reference on MNIST",
        description="Run the network on every available backend and dtype and compare "
                    "forward pass, gradients and a full-batch training run with NumPy "
                    "float64. Exits 1 if any comparison is outside tolerance.")
    check.add_argument("--backend", action="append", metavar="NAME",
                       help="backend to check (repeatable; default: all registered)")
    check.add_argument("--dtype", action="append", choices=DTYPES,
                       help="dtype to check (repeatable; default: both)")
    check.add_argument("--samples", type=_positive(int), default=2048,
                       help="training images used (default: 2048)")
    check.add_argument("--steps", type=_non_negative_int, default=100,
                       help="full-batch training steps compared (default: 100)")
    _add_data_options(check)
    _add_json_option(check)
    check.set_defaults(run=_cmd_parity)

    data_cmd = commands.add_parser(
        "data", help="where the dataset is, verify it, download it",
        description="where: which files would be used; verify: check their contents "
                    "against the known SHA-256; fetch: download into the cache (or "
                    "--data-dir) from the mirrors, verifying each file.")
    data_cmd.add_argument("action", choices=("where", "verify", "fetch"))
    _add_data_options(data_cmd, sources=False)
    data_cmd.set_defaults(run=_cmd_data)

    backends = commands.add_parser("backends", help="list backends and why any cannot run")
    _add_json_option(backends)
    backends.set_defaults(run=_cmd_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MultinetError as exc:
        print(f"multinet: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("multinet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
