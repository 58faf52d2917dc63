"""The ``multinet`` command.

Every failure the user can fix (unknown backend, missing package, missing or corrupt
data) ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from multinet.bench import WORKLOADS
from multinet.data import DATASETS
from multinet.errors import MultinetError
from multinet.registry import ENV_VAR as BACKEND_ENV_VAR
from multinet.registry import describe_backends, get_backend
from multinet.train import TrainingInterrupted

EXIT_USAGE = 2
DTYPES = ("float32", "float64")
EXIT_INTERRUPTED = 130


def _number(kind, accept, bound):
    """An argparse type: ``kind(text)``, which must satisfy ``accept`` (``bound`` says how)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _positive(kind):
    return _number(kind, lambda value: value > 0, "> 0")


def _non_negative(kind):
    return _number(kind, lambda value: value >= 0, ">= 0")


_non_negative_int = _non_negative(int)


def _add_backend_options(parser):
    parser.add_argument("--backend", metavar="NAME",
                        help=f"array library: numpy, jax, cupy, strict, or a plugin "
                             f"(default: ${BACKEND_ENV_VAR}, else numpy)")
    parser.add_argument("--dtype", choices=DTYPES,
                        help="floating-point type of parameters and data (default: float32)")


def _add_data_options(parser, *, sources=True):
    parser.add_argument("--dataset", choices=DATASETS,
                        help="dataset (default: mnist, or the checkpoint's)")
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

    args.dataset = args.dataset or "mnist"
    if args.data_source == "torchvision":
        return load_with_torchvision(args.dataset, args.data_dir, download=not args.offline)
    ensure_dataset(args.dataset, args.data_dir, offline=args.offline, mirrors=args.mirror,
                   progress=sys.stderr.isatty())
    return load_dataset(args.data_dir, args.dataset)


def _add_json_option(parser):
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on stdout")


HYPERPARAMETERS = ("hidden", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                   "batch_size", "seed", "init", "log_every")
INTERRUPTED_CHECKPOINT = Path("multinet-interrupted.safetensors")


def _train_config(args, checkpoint):
    from multinet.train import TrainConfig

    epochs = args.epochs if args.epochs is not None else args.iterations
    if checkpoint is None:
        values = {name: getattr(args, name) for name in HYPERPARAMETERS}
        return TrainConfig.from_preset(args.preset or "notebook", epochs=epochs,
                                       dtype=args.dtype or "float32", **values)
    given = [f"--{name.replace('_', '-')}" for name in ("preset", *HYPERPARAMETERS)
             if getattr(args, name) is not None]
    if given:
        raise MultinetError(f"--resume continues the saved configuration; {', '.join(given)} "
                            "cannot change (only --epochs / --iterations can)")
    config = checkpoint.config
    if args.dtype and args.dtype != config.dtype:
        raise MultinetError(f"the checkpoint was trained in {config.dtype}; "
                            f"--dtype {args.dtype} cannot resume it")
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    return config


