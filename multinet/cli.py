"""The ``multinet`` command.

Every failure the user can fix (unknown backend, missing package, missing or corrupt
data) ends as one line on stderr and exit status 2, never a traceback. ``train``,
``evaluate`` and ``plot`` are a layer over the Python API (``multinet.api``): they parse
their options and call it, and its messages name the flags (``multinet.flags``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import sys
import threading
from pathlib import Path

import numpy as np

from multinet.bench import WORKLOADS
from multinet.data import DATASETS
from multinet.errors import MultinetError, UnknownBackend, spelled
from multinet.flags import WORDING
from multinet.peers import PEERS
from multinet.registry import ENV_VAR as BACKEND_ENV_VAR
from multinet.registry import describe_backends, get_backend
from multinet.train import TrainingInterrupted

EXIT_USAGE = 2
DTYPES = ("float32", "float64")
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE, like other Unix tools


def _number(kind, accept, bound):
    """An argparse type: ``kind(text)``, which must satisfy ``accept`` (``bound`` says how)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
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
#: Momentum: in [0, 1); at 1 or more the velocity never forgets and grows without bound.
_momentum = _number(float, lambda value: 0 <= value < 1, "in [0, 1)")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already states it or
    there is none to state (flags, options whose default comes from the preset)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, argparse.SUPPRESS)
                or action.nargs == 0 or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """The parser of ``multinet`` and of each of its commands: shows every default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """One line, as for every other mistake (argparse would print the usage too)."""
        self.exit(EXIT_USAGE, f"multinet: error: {message} (see '{self.prog} --help')\n")


def _preset_values(name: str) -> str:
    """``"notebook: 0.2; mlp: 0.001"``: an option's default, which the preset decides."""
    from multinet.train import PRESETS, TrainConfig

    def shown(value):
        return " ".join(map(str, value)) if isinstance(value, tuple) else value

    values = {preset: PRESETS[preset].get(name, getattr(TrainConfig, name))
              for preset in PRESETS}
    return "default: " + ", ".join(f"{preset} {shown(v)}" for preset, v in values.items())


def _add_backend_options(parser):
    parser.add_argument("--backend", metavar="NAME",
                        help=f"array library: numpy, jax, cupy, torch, mlx, strict, a "
                             f"plugin, or the import name of any array-API library "
                             f"(default: ${BACKEND_ENV_VAR}, else numpy)")
    parser.add_argument("--dtype", choices=DTYPES,
                        help="floating-point type of parameters and data (default: float32)")
    parser.add_argument("--device", metavar="NAME",
                        help="device, for backends with a choice: cuda, cuda:1, mps, cpu "
                             "(default: the backend's first; torch: cuda, then mps, then cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="use the backend's optional compiler (torch.compile: about a "
                             "minute to compile on two CPU cores); JAX and MLX always compile")


def _add_data_options(parser, *, sources=True, checkpoint=False):
    parser.add_argument("--dataset", choices=DATASETS,
                        help="dataset (default: the checkpoint's)" if checkpoint
                        else "dataset (default: mnist)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the four IDX files, .gz or raw, or a torchvision "
                             "root (default: $MULTINET_DATA, else the cache)")
    parser.add_argument("--mirror", action="append", metavar="URL",
                        help="download from this base URL (repeatable, tried in order; "
                             "default: $MULTINET_MIRRORS, else the dataset's mirrors)")
    parser.add_argument("--offline", action="store_true",
                        help="never touch the network: use files already on disk")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="MNIST-format data of your own: skip the check of the files' "
                             "contents against the dataset's known SHA-256 (the format "
                             "is still checked)")
    if sources:
        parser.add_argument("--data-source", choices=("multinet", "torchvision"),
                            default="multinet",
                            help="read the files with multinet (default) or load them "
                                 "through torchvision.datasets, as the notebook did")


def _load_data(args):
    from multinet import api

    args.dataset = args.dataset or "mnist"
    return api.load_dataset(args.dataset, args.data_dir, download=not args.offline,
                            verify=args.verify, mirrors=args.mirror,
                            source=getattr(args, "data_source", "multinet"),
                            progress=sys.stderr.isatty())


def _add_json_option(parser):
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on stdout")


#: ``multinet train``'s options that are ``fit``'s hyperparameter keywords, same names.
TRAIN_OPTIONS = ("hidden", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                 "batch_size", "epochs", "iterations", "seed", "dtype", "init", "log_every")


def _need_matplotlib() -> None:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise MultinetError("plots need matplotlib: pip install 'multinet[plot]'") from None


