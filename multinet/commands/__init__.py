"""The ``multinet`` commands: one module each, imported only when its command runs.

``COMMANDS`` lists them in the order ``multinet --help`` shows them, each with the module
that holds it and its one-line summary. The summaries live here, not in the modules, so
that ``multinet --help`` (and a bare ``multinet``) lists every command without importing
any of them, nor NumPy. A command module has a docstring and two functions:

``add_arguments(parser)``
    Add the command's arguments to its ``argparse`` parser.
``run(args) -> int``
    Do the command with the parsed arguments; the exit status. A mistake the user can
    fix is raised as a ``multinet.errors.MultinetError``: the entry module
    (``multinet.cli``) prints it as one line and exits with status 2.

and ``DESCRIPTION``, the text of its ``--help``. Adding a command is a module with these
and one row here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import NamedTuple

#: The exit status of a mistake the user can fix (a wrong option, a missing file...).
EXIT_USAGE = 2


class CommandInfo(NamedTuple):
    """Where a command is written, and how ``multinet --help`` sums it up."""

    #: The import name of the command's module.
    module: str
    #: One line, for the list of commands in ``multinet --help``.
    summary: str


COMMANDS = {
    "train": CommandInfo(
        "multinet.commands.train",
        "train on MNIST (or Fashion-MNIST) and report accuracy"),
    "evaluate": CommandInfo(
        "multinet.commands.evaluate",
        "test accuracy, per-class accuracy and confusion matrix"),
    "predict": CommandInfo(
        "multinet.commands.predict",
        "show a test image, or pictures of digits, with the prediction"),
    "serve": CommandInfo(
        "multinet.commands.serve",
        "a local web page: draw a digit, see every backend's answer"),
    "plot": CommandInfo(
        "multinet.commands.plot",
        "training curves, predictions and confusion matrix as PNG files"),
    "export": CommandInfo(
        "multinet.commands.export",
        "write a checkpoint's network, or its training step, as an ONNX model"),
    "parity": CommandInfo(
        "multinet.commands.parity",
        "compare every backend with the NumPy float64 reference on MNIST"),
    "data": CommandInfo(
        "multinet.commands.data",
        "where the dataset is, verify it, download it"),
    "bench": CommandInfo(
        "multinet.commands.bench",
        "time the workloads on every backend, with ratios to the memory floor and to "
        "PyTorch"),
    "backends": CommandInfo(
        "multinet.commands.backends",
        "list backends and why any cannot run"),
}


def load_command(name: str) -> ModuleType:
    """Import the module of the command ``name``.

    Parameters
    ----------
    name : str
        A key of ``COMMANDS``.

    Returns
    -------
    module
        The command's module, with ``DESCRIPTION``, ``add_arguments`` and ``run``.

    Raises
    ------
    KeyError
        If ``name`` is not a command.
    """
    return importlib.import_module(COMMANDS[name].module)