def _cmd_train(args) -> int:
    from multinet import checkpoint as ckpt
    from multinet.data import dataset_spec
    from multinet.train import train

    resumed = ckpt.load(args.resume) if args.resume else None
    if resumed is not None:
        args.dataset = args.dataset or resumed.dataset
        if args.dataset != resumed.dataset:
            raise MultinetError(f"the checkpoint was trained on {resumed.dataset}, "
                                f"not {args.dataset}")
    args.dataset = args.dataset or "mnist"
    config = _train_config(args, resumed)
    backend = _backend_on_devices(args)
    dataset = _load_data(args)
    sha256 = dict(dataset_spec(dataset.name).content_sha256)
    if resumed is not None and resumed.metadata["dataset"]["content_sha256"] != sha256:
        raise MultinetError("the checkpoint was trained on other data files (checksums differ)")
    save_path = Path(args.save) if args.save else (Path(args.resume) if args.resume else None)

    def saver(path):
        if not backend.is_primary:  # in a multi-process run, process 0 writes
            return lambda state: path
        return lambda state: ckpt.save(path, config, state, backend=backend,
                                       dataset_name=dataset.name, dataset_sha256=sha256)

    primary = backend.is_primary
    result = train(config, backend, dataset, progress=not args.no_progress and primary,
                   state=resumed.state_on(backend) if resumed else None,
                   checkpoint=saver(save_path) if save_path else None,
                   on_interrupt=saver(save_path or INTERRUPTED_CHECKPOINT),
                   metrics_path=args.metrics if primary else None)
    if not primary:
        return 0
    summary = {**result.summary, "dataset": dataset.name, "devices": backend.device_count,
               "processes": backend.process_count,
               "checkpoint": str(save_path) if save_path else None}
    if args.plots:
        from multinet import plots
        from multinet.evaluation import evaluate

        host = {k: backend.to_numpy(v) for k, v in result.params.items()}
        evaluation = evaluate(host, backend, dataset, config.dtype)
        summary["plots"] = [str(p) for p in plots.write_all(
            args.plots, result.history, dataset, evaluation,
            title=f"{config.preset} preset on {backend.name}")]
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{dataset.name}, preset {config.preset}: backend {summary['backend']} on "
          f"{summary['device']}, {config.dtype}, sizes {'-'.join(map(str, summary['sizes']))}, "
          f"{config.optimizer} lr {config.lr}, "
          + (f"batch {config.batch_size}, {config.epochs} epochs" if config.batch_size
             else f"{summary['iterations']} full-batch iterations"))
    print(f"accuracy: train {summary['train_accuracy']:.4f}  "
          f"dev {summary['dev_accuracy']:.4f}  test {summary['test_accuracy']:.4f}")
    rate = summary["samples_per_second"]
    print(f"time: {summary['seconds']:.2f} s" + (f", {rate:,.0f} samples/s" if rate else ""))
    if save_path:
        print(f"checkpoint: {save_path}")
    for path in summary.get("plots", []):
        print(f"plot: {path}")
    return 0


DISTRIBUTED_FLAGS = (("coordinator", "MULTINET_COORDINATOR"),
                     ("num_processes", "MULTINET_NUM_PROCESSES"),
                     ("process_id", "MULTINET_PROCESS_ID"))


def _backend_on_devices(args):
    """The chosen backend, split over ``--devices`` (and processes) when asked."""
    import os

    for flag, variable in DISTRIBUTED_FLAGS:
        if getattr(args, flag) is not None:
            os.environ[variable] = str(getattr(args, flag))
    multi_process = bool(os.environ.get("MULTINET_COORDINATOR"))
    if multi_process and not args.devices:
        raise MultinetError("a multi-process run (--coordinator) needs --devices all")
    backend = get_backend(args.backend)
    if not args.devices:
        return backend
    if backend.data_parallel is None:
        raise MultinetError(
            f"--devices: backend {backend.name!r} runs on one device; data parallelism "
            "over several devices and hosts is supported through JAX (--backend jax)")
    return backend.data_parallel(args.devices)


def _devices(text):
    if text == "all":
        return text
    return _positive(int)(text)


def _checkpoint_and_data(args):
    from multinet import checkpoint as ckpt

    loaded = ckpt.load(args.checkpoint)
    args.dataset = args.dataset or loaded.dataset
    args.data_source = "multinet"
    return loaded, _load_data(args), get_backend(args.backend)


def _cmd_evaluate(args) -> int:
    from multinet.evaluation import evaluate

    loaded, dataset, backend = _checkpoint_and_data(args)
    result = evaluate(loaded.params, backend, dataset, loaded.config.dtype)
    result.pop("predictions")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.checkpoint}: {dataset.name} test accuracy {result['test_accuracy']:.4f} "
          f"({result['test_samples']} images, backend {backend.name}, {loaded.config.dtype})")
    from multinet.data import dataset_spec

    names = dataset_spec(dataset.name).classes
    matrix = result["confusion_matrix"]
    width = max(len(str(v)) for row in matrix for v in row) + 1
    print("per class, and confusion matrix (rows: true class, columns: predicted):")
    print(f"{'':>12} {'accuracy':>8}  " + "".join(f"{i:>{width}}" for i in range(len(names))))
    for i, (name, acc, row) in enumerate(zip(names, result["per_class_accuracy"], matrix)):
        print(f"{i} {name[:10]:<10} {acc:>8.4f}  " + "".join(f"{v:>{width}}" for v in row))
    return 0