def _cmd_train(args) -> int:
    """``fit``, in two halves: everything checked before the data is loaded with the
    command's data options, then the run."""
    from multinet import api

    _distributed_environment(args)
    overrides = {name: getattr(args, name) for name in TRAIN_OPTIONS
                 if getattr(args, name) is not None}
    plan = api.prepare_fit(
        args.dataset, preset=args.preset, backend=args.backend, resume=args.resume,
        save=args.resume if args.save is None else args.save, metrics=args.metrics,
        plots=args.plots,
        devices=args.devices, device=args.device, compile=args.compile, **overrides)
    args.dataset = plan.dataset_name
    dataset = _load_data(args)
    progress = args.progress or (not args.no_progress and sys.stderr.isatty())
    try:
        run = plan.run(dataset, progress=progress)
    except api.PlotsNotWritten as exc:  # the summary first: the run itself went well
        _print_train_summary(args, exc.run.config, exc.run.summary)
        raise
    if run.backend.is_primary:  # in a multi-process run, process 0 reports
        _print_train_summary(args, run.config, run.summary)
    return 0


def _print_train_summary(args, config, summary) -> None:
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{summary['dataset']}, preset {config.preset}: backend {summary['backend']} on "
          f"{summary['device']}, {config.dtype}, sizes {'-'.join(map(str, summary['sizes']))}, "
          f"{config.optimizer} lr {config.lr}, "
          + (f"batch {config.batch_size}, {config.epochs} epochs" if config.batch_size
             else f"{summary['iterations']} full-batch iterations"))
    print(f"accuracy: train {summary['train_accuracy']:.4f}  "
          f"dev {summary['dev_accuracy']:.4f}  test {summary['test_accuracy']:.4f}")
    rate = summary["samples_per_second"]
    print(f"time: {summary['seconds']:.2f} s" + (f", {rate:,.0f} samples/s" if rate else ""))
    if summary["checkpoint"]:
        print(f"checkpoint: {summary['checkpoint']}")
    for path in summary.get("plots", []):
        print(f"plot: {path}")


DISTRIBUTED_FLAGS = (("coordinator", "MULTINET_COORDINATOR"),
                     ("num_processes", "MULTINET_NUM_PROCESSES"),
                     ("process_id", "MULTINET_PROCESS_ID"),
                     ("init_timeout", "MULTINET_INIT_TIMEOUT"))


def _distributed_environment(args) -> None:
    """``--coordinator`` and the rest become the environment that JAX's multi-process
    setup reads (and ``fit`` checks), as if they had been set by the launcher."""
    for flag, variable in DISTRIBUTED_FLAGS:
        if getattr(args, flag) is not None:
            os.environ[variable] = str(getattr(args, flag))


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


def _run_and_data(args):
    """The checkpoint as a run on ``--backend``, and the data to look at it with (the
    dataset it was trained on, unless ``--dataset``)."""
    from multinet import api

    run = api.load(args.checkpoint, args.backend)
    args.dataset = args.dataset or run.dataset_name
    args.data_source = "multinet"
    return run, _load_data(args)


def _cmd_evaluate(args) -> int:
    if args.checkpoint.lower().endswith(".onnx"):
        return _cmd_evaluate_onnx(args)
    if args.against:
        raise MultinetError("--against compares an exported ONNX model (.onnx) with its "
                            "checkpoint")
    run, dataset = _run_and_data(args)
    result = run.evaluate(dataset)
    result.pop("predictions")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.checkpoint}: {dataset.name} test accuracy {result['test_accuracy']:.4f} "
          f"({result['test_samples']} images, backend {run.backend.name}, "
          f"{run.config.dtype})")
    _print_per_class(dataset.name, result)
    return 0


def _print_per_class(dataset_name, result):
    from multinet.data import dataset_spec

    names = dataset_spec(dataset_name).classes
    matrix = result["confusion_matrix"]
    width = max(len(str(v)) for row in matrix for v in row) + 1
    print("per class, and confusion matrix (rows: true class, columns: predicted):")
    print(f"{'':>12} {'accuracy':>8}  " + "".join(f"{i:>{width}}" for i in range(len(names))))
    for i, (name, acc, row) in enumerate(zip(names, result["per_class_accuracy"], matrix)):
        print(f"{i} {name[:10]:<10} {acc:>8.4f}  " + "".join(f"{v:>{width}}" for v in row))


