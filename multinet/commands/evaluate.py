"""``multinet evaluate``: a checkpoint's test accuracy, per class, and its confusion
matrix; or an exported ONNX model's, from onnxruntime, checked ``--against`` its
checkpoint."""

from __future__ import annotations

import json

from multinet import checkpoint as ckpt
from multinet import export, files
from multinet.catalog import dataset_spec
from multinet.commands import COMMANDS, inputs, options
from multinet.errors import MultinetError
from multinet.registry import get_backend

DESCRIPTION = COMMANDS["evaluate"].summary


def add_arguments(parser) -> None:
    """``CKPT`` (a checkpoint or an ONNX model), the backend and data options,
    ``--against`` and ``--json``."""
    options.add_checkpoint_options(
        parser, "a checkpoint from train --save, or an ONNX model from export --onnx "
                "(OUT.onnx)")
    parser.add_argument("--against", metavar="CKPT",
                        help="for an exported model (evaluate MODEL.onnx): also run "
                             "this checkpoint in multinet and check that the model's "
                             "labels and logits agree with it; exit 1 if they do not")
    options.add_json_option(parser)


def run(args) -> int:
    """The report of a checkpoint on ``--backend`` (``evaluate MODEL.onnx``: of the
    model, exit 1 if it disagrees with ``--against``)."""
    if files.is_onnx_model(args.checkpoint):
        return _evaluate_onnx(args)
    if args.against:
        raise MultinetError("--against compares an exported ONNX model (.onnx) with its "
                            "checkpoint")
    trained, dataset = inputs.run_and_data(args)
    result = trained.evaluate(dataset)
    result.pop("predictions")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.checkpoint}: {dataset.name} test accuracy {result['test_accuracy']:.4f} "
          f"({result['test_samples']} images, backend {trained.backend.name}, "
          f"{trained.config.dtype})")
    _print_per_class(dataset.name, result)
    return 0


def _print_per_class(dataset_name, result):
    """The per-class table: each class once, by its number, and by its name where that is
    not the number itself (Fashion-MNIST's ``0 T-shirt/top``, MNIST's ``0``)."""
    names = dataset_spec(dataset_name).classes
    labels = [str(i) if name == str(i) else f"{i} {name}" for i, name in enumerate(names)]
    side = max(len("class"), *map(len, labels))
    matrix = result["confusion_matrix"]
    width = max(len(str(v)) for row in matrix for v in row) + 1
    print("per class, and confusion matrix (rows: true class, columns: predicted):")
    print(f"{'class':<{side}} {'accuracy':>8}  "
          + "".join(f"{i:>{width}}" for i in range(len(names))))
    for label, acc, row in zip(labels, result["per_class_accuracy"], matrix):
        print(f"{label:<{side}} {acc:>8.4f}  " + "".join(f"{v:>{width}}" for v in row))


def _evaluate_onnx(args) -> int:
    """``evaluate MODEL.onnx [--against CKPT]``: the same report, from onnxruntime; with
    a checkpoint, whether multinet's own outputs agree (exit 1 if they do not)."""
    if args.backend is not None and not args.against:
        raise MultinetError(f"--backend chooses where multinet runs the --against "
                            f"checkpoint; {args.checkpoint} itself runs in onnxruntime: give "
                            "--against CKPT, or leave --backend out")
    model = export.open_model(args.checkpoint)
    export.check_inference_contract(model)
    args.dataset = args.dataset or model.metadata.get("dataset") or "mnist"
    args.data_source = "multinet"
    loaded = ckpt.load(args.against) if args.against else None
    dataset = inputs.load_data(args)
    result = export.evaluate_model(model, dataset)
    logits, predictions = result.pop("logits"), result.pop("predictions")
    if loaded is not None:
        backend = get_backend(args.backend)
        own = export.multinet_outputs(loaded.params, backend, dataset.test_images,
                                      loaded.config.dtype,
                                      layers=loaded.config.network_layers())
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