def _cmd_predict(args) -> int:
    from multinet.data import dataset_spec
    from multinet.evaluation import load_image, probabilities, render

    if (args.index is None) == (args.image is None):
        raise MultinetError("give exactly one of --index N (a test image) or --image FILE")
    loaded, dataset, backend = (None, None, None)
    if args.image is not None:
        from multinet import checkpoint as ckpt

        loaded = ckpt.load(args.checkpoint)
        image, true = load_image(args.image), None
        names = dataset_spec(args.dataset or loaded.dataset).classes
    else:
        loaded, dataset, backend = _checkpoint_and_data(args)
        if not 0 <= args.index < len(dataset.test_labels):
            raise MultinetError(f"--index must be 0-{len(dataset.test_labels) - 1}")
        image, true = dataset.test_images[args.index], int(dataset.test_labels[args.index])
        names = dataset_spec(dataset.name).classes
    backend = backend or get_backend(args.backend)
    probs = probabilities(loaded.params, backend, image[None], loaded.config.dtype)[0]
    predicted = int(np.argmax(probs))
    result = {"prediction": predicted, "label": true, "probabilities": probs.tolist()}
    if args.json:
        print(json.dumps(result))
        return 0
    def name(i):
        return str(i) if names[i] == str(i) else f"{i} ({names[i]})"

    print(render(image))
    verdict = "" if true is None else ("  right" if predicted == true else "  WRONG")
    print(f"prediction: {name(predicted)}, {probs[predicted]:.1%}"
          + ("" if true is None else f"   label: {name(true)}") + verdict)
    return 0


def _cmd_plot(args) -> int:
    from multinet import plots
    from multinet.evaluation import evaluate

    loaded, dataset, backend = _checkpoint_and_data(args)
    evaluation = evaluate(loaded.params, backend, dataset, loaded.config.dtype)
    for path in plots.write_all(args.out, loaded.metadata.get("history", []), dataset,
                                evaluation, title=f"{args.checkpoint}"):
        print(path)
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

    args.dataset = args.dataset or "mnist"
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


def _cmd_bench(args) -> int:
    from multinet import bench
    from multinet.registry import backend_names

    workloads = tuple(args.workload or bench.WORKLOADS)
    config = bench.BenchConfig(repeats=args.repeats, epoch_repeats=args.epoch_repeats,
                               workloads=workloads, samples=args.samples)
    if args.devices:
        return _bench_scaling(bench, args, config)
    targets = list(args.backend or backend_names())
    if args.peer:
        import importlib.util

        if importlib.util.find_spec(args.peer) is None:
            raise MultinetError(f"--peer {args.peer}: {args.peer} is not installed "
                                f"(pip install {args.peer})")
        targets.append(f"peer:{args.peer}")
    rows, notes = [], []
    for target in targets:
        if not target.startswith("peer:"):
            try:
                get_backend(target)
            except MultinetError as exc:
                notes.append(f"{target}: skipped: {exc}")
                continue
        if not args.json:
            print(f"running {target}...", file=sys.stderr)
        result = bench.run_in_subprocess(target, config)
        if result.get("error"):
            notes.append(f"{target}: failed: {result['error']}")
        rows += result["rows"]
    rows = bench.add_ratios(rows)
    if args.json:
        print(json.dumps({"machine": bench.machine(), "config": dataclasses.asdict(config),
                          "rows": rows, "notes": notes}))
        return 0
    m = bench.machine()
    print(f"{m['date']}, {m['processor'] or m['platform']}, {m['cpus']} CPUs; median of "
          f"{config.repeats} ({config.epoch_repeats} for an epoch) after one warm-up run")
    print(f"{'backend':<14} {'workload':<17} {'dtype':<8} {'median':>10} {'min-max':>17} "
          f"{'samples/s':>11} {'x floor':>8} {'x peer':>7} {'first run':>10} {'host MB':>8}")
    for r in rows:
        if "median_seconds" not in r:
            print(f"{r['backend']:<14} {r['workload']:<17} {r['dtype']:<8} skipped: "
                  f"{r.get('skipped')}")
            continue
        spread = f"{r['min_seconds'] * 1e3:.1f}-{r['max_seconds'] * 1e3:.1f} ms"
        ratio = lambda key: f"{r[key]:.2f}" if key in r else "-"
        print(f"{r['backend'][:14]:<14} {r['workload']:<17} {r['dtype']:<8} "
              f"{r['median_seconds'] * 1e3:>7.1f} ms {spread:>17} "
              f"{r['samples_per_second']:>11,.0f} {ratio('x_floor'):>8} {ratio('x_peer'):>7} "
              f"{r['first_seconds'] * 1e3:>7.0f} ms {r['peak_host_bytes'] / 2**20:>8.0f}")
    for note in notes:
        print(note)
    return 0