def _cmd_evaluate_onnx(args) -> int:
    """``evaluate MODEL.onnx [--against CKPT]``: the same report, from onnxruntime; with
    a checkpoint, whether multinet's own outputs agree (exit 1 if they do not)."""
    from multinet import export

    model = export.open_model(args.checkpoint)
    export.check_inference_contract(model)
    args.dataset = args.dataset or model.metadata.get("dataset") or "mnist"
    args.data_source = "multinet"
    loaded = None
    if args.against:
        from multinet import checkpoint as ckpt

        loaded = ckpt.load(args.against)
    dataset = _load_data(args)
    result = export.evaluate_model(model, dataset)
    logits, predictions = result.pop("logits"), result.pop("predictions")
    if loaded is not None:
        backend = get_backend(args.backend)
        own = export.multinet_outputs(loaded.params, backend, dataset.test_images,
                                      loaded.config.dtype)
        result["against"] = {"checkpoint": args.against, "backend": backend.name,
                             **export.agreement((logits, predictions), own)}
    agrees = loaded is None or result["against"]["agrees"]
    if args.json:
        print(json.dumps(result))
        return 0 if agrees else 1
    print(f"{args.checkpoint}: {dataset.name} test accuracy {result['test_accuracy']:.4f} "
          f"({result['test_samples']} images, {result['runtime']})")
    _print_per_class(dataset.name, result)
    if loaded is not None:
        a = result["against"]
        print(f"{'agrees' if agrees else 'DISAGREES'} with {args.against} on backend "
              f"{a['backend']}: labels equal on {a['labels_equal']} of {a['samples']} images, "
              f"logits relative error {a['logit_error']:.1e} (tolerance "
              f"{a['logit_tolerance']:.0e})")
    return 0 if agrees else 1


def _cmd_export(args) -> int:
    from multinet import export

    if args.onnx is None and args.onnx_train is None:
        raise MultinetError("export: give --onnx OUT.onnx, --onnx-train OUT.onnx, or both")
    if args.batch_size is not None and args.onnx_train is None:
        raise MultinetError("--batch-size fixes the training graph's batch: it needs "
                            "--onnx-train")
    for path in export.export(args.checkpoint, onnx=args.onnx, onnx_train=args.onnx_train,
                              batch_size=args.batch_size):
        print(path)
    return 0


def _class_namer(names):
    """``name(i)``: the class number, with its name where it is not the number itself."""
    return lambda i: str(i) if names[i] == str(i) else f"{i} ({names[i]})"


def _cmd_predict(args) -> int:
    from multinet.data import dataset_spec
    from multinet.evaluation import probabilities, render

    if (args.index is None) == (args.image is None):
        raise MultinetError("give exactly one of --index N (a test image) or --image PATH")
    if args.show and args.json:
        raise MultinetError("--show draws text; it cannot go with --json")
    if args.image is not None:
        return _predict_pictures(args)
    loaded, dataset, backend = _checkpoint_and_data(args)
    if not 0 <= args.index < len(dataset.test_labels):
        raise MultinetError(f"--index must be 0-{len(dataset.test_labels) - 1}")
    image, true = dataset.test_images[args.index], int(dataset.test_labels[args.index])
    if args.save_inputs:
        _save_inputs(args.save_inputs, [Path(f"test-{args.index}")], [image])
    probs = probabilities(loaded.params, backend, image[None], loaded.config.dtype)[0]
    predicted = int(np.argmax(probs))
    result = {"prediction": predicted, "label": true, "probabilities": probs.tolist()}
    if args.json:
        print(json.dumps(result))
        return 0
    name = _class_namer(dataset_spec(dataset.name).classes)
    print(render(image))
    verdict = "  right" if predicted == true else "  WRONG"
    print(f"prediction: {name(predicted)}, {probs[predicted]:.1%}   label: {name(true)}"
          + verdict)
    return 0


