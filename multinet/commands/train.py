"""``multinet train``: train from scratch or ``--resume``, and report the accuracies.

A layer over the Python API's ``prepare_fit`` (``multinet.api.fitting``): the options are
``fit``'s keywords, every one checked before the data is loaded, then the run.
"""

from __future__ import annotations

import argparse
import json
import os

from multinet.api.fitting import PlotsNotWritten, prepare_fit
from multinet.catalog import CLASSES
from multinet.checks import NON_NEGATIVE_INTEGER, POSITIVE, POSITIVE_INTEGER
from multinet.commands import inputs, options
from multinet.initializers import SCHEMES
from multinet.layers import Layer, parse_layers, shapes
from multinet.optim import OPTIMIZERS, SCHEDULES
from multinet.registry import DISTRIBUTED_ENV
from multinet.training.config import FEATURES, HYPERPARAMETERS, PRESETS, RANGES, TrainConfig
from multinet.training.progress import BAR, LINE_SECONDS

DESCRIPTION = ("Train from scratch or --resume. --preset notebook (the default) is the "
               "notebook's full-batch run; --preset mlp is a stronger MLP; --preset cnn a "
               "LeNet-like convolutional network. Every preset value can be overridden, "
               "the network by --hidden (a perceptron) or --layers (any stack of layers).")

#: How ``--layers`` is written, for its help and its errors.
LAYERS_FORM = ("comma-separated, each dense:UNITS, conv:CHANNELS:KxK[:valid|same], "
               "maxpool:SIZE, avgpool:SIZE, flatten or relu")


def _devices(text):
    if text == "all":
        return text
    return options.in_range(POSITIVE_INTEGER)(text)


def _layers(text: str) -> tuple[str, ...]:
    """An argparse type: the hidden layers of ``--layers`` as canonical text, checked to
    read and to fit together on 28 x 28 images with the output layer after them."""
    if not text.strip(" ,"):
        raise argparse.ArgumentTypeError(f"no layers given: write them {LAYERS_FORM}")
    try:
        return TrainConfig(hidden=(), layers=text).layers
    except (TypeError, ValueError) as exc:
        reason = str(exc).removeprefix("layers: ")
    try:  # the layers given fit, so the output layer added after them does not
        shapes(parse_layers(text), FEATURES)
        reason += f"; the output layer {Layer('dense', CLASSES)} follows the layers given"
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(reason)


def _preset_values(name: str) -> str:
    """``"default: notebook 0.2, mlp 0.001"``: an option's default, which the preset
    decides (presets that leave it empty, such as a network given the other way, are
    not listed)."""
    def shown(value):
        if not isinstance(value, tuple):
            return value
        return ("," if name == "layers" else " ").join(map(str, value))

    values = {preset: PRESETS[preset].get(name, getattr(TrainConfig, name))
              for preset in PRESETS}
    return "default: " + ", ".join(f"{preset} {shown(v)}" for preset, v in values.items()
                                   if v != ())


