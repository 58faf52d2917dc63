"""What several commands share: argparse's number type (``in_range``: every number an
option takes is checked against a ``multinet.checks.Range``, worded as the Python API
words it), and the option groups for the backend, the data, a checkpoint and ``--json``,
each defined once."""

from __future__ import annotations

import argparse

from multinet.catalog import DATASETS
from multinet.checks import Range
from multinet.registry import DTYPES
from multinet.registry import ENV_VAR as BACKEND_ENV_VAR


def in_range(allowed: Range):
    """An argparse type: a number in ``allowed``, worded as the Python API words it.

    Parameters
    ----------
    allowed : multinet.checks.Range
        The numbers accepted; an integer range reads the text as an ``int``, any other
        as a ``float``.

    Returns
    -------
    callable
        ``parse(text)``, which raises ``argparse.ArgumentTypeError`` for text that is not
        a number (``not a number: 'x'``; for an integer range ``not an integer: '1e3'``)
        or outside the range (``must be a finite number > 0, got -1``).
    """
    kind = int if allowed.integer else float

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not {'an integer' if allowed.integer else 'a number'}: {text!r}") from None
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_backend_options(parser) -> None:
    """``--backend``, ``--dtype``, ``--device`` and ``--compile``: what to train on."""
    parser.add_argument("--backend", metavar="NAME",
                        help=f"array library: numpy, jax, cupy, torch, mlx, strict, a "
                             f"plugin, or module://IMPORT_NAME for any array-API library "
                             f"(default: ${BACKEND_ENV_VAR}, else numpy)")
    parser.add_argument("--dtype", choices=DTYPES,
                        help="floating-point type of parameters and data (default: float32)")
    parser.add_argument("--device", metavar="NAME",
                        help="device, for backends with a choice: cuda, cuda:1, mps, cpu "
                             "(default: the backend's first; torch: cuda, then mps, then cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="use the backend's optional compiler (torch.compile: about a "
                             "minute to compile on two CPU cores); JAX and MLX always compile")


def add_data_options(parser, *, sources: bool = True, checkpoint: bool = False,
                     download: bool = True) -> None:
    """``--dataset``, ``--data-dir``, ``--mirror``, ``--offline``, ``--no-verify`` and,
    with ``sources``, ``--data-source``: where the data comes from. With ``checkpoint``,
    the dataset defaults to the checkpoint's (the help says so). Without ``download``
    (a command that only reads files on disk), no ``--mirror`` and no ``--offline``:
    ``args.offline`` is always True."""
    parser.add_argument("--dataset", choices=DATASETS,
                        help="dataset (default: the checkpoint's)" if checkpoint
                        else "dataset (default: mnist)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the four IDX files, .gz or raw, or a torchvision "
                             "root (default: $MULTINET_DATA, else the cache)")
    if not download:
        parser.set_defaults(offline=True, mirror=None)
    else:
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


def add_checkpoint_argument(parser, checkpoint_help: str = "a checkpoint from train --save",
                            *, optional: bool = False) -> None:
    """``CKPT``, the checkpoint a command reads. With ``optional``, it may be left out
    (``None``), and the help says that the pretrained network is used then."""
    if optional:
        parser.add_argument("checkpoint", metavar="CKPT", nargs="?",
                            help=f"{checkpoint_help} (default: the pretrained network "
                                 "shipped with multinet, docs/pretrained.md)")
    else:
        parser.add_argument("checkpoint", metavar="CKPT", help=checkpoint_help)


def add_checkpoint_options(parser, checkpoint_help: str = "a checkpoint from train --save",
                           *, optional: bool = False) -> None:
    """The checkpoint to look at (``CKPT``, ``add_checkpoint_argument``), the
    ``--backend`` to run it on and the data options (the dataset defaults to the
    checkpoint's): ``evaluate``, ``predict`` and ``plot``."""
    add_checkpoint_argument(parser, checkpoint_help, optional=optional)
    parser.add_argument("--backend", metavar="NAME",
                        help="backend to run on (any: checkpoints move between them; "
                             "default: $MULTINET_BACKEND, else numpy)")
    add_data_options(parser, sources=False, checkpoint=True)


def add_json_option(parser) -> None:
    """``--json``: the result as one JSON object."""
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on stdout")


def add_force_option(parser, replaced: str) -> None:
    """``--force``: replace an existing output of another kind (``replaced`` says what
    is written), never one of the command's own inputs."""
    parser.add_argument("--force", action="store_true",
                        help=f"replace {replaced} even where an existing file there is of "
                             "another kind (without it, such a file is refused); never "
                             "one of the command's own inputs")