def _file_identity(path):
    """``(device, inode)`` of an existing file (links included), else None."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _save_inputs(folder, paths, images, keep=()) -> list[Path]:
    """Write each 28x28 image as ``folder/<stem>.png`` (``<stem>-2.png``... when two
    pictures share a name); the paths written. Before writing anything, refuses to
    write over any file in ``keep`` (the pictures given: ``--save-inputs`` naming their
    own folder must not replace a drawing by its 28x28)."""
    from multinet import pictures

    folder = Path(folder)
    targets, taken = [], set()
    for path in paths:
        stem, n = path.stem, 1
        while f"{stem}.png".lower() in taken:
            n += 1
            stem = f"{path.stem}-{n}"
        taken.add(f"{stem}.png".lower())
        targets.append(folder / f"{stem}.png")
    kept = {_file_identity(path) for path in keep} - {None}
    for target in targets:
        if _file_identity(target) in kept:
            raise MultinetError(f"--save-inputs {folder}: would write over the picture "
                                f"{target}; choose another folder")
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, image in zip(targets, images):
            written.append(pictures.save_png(image, target))
    except OSError as exc:
        raise MultinetError(f"--save-inputs {folder}: cannot write ({exc.strerror or exc})"
                            ) from None
    return written


def _predict_pictures(args) -> int:
    """``predict --image``: every picture prepared as MNIST's digits were, predicted in
    one batch; a picture that fails is reported on its own line and the rest go on."""
    from multinet import checkpoint as ckpt
    from multinet import pictures
    from multinet.data import dataset_spec
    from multinet.evaluation import probabilities, render

    loaded = ckpt.load(args.checkpoint)
    name = _class_namer(dataset_spec(args.dataset or loaded.dataset).classes)
    backend = get_backend(args.backend)
    pictures.require_pillow()
    failed = 0

    def report(exc):
        nonlocal failed
        failed += 1
        print(f"multinet: error: {exc}", file=sys.stderr)

    paths = []
    for text in args.image:
        given = Path(text)
        if not text:  # Path("") is ".": the current folder, which was not asked for
            report("--image: an empty path")
            continue
        if not given.is_dir():
            paths.append(given)
            continue
        try:
            found = pictures.image_files(given)
        except OSError as exc:
            report(f"{given}: cannot list the folder ({exc.strerror or exc})")
            continue
        if not found:
            report(f"{given}: no picture files in this folder")
        paths.extend(found)
    read, images = [], []
    for path in paths:
        try:
            images.append(pictures.mnist_digit(path))
            read.append(path)
        except pictures.PictureError as exc:
            report(exc)
    saved = (_save_inputs(args.save_inputs, read, images, keep=paths)
             if args.save_inputs else [])
    probs = (probabilities(loaded.params, backend, np.stack(images), loaded.config.dtype)
             if images else np.zeros((0, 0)))
    results = []
    for i, (path, p) in enumerate(zip(read, probs)):
        order = [int(c) for c in np.argsort(-p, kind="stable")[:3]]
        results.append({
            "path": str(path), "prediction": order[0], "probability": float(p[order[0]]),
            "next": [{"prediction": c, "probability": float(p[c])} for c in order[1:]],
            "probabilities": p.tolist(), **({"input": str(saved[i])} if saved else {})})
    if args.json:
        print(json.dumps(results))
    for result, image in zip([] if args.json else results, images):
        if args.show:
            print(render(image))
        others = ", ".join(f"{name(n['prediction'])} {n['probability']:.1%}"
                           for n in result["next"])
        print(f"{result['path']}  {name(result['prediction'])}  "
              f"{result['probability']:.1%}   next: {others}")
    return EXIT_USAGE if failed else 0


def _cmd_plot(args) -> int:
    from multinet.files import OutputError, check_output_dir, reason

    _need_matplotlib()
    check_output_dir(args.out, "--out")
    run, dataset = _run_and_data(args)
    try:
        written = run.save_plots(args.out, dataset, title=f"{args.checkpoint}")
    except OSError as exc:
        raise OutputError(f"--out {args.out}: cannot write the plots ({reason(exc)})") from None
    for path in written:
        print(path)
    return 0


def _cmd_backends(args) -> int:
    if args.probe is not None:
        return _cmd_probe(args)
    rows = describe_backends()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        if row["available"]:
            print(f"{row['name']:<8} available    {row['version']:<10} {', '.join(row['devices'])}")
        else:
            print(f"{row['name']:<8} unavailable  {row['reason']}")
    print("any other array-API library: --backend IMPORT_NAME (multinet backends --probe "
          "IMPORT_NAME checks it)")
    return 0


def _cmd_probe(args) -> int:
    from multinet.probe import probe, worst_level

    result = probe(args.probe)
    if args.json:
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    print(f"probe of {args.probe} (namespace {result['namespace']}): "
          + ("every call multinet makes works" if not result["findings"]
             else f"{len(result['findings'])} problem(s)"))
    for line in result["findings"]:
        print(line)
    for row in result["parity"]:
        detail = (f"worst level {worst_level(row)}" if "errors" in row else row["reason"])
        print(f"{'parity':<9} {row['dtype']}: {row['verdict']}: {detail}")
    return 0 if result["ok"] else 1


def _cmd_parity(args) -> int:
    from multinet import parity
    from multinet.registry import backend_names

    for name in args.backend or ():
        # Named on the command line: one that cannot run here is an error, as for train,
        # not a skipped row (those are for the registered ones nobody asked for).
        get_backend(name)
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
        raise data.not_found_error(spec, data.search_roots(spec, args.data_dir))
    files = data.locate(args.data_dir, args.dataset)
    checks = data.verify_files(files, args.dataset)
    others = sorted({c.belongs_to[0] for c in checks.values()
                     if c.belongs_to and c.belongs_to[0] != spec.name})
    for check in checks.values():
        whose = check.belongs_to and f"{check.belongs_to[0]}'s {check.belongs_to[1]}"
        note = f"  ({whose or check.problem})" if whose or check.problem else ""
        label = ("ok" if check.ok else "other" if check.belongs_to
                 and check.belongs_to[0] in others else "MISMATCH")
        print(f"{label:<8} {check.path}{note}")
    damaged = sum(not c.ok and not (c.belongs_to and c.belongs_to[0] in others)
                  for c in checks.values())
    problems = []
    if others:  # good files of another dataset: not a reason to delete anything
        problems.append(f"files in {files['train_images'].parent} belong to "
                        f"{' and '.join(others)}, not {spec.name}: pass --dataset {others[0]}, "
                        f"or --data-dir a folder of {spec.name}'s files")
    if damaged:
        problems.append(f"{damaged} file(s) damaged or unknown: delete the files marked "
                        f"MISMATCH and run 'multinet data fetch --dataset {spec.name}'")
    if problems:
        raise MultinetError("; ".join(problems))
    return 0


def _cmd_bench(args) -> int:
    with _signals_interrupt():
        return _bench_table(args)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP end a bench as Ctrl-C does: an exception in the parent, so
    ``bench.run_in_subprocess`` kills the worker it waits for (it does on any exception)
    instead of leaving it to run on alone; one line and 128 + the signal's number. Only
    the first signal raises: a second (SIGTERM then SIGHUP, as systemd sends them) could
    raise again in the handler that kills the worker, before the kill."""
    import signal

    raised = []

    def interrupt(signum, frame):
        if raised:
            return
        raised.append(signum)
        raise TrainingInterrupted(f"interrupted ({signal.Signals(signum).name}); the bench "
                                  "stopped, with any worker it was running", None, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, interrupt)
                    for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: one set outside Python
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _bench_table(args) -> int:
    from multinet import bench
    from multinet.registry import backend_names

    # A name given twice is timed once (dict: first-seen order).
    workloads = tuple(dict.fromkeys(args.workload or bench.WORKLOADS))
    config = bench.BenchConfig(repeats=args.repeats, epoch_repeats=args.epoch_repeats,
                               workloads=workloads, samples=args.samples)
    bench.check_memory(config)
    if args.devices:
        if args.peer:
            raise MultinetError("bench --devices times JAX over devices, without peers: "
                                "drop --peer")
        return _bench_scaling(bench, args, config)
    targets = list(dict.fromkeys(args.backend or backend_names()))
    if args.peer:
        import importlib.util

        wanted = PEERS if args.peer == "all" else (args.peer,)
        installed = [p for p in wanted if importlib.util.find_spec(p) is not None]
        if not installed:
            raise MultinetError(f"--peer {args.peer}: {' and '.join(wanted)} "
                                f"{'is' if len(wanted) == 1 else 'are'} not installed "
                                f"(pip install {' '.join(wanted)})")
        targets += [f"peer:{p}" for p in installed]
    rows, notes, threads, heaps = [], [], {}, {}
    if args.peer:  # --peer all where one peer library is missing: say so, not nothing
        notes += [f"peer:{p}: skipped: {p} is not installed (pip install {p})"
                  for p in wanted if p not in installed]
    for target in targets:
        if not target.startswith("peer:"):
            try:
                get_backend(target)
            except UnknownBackend:
                if args.backend:  # named on the command line: a typo, not a missing library
                    raise
                continue
            except MultinetError as exc:
                notes.append(f"{target}: skipped: {exc}")
                continue
        if not args.json:
            print(f"running {target}...", file=sys.stderr)
        result = bench.run_in_subprocess(target, config)
        if result.get("error"):
            notes.append(f"{target}: failed: {result['error']}")
        rows += result["rows"]
        if result.get("threads") is not None:
            threads[target] = result["threads"]
        heaps[target] = next((r["heap"] for r in result["rows"] if r.get("heap")), None)
    if not any("median_seconds" in r for r in rows):
        reasons = notes + [f"{r['backend']} {r['workload']}: {r.get('skipped')}" for r in rows]
        raise MultinetError("nothing was timed: " + ("; ".join(reasons) or "no backend ran"))
    rows = bench.add_ratios(rows)
    m = bench.machine()
    if args.json:
        print(json.dumps({"machine": m, "threads": threads,
                          "config": dataclasses.asdict(config), "rows": rows, "notes": notes}))
        return 0
    for line in bench.describe_machine(m):
        print(line)
    for target, pools in threads.items():
        print("  " + bench.describe_threads(target, pools)
              + (f"; heap: {heaps[target]}" if heaps.get(target) else ""))
    epochs = f" ({config.epoch_repeats} for an epoch)" if "mlp-epoch" in workloads else ""
    print(f"median of {config.repeats}{epochs} after one warm-up run; x peer: against "
          "PyTorch eager; x best: against the fastest peer (named) of the workload; both "
          "on the same platform (CPU or GPU)")
    print(f"{'backend':<16} {'workload':<17} {'dtype':<8} {'median':>10} {'min-max':>17} "
          f"{'samples/s':>11} {'x floor':>8} {'x peer':>7} {'x best':>7} {'best peer':<15} "
          f"{'first run':>10} {'host MB':>8}")
    for r in rows:
        if "median_seconds" not in r:
            print(f"{r['backend'][:16]:<16} {r['workload']:<17} {r['dtype']:<8} skipped: "
                  f"{r.get('skipped')}")
            continue
        spread = f"{_milliseconds(r['min_seconds'])}-{_milliseconds(r['max_seconds'])} ms"
        ratio = lambda key: f"{r[key]:.2f}" if key in r else "-"
        print(f"{r['backend'][:16]:<16} {r['workload']:<17} {r['dtype']:<8} "
              f"{_milliseconds(r['median_seconds']):>7} ms {spread:>17} "
              f"{r['samples_per_second']:>11,.0f} {ratio('x_floor'):>8} {ratio('x_peer'):>7} "
              f"{ratio('x_best_peer'):>7} {r.get('best_peer', '-')[:15]:<15} "
              f"{r['first_seconds'] * 1e3:>7.0f} ms {r['peak_host_bytes'] / 2**20:>8.0f}")
    for note in notes:
        print(note)
    return 0