def add_arguments(parser) -> None:
    """The options of ``multinet train``: backend, data, hyperparameters, outputs and
    data parallelism."""
    options.add_backend_options(parser)
    options.add_data_options(parser)
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="starting values for every option below (default: notebook)")
    network = parser.add_mutually_exclusive_group()
    network.add_argument("--hidden", type=options.in_range(RANGES["hidden"]), nargs="+",
                         metavar="N",
                         help=f"a perceptron's hidden layer widths, one number per layer "
                              f"({_preset_values('hidden')})")
    network.add_argument("--layers", type=_layers, metavar="LAYERS",
                         help=f"the hidden layers of any network, {LAYERS_FORM}, such as "
                              f"conv:8:5x5:same,relu,maxpool:2,flatten,dense:64,relu; the "
                              f"output layer dense:10 follows them "
                              f"({_preset_values('layers')})")
    parser.add_argument("--lr", type=options.in_range(RANGES["lr"]),
                        help=f"learning rate ({_preset_values('lr')})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS,
                        help=f"update rule ({_preset_values('optimizer')})")
    parser.add_argument("--momentum", type=options.in_range(RANGES["momentum"]),
                        help=f"momentum coefficient, {RANGES['momentum']}, for --optimizer "
                             f"momentum (default: {TrainConfig.momentum})")
    parser.add_argument("--weight-decay", type=options.in_range(RANGES["weight_decay"]),
                        help="decoupled weight decay on the weights (default: 0)")
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help=f"learning-rate schedule ({_preset_values('schedule')})")
    parser.add_argument("--batch-size", type=options.in_range(RANGES["batch_size"]),
                        help=f"images per step, 0 for the whole training set "
                             f"({_preset_values('batch_size')})")
    parser.add_argument("--epochs", type=options.in_range(RANGES["epochs"]),
                        help=f"passes over the training set ({_preset_values('epochs')})")
    parser.add_argument("--iterations", type=options.in_range(RANGES["iterations"]),
                        help="full-batch iterations, for runs with --batch-size 0: the same "
                             f"as --epochs there (default: notebook "
                             f"{PRESETS['notebook']['epochs']})")
    parser.add_argument("--init", choices=SCHEMES,
                        help=f"weight initialisation: uniform(-0.5, 0.5) as in the notebook, "
                             f"or He normal ({_preset_values('init')})")
    parser.add_argument("--seed", type=options.in_range(RANGES["seed"]),
                        help="seed for the weights, the dev split and the shuffling "
                             "(default: 0)")
    parser.add_argument("--log-every", type=options.in_range(RANGES["log_every"]), metavar="EPOCHS",
                        help=f"epochs between progress updates, metrics and checkpoints "
                             f"({_preset_values('log_every')})")
    parser.add_argument("--save", metavar="PATH",
                        help="write a checkpoint (safetensors) at every log point and at "
                             "the end (its folder is created)")
    parser.add_argument("--resume", metavar="PATH", help="continue from a checkpoint")
    parser.add_argument("--metrics", metavar="PATH", help="append metrics as JSON lines")
    parser.add_argument("--plots", metavar="DIR", help="write PNG figures (needs matplotlib)")
    options.add_force_option(parser, "the --save checkpoint and the --plots figures")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="show the progress bar even when stderr is not a terminal "
                            "(by default a terminal shows a bar, and a log a line every "
                            f"{LINE_SECONDS:g} s)")
    shown.add_argument("--no-progress", action="store_true",
                       help="no progress bar, and no progress lines")
    options.add_json_option(parser)
    parallel = parser.add_argument_group(
        "data parallelism (JAX)", "Split every batch over N devices, and over processes on "
        "several hosts. Environment: MULTINET_COORDINATOR, MULTINET_NUM_PROCESSES, "
        "MULTINET_PROCESS_ID, MULTINET_INIT_TIMEOUT.")
    parallel.add_argument("--devices", type=_devices, metavar="N|all",
                          help="devices to split each batch over (default: no split, one "
                               "device; a multi-process run needs it)")
    parallel.add_argument("--coordinator", metavar="HOST:PORT",
                          help="address of process 0, for a multi-process run (default: "
                               "$MULTINET_COORDINATOR, else one process)")
    parallel.add_argument("--num-processes", type=options.in_range(POSITIVE_INTEGER), metavar="N",
                          help="processes in the run, with --coordinator (default: "
                               "$MULTINET_NUM_PROCESSES)")
    parallel.add_argument("--process-id", type=options.in_range(NON_NEGATIVE_INTEGER), metavar="I",
                          help="this process's number, 0 to N-1, with --coordinator "
                               "(default: $MULTINET_PROCESS_ID)")
    parallel.add_argument("--init-timeout", type=options.in_range(POSITIVE), metavar="SECONDS",
                          help="how long to wait for every process to join before giving "
                               "up with an error (default: $MULTINET_INIT_TIMEOUT, else 60)")


def run(args) -> int:
    """``fit``, in two halves: everything checked before the data is loaded with the
    command's data options, then the run. Process 0 prints the summary."""
    _distributed_environment(args)
    # A hyperparameter without a flag (dev_size) is absent from args, as one not given.
    overrides = {name: value for name in HYPERPARAMETERS
                 if (value := getattr(args, name, None)) is not None}
    plan = prepare_fit(
        args.dataset, preset=args.preset, backend=args.backend, resume=args.resume,
        save=args.resume if args.save is None else args.save, metrics=args.metrics,
        plots=args.plots, devices=args.devices, device=args.device, compile=args.compile,
        force=args.force, **overrides)
    args.dataset = plan.dataset_name
    dataset = inputs.load_data(args)
    # True: the bar on a terminal, a plain line every few seconds in a log (as from fit).
    progress = False if args.no_progress else BAR if args.progress else True
    try:
        trained = plan.run(dataset, progress=progress)
    except PlotsNotWritten as exc:  # the summary first: the run itself went well
        _print_summary(args, exc.run.config, exc.run.summary)
        raise
    if trained.backend.is_primary:  # in a multi-process run, process 0 reports
        _print_summary(args, trained.config, trained.summary)
    return 0


def _distributed_environment(args) -> None:
    """``--coordinator`` and the rest become the environment that JAX's multi-process
    setup reads (and ``fit`` checks), as if they had been set by the launcher."""
    for flag, variable in DISTRIBUTED_ENV.items():
        if getattr(args, flag) is not None:
            os.environ[variable] = str(getattr(args, flag))


def _count(number: int, noun: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _print_summary(args, config, summary) -> None:
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{summary['dataset']}, preset {config.preset}: backend {summary['backend']} on "
          f"{summary['device']}, {config.dtype}, "
          f"{'sizes' if config.hidden else 'layers'} {config.describe_network()}, "
          f"{config.optimizer} lr {config.lr}, "
          + (f"batch {config.batch_size}, {_count(config.epochs, 'epoch')}"
             if config.batch_size
             else _count(summary["iterations"], "full-batch iteration")))
    print(f"accuracy: train {summary['train_accuracy']:.4f}  "
          f"dev {summary['dev_accuracy']:.4f}  test {summary['test_accuracy']:.4f}")
    rate = summary["samples_per_second"]
    print(f"time: {summary['seconds']:.2f} s" + (f", {rate:,.0f} samples/s" if rate else ""))
    if summary["checkpoint"]:
        print(f"checkpoint: {summary['checkpoint']}")
    for path in summary.get("plots", []):
        print(f"plot: {path}")