def _bench_scaling(bench, args, config) -> int:
    names = args.backend or ["jax"]
    backend = get_backend(names[0])
    if len(names) > 1 or backend.data_parallel is None:
        raise MultinetError("bench --devices measures JAX's data parallelism: --backend jax")
    try:
        rows = bench.scaling(args.devices, config, backend.name)
    except RuntimeError as exc:
        raise MultinetError(str(exc)) from None
    if args.json:
        print(json.dumps({"machine": bench.machine(), "rows": rows}))
        return 0
    print(f"mlp epoch, split over devices (median of {config.epoch_repeats}):")
    print(f"{'devices':>7} {'median':>11} {'samples/s':>11} {'speedup':>8} {'efficiency':>10}")
    for r in rows:
        print(f"{r['devices']:>7} {r['median_seconds'] * 1e3:>8.1f} ms "
              f"{r['samples_per_second']:>11,.0f} {r['speedup']:>8.2f} {r['efficiency']:>10.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multinet",
        description="One array-API neural network, trained on NumPy, CuPy or JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train on MNIST (or Fashion-MNIST) and report accuracy",
        description="Train from scratch or --resume. --preset notebook (the default) is "
                    "the notebook's full-batch run; --preset mlp is a stronger MLP. Every "
                    "preset value can be overridden.")
    _add_backend_options(train)
    _add_data_options(train)
    train.add_argument("--preset", choices=("notebook", "mlp"),
                       help="starting values for everything below (default: notebook)")
    train.add_argument("--hidden", type=_positive(int), nargs="+", metavar="N",
                       help="hidden layer widths, one number per layer (notebook: 10)")
    train.add_argument("--lr", type=_positive(float), help="learning rate (notebook: 0.2)")
    train.add_argument("--optimizer", choices=("sgd", "momentum", "adam"))
    train.add_argument("--momentum", type=_positive(float), help="for --optimizer momentum")
    train.add_argument("--weight-decay", type=_non_negative(float),
                       help="decoupled weight decay on the weights (default: 0)")
    train.add_argument("--schedule", choices=("constant", "cosine"),
                       help="learning-rate schedule")
    train.add_argument("--batch-size", type=_non_negative_int,
                       help="images per step; 0 = the whole training set (notebook)")
    train.add_argument("--epochs", type=_non_negative_int,
                       help="passes over the training set (with full batches: iterations)")
    train.add_argument("--iterations", type=_non_negative_int,
                       help="full-batch iterations: the same as --epochs (notebook: 500)")
    train.add_argument("--init", choices=("uniform", "he"),
                       help="uniform(-0.5, 0.5) as the notebook, or He normal")
    train.add_argument("--seed", type=_non_negative_int,
                       help="seed for the weights, the dev split and the shuffling (0)")
    train.add_argument("--log-every", type=_positive(int), metavar="EPOCHS",
                       help="epochs between progress updates, metrics and checkpoints")
    train.add_argument("--save", metavar="PATH",
                       help="write a checkpoint (safetensors) at every log point and at the end")
    train.add_argument("--resume", metavar="PATH", help="continue from a checkpoint")
    train.add_argument("--metrics", metavar="PATH", help="append metrics as JSON lines")
    train.add_argument("--plots", metavar="DIR", help="write PNG figures (needs matplotlib)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json_option(train)
    parallel = train.add_argument_group(
        "data parallelism (JAX)", "Split every batch over N devices, and over processes on "
        "several hosts. Environment: MULTINET_COORDINATOR, MULTINET_NUM_PROCESSES, "
        "MULTINET_PROCESS_ID.")
    parallel.add_argument("--devices", type=_devices, metavar="N|all",
                          help="devices to split each batch over")
    parallel.add_argument("--coordinator", metavar="HOST:PORT",
                          help="address of process 0, for a multi-process run")
    parallel.add_argument("--num-processes", type=_positive(int), metavar="N")
    parallel.add_argument("--process-id", type=_non_negative_int, metavar="I")
    train.set_defaults(run=_cmd_train)

    for name, helptext, run in (
            ("evaluate", "test accuracy, per-class accuracy and confusion matrix",
             _cmd_evaluate),
            ("predict", "show a test image (or an image file) with its prediction",
             _cmd_predict),
            ("plot", "training curves, predictions and confusion matrix as PNG files",
             _cmd_plot)):
        sub = commands.add_parser(name, help=helptext, description=helptext)
        sub.add_argument("checkpoint", metavar="CKPT", help="a checkpoint from train --save")
        sub.add_argument("--backend", metavar="NAME",
                         help="backend to run on (any: checkpoints move between them)")
        _add_data_options(sub, sources=False)
        if name == "predict":
            sub.add_argument("--index", type=_non_negative_int, help="test image number")
            sub.add_argument("--image", metavar="FILE",
                             help="an image file instead (PNG, JPEG...; needs Pillow)")
        if name == "plot":
            sub.add_argument("--out", metavar="DIR", required=True, help="folder for the PNGs")
        else:
            _add_json_option(sub)
        sub.set_defaults(run=run)

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

    bench_cmd = commands.add_parser(
        "bench", help="time the workloads on every backend, with ratios to the memory "
                      "floor and to PyTorch",
        description="Times a notebook iteration (float32, float64), an epoch of the mlp "
                    "preset and inference over 10,000 images on synthetic data of MNIST's "
                    "shape, each backend in its own process, after a warm-up run.")
    bench_cmd.add_argument("--backend", action="append", metavar="NAME",
                           help="backend to time (repeatable; default: every available)")
    bench_cmd.add_argument("--workload", action="append", choices=WORKLOADS,
                           help="workload (repeatable; default: all)")
    bench_cmd.add_argument("--peer", choices=("torch",),
                           help="also time PyTorch eager doing the same math (if installed)")
    bench_cmd.add_argument("--repeats", type=_positive(int), default=5,
                           help="timed runs per workload (default: 5)")
    bench_cmd.add_argument("--epoch-repeats", type=_positive(int), default=3,
                           help="timed runs of the mlp epoch (default: 3)")
    bench_cmd.add_argument("--devices", type=_positive(int), metavar="N",
                           help="instead: scaling of the mlp epoch over 1, 2, 4 ... N "
                                "devices (JAX; virtual CPU devices where there is no GPU)")
    bench_cmd.add_argument("--samples", type=_positive(int), default=59000,
                           help="training images (default: 59,000, as after the dev split)")
    _add_json_option(bench_cmd)
    bench_cmd.set_defaults(run=_cmd_bench)

    backends = commands.add_parser("backends", help="list backends and why any cannot run")
    _add_json_option(backends)
    backends.set_defaults(run=_cmd_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TrainingInterrupted as exc:
        print(f"multinet: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MultinetError as exc:
        print(f"multinet: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("multinet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