def _milliseconds(seconds: float) -> str:
    """At least three significant digits, never in exponent form: ``0.285``, ``43.8``,
    ``3,914``."""
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 1000 else f"{ms:.3g}"


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
    from multinet import __version__

    parser = _Parser(
        prog="multinet",
        description="One array-API neural network, trained on NumPy, CuPy, JAX, PyTorch, "
                    "MLX or any library that implements the array API standard.")
    parser.add_argument("--version", action="version", version=f"multinet {__version__}")
    parser.set_defaults(run=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train on MNIST (or Fashion-MNIST) and report accuracy",
        description="Train from scratch or --resume. --preset notebook (the default) is "
                    "the notebook's full-batch run; --preset mlp is a stronger MLP. Every "
                    "preset value can be overridden.")
    _add_backend_options(train)
    _add_data_options(train)
    train.add_argument("--preset", choices=("notebook", "mlp"),
                       help="starting values for every option below (default: notebook)")
    train.add_argument("--hidden", type=_positive(int), nargs="+", metavar="N",
                       help=f"hidden layer widths, one number per layer "
                            f"({_preset_values('hidden')})")
    train.add_argument("--lr", type=_positive(float),
                       help=f"learning rate ({_preset_values('lr')})")
    train.add_argument("--optimizer", choices=("sgd", "momentum", "adam"),
                       help=f"update rule ({_preset_values('optimizer')})")
    train.add_argument("--momentum", type=_momentum,
                       help="momentum coefficient in [0, 1), for --optimizer momentum "
                            "(default: 0.9)")
    train.add_argument("--weight-decay", type=_non_negative(float),
                       help="decoupled weight decay on the weights (default: 0)")
    train.add_argument("--schedule", choices=("constant", "cosine"),
                       help=f"learning-rate schedule ({_preset_values('schedule')})")
    train.add_argument("--batch-size", type=_non_negative_int,
                       help=f"images per step, 0 for the whole training set "
                            f"({_preset_values('batch_size')})")
    train.add_argument("--epochs", type=_non_negative_int,
                       help=f"passes over the training set ({_preset_values('epochs')})")
    train.add_argument("--iterations", type=_non_negative_int,
                       help="full-batch iterations, for runs with --batch-size 0: the same "
                            "as --epochs there (default: notebook 500)")
    train.add_argument("--init", choices=("uniform", "he"),
                       help=f"weight initialisation: uniform(-0.5, 0.5) as in the notebook, "
                            f"or He normal ({_preset_values('init')})")
    train.add_argument("--seed", type=_non_negative_int,
                       help="seed for the weights, the dev split and the shuffling (default: 0)")
    train.add_argument("--log-every", type=_positive(int), metavar="EPOCHS",
                       help=f"epochs between progress updates, metrics and checkpoints "
                            f"({_preset_values('log_every')})")
    train.add_argument("--save", metavar="PATH",
                       help="write a checkpoint (safetensors) at every log point and at the end")
    train.add_argument("--resume", metavar="PATH", help="continue from a checkpoint")
    train.add_argument("--metrics", metavar="PATH", help="append metrics as JSON lines")
    train.add_argument("--plots", metavar="DIR", help="write PNG figures (needs matplotlib)")
    shown = train.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="show the progress bar even when stderr is not a terminal "
                            "(by default it is shown only on a terminal)")
    shown.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json_option(train)
    parallel = train.add_argument_group(
        "data parallelism (JAX)", "Split every batch over N devices, and over processes on "
        "several hosts. Environment: MULTINET_COORDINATOR, MULTINET_NUM_PROCESSES, "
        "MULTINET_PROCESS_ID, MULTINET_INIT_TIMEOUT.")
    parallel.add_argument("--devices", type=_devices, metavar="N|all",
                          help="devices to split each batch over (default: no split, one "
                               "device; a multi-process run needs it)")
    parallel.add_argument("--coordinator", metavar="HOST:PORT",
                          help="address of process 0, for a multi-process run (default: "
                               "$MULTINET_COORDINATOR, else one process)")
    parallel.add_argument("--num-processes", type=_positive(int), metavar="N",
                          help="processes in the run, with --coordinator (default: "
                               "$MULTINET_NUM_PROCESSES)")
    parallel.add_argument("--process-id", type=_non_negative_int, metavar="I",
                          help="this process's number, 0 to N-1, with --coordinator "
                               "(default: $MULTINET_PROCESS_ID)")
    parallel.add_argument("--init-timeout", type=_positive(float), metavar="SECONDS",
                          help="how long to wait for every process to join before giving "
                               "up with an error (default: $MULTINET_INIT_TIMEOUT, else 60)")
    train.set_defaults(run=_cmd_train)

    for name, helptext, run in (
            ("evaluate", "test accuracy, per-class accuracy and confusion matrix",
             _cmd_evaluate),
            ("predict", "show a test image, or pictures of digits, with the prediction",
             _cmd_predict),
            ("plot", "training curves, predictions and confusion matrix as PNG files",
             _cmd_plot)):
        sub = commands.add_parser(name, help=helptext, description=helptext)
        sub.add_argument("checkpoint", metavar="CKPT",
                         help="a checkpoint from train --save" + (
                             ", or an ONNX model from export --onnx (OUT.onnx)"
                             if name == "evaluate" else ""))
        sub.add_argument("--backend", metavar="NAME",
                         help="backend to run on (any: checkpoints move between them; "
                              "default: $MULTINET_BACKEND, else numpy)")
        _add_data_options(sub, sources=False, checkpoint=True)
        if name == "predict":
            sub.add_argument("--index", type=_non_negative_int,
                             help="test image number (give this or --image)")
            sub.add_argument("--image", nargs="+", metavar="PATH",
                             help="pictures instead: files, or folders (the picture files "
                                  "directly in them), prepared as MNIST's digits were "
                                  "(PNG, JPEG, TIFF...; needs Pillow); with --json, an "
                                  "array of one object per picture")
            sub.add_argument("--show", action="store_true",
                             help="also draw each 28x28 the network saw, as text")
            sub.add_argument("--save-inputs", metavar="DIR",
                             help="write each 28x28 the network saw into DIR as a PNG")
        if name == "evaluate":
            sub.add_argument("--against", metavar="CKPT",
                             help="for an exported model (evaluate MODEL.onnx): also run "
                                  "this checkpoint in multinet and check that the model's "
                                  "labels and logits agree with it; exit 1 if they do not")
        if name == "plot":
            sub.add_argument("--out", metavar="DIR", required=True, help="folder for the PNGs")
        else:
            _add_json_option(sub)
        sub.set_defaults(run=run)

    export_cmd = commands.add_parser(
        "export", help="write a checkpoint's network, or its training step, as an ONNX model",
        description="Trace the network (and the optimizer) of a checkpoint through ndonnx "
                    "into ONNX graphs that any ONNX runtime can run; see docs/export.md. "
                    "Needs the onnx extra: pip install 'multinet[onnx]'.")
    export_cmd.add_argument("checkpoint", metavar="CKPT", help="a checkpoint from train --save")
    export_cmd.add_argument("--onnx", metavar="OUT.onnx",
                            help="the inference graph: uint8 images (N, 28, 28) in, float32 "
                                 "logits (N, 10) and int64 labels (N,) out")
    export_cmd.add_argument("--onnx-train", metavar="OUT.onnx",
                            help="one training step: images, labels, learning rate, "
                                 "parameters and optimizer state in; loss, accuracy and the "
                                 "next parameters and state out")
    export_cmd.add_argument("--batch-size", type=_positive(int), metavar="B",
                            help="fix the training graph's batch size (default: any, symbolic)")
    export_cmd.set_defaults(run=_cmd_export)

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
                    "--data-dir) from the mirrors, verifying each file. Exit status 2, "
                    "with one line of error, when nothing is found, a file does not "
                    "verify or a download fails.")
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
    bench_cmd.add_argument("--peer", choices=(*PEERS, "all"),
                           help="also time the same math written natively in that library "
                                "(torch: PyTorch eager; jax: jax.value_and_grad, jit, "
                                "lax.scan; all: every one installed)")
    bench_cmd.add_argument("--repeats", type=_positive(int), default=5,
                           help="timed runs per workload (default: 5)")
    bench_cmd.add_argument("--epoch-repeats", type=_positive(int), default=3,
                           help="timed runs of the mlp epoch (default: 3)")
    bench_cmd.add_argument("--devices", type=_positive(int), metavar="N",
                           help="instead: scaling of the mlp epoch over 1, 2, 4 ... N "
                                "devices (JAX; virtual CPU devices where there is no GPU)")
    bench_cmd.add_argument("--samples", type=_number(int, lambda n: n >= 128,
                                                     ">= 128, one batch of the mlp epoch"),
                           default=59000,
                           help="training images, at least 128 (default: 59,000, as after "
                                "the dev split)")
    _add_json_option(bench_cmd)
    bench_cmd.set_defaults(run=_cmd_bench)

    backends = commands.add_parser(
        "backends", help="list backends and why any cannot run",
        description="List every registered backend: whether it can run here (and why "
                    "not), its version and its devices. With --probe: check any module "
                    "against every call multinet makes, then its parity. Exits 1 if the "
                    "probe finds a problem.")
    backends.add_argument("--probe", metavar="MODULE",
                          help="import name of a library to check, function by function "
                               "(array_api_strict, or a module of your own)")
    _add_json_option(backends)
    backends.set_defaults(run=_cmd_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit handler
        return code
    except BrokenPipeError:
        # Whoever read the output went away (``| head``): stop quietly, as cat and grep
        # do, with their status.
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # Standard output on a full disk (``> /dev/full``) or a failing device: every
        # file multinet writes itself reports its own failure (``OutputError``), so an
        # operating-system error without a file name that gets here is the output's.
        if exc.filename is not None or exc.errno not in OUTPUT_ERRNOS:
            raise
        _stdout_to_devnull()
        print(f"multinet: error: cannot write the output: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE


#: Why writing standard output can fail, besides a closed pipe.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


def _stdout_to_devnull() -> None:
    """Point stdout at devnull, so that Python's own flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (tests)
        pass


def _one_line(message) -> str:
    """The message with its line breaks shown as ``\\n``: a name read from a file (a
    tensor's, a path's) may hold one, and the error must stay one line."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


def _run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run is None:  # a bare ``multinet``: show what it can do
        parser.print_help()
        return 0
    try:
        with spelled(WORDING):  # the library's messages name these flags, not arguments
            return args.run(args)
    except TrainingInterrupted as exc:  # SIGINT 130, SIGTERM 143, SIGHUP 129
        print(f"multinet: {_one_line(exc)}", file=sys.stderr)
        return 128 + int(exc.signum)
    except MultinetError as exc:
        print(f"multinet: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("multinet: error: out of memory", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("multinet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
