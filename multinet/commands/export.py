"""``multinet export``: a checkpoint's network, or one step of its training, as an ONNX
model (needs the ``onnx`` extra)."""

from __future__ import annotations

from multinet import export
from multinet.checks import POSITIVE_INTEGER
from multinet.commands import options
from multinet.errors import MultinetError

DESCRIPTION = ("Trace the network (and the optimizer) of a checkpoint through ndonnx into "
               "ONNX graphs that any ONNX runtime can run; see docs/export.md. Needs the "
               "onnx extra: pip install 'multinet[onnx]'.")


def add_arguments(parser) -> None:
    """``CKPT``, ``--onnx``, ``--onnx-train``, ``--batch-size`` and ``--force``."""
    parser.add_argument("checkpoint", metavar="CKPT", help="a checkpoint from train --save")
    parser.add_argument("--onnx", metavar="OUT.onnx",
                        help="the inference graph: uint8 images (N, 28, 28) in, float32 "
                             "logits (N, 10) and int64 labels (N,) out")
    parser.add_argument("--onnx-train", metavar="OUT.onnx",
                        help="one training step: images, labels, learning rate, "
                             "parameters and optimizer state in; loss, accuracy and the "
                             "next parameters and state out")
    parser.add_argument("--batch-size", type=options.in_range(POSITIVE_INTEGER), metavar="B",
                        help="fix the training graph's batch size (default: any, symbolic)")
    options.add_force_option(parser, "the --onnx and --onnx-train models")


def run(args) -> int:
    """Write the graphs asked for; print their paths."""
    if args.onnx is None and args.onnx_train is None:
        raise MultinetError("export: give --onnx OUT.onnx, --onnx-train OUT.onnx, or both")
    if args.batch_size is not None and args.onnx_train is None:
        raise MultinetError("--batch-size fixes the training graph's batch: it needs "
                            "--onnx-train")
    for path in export.export(args.checkpoint, onnx=args.onnx, onnx_train=args.onnx_train,
                              batch_size=args.batch_size, force=args.force):
        print(path)
    return 0
