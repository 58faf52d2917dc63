"""The errors multinet raises on purpose.

Every one of them is a user-facing condition (a wrong name, a missing package, a bad
file): the CLI prints its message as one line and exits with status 2. Anything else
escaping is a bug in multinet and is allowed to show its traceback.

A message that tells the user what to pass names the argument through ``argument()``:
as the Python API spells it (``data_dir=FOLDER``), unless the command line is running
the code, which sets its own wording (``--data-dir FOLDER``) with ``spelled()``. The
library never names a command-line flag itself; the CLI translates.
"""

from __future__ import annotations

import contextlib
import signal
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator


class MultinetError(Exception):
    """Base class: a condition the user can fix, described in one line."""


class UnknownBackend(MultinetError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailable(MultinetError, RuntimeError):
    """The backend is registered but cannot run here (missing package, no device, ...)."""


class DatasetError(MultinetError, ValueError):
    """A dataset file is missing, unreadable or not what it claims to be."""


class DatasetNotFound(DatasetError):
    """No searched folder holds the dataset's four files (and none of them was unreadable):
    the one data error that downloading can cure."""


class InvalidArgument(MultinetError, ValueError):
    """An argument of the Python API has the wrong type, shape or value; the message names
    it."""


class TrainingDiverged(MultinetError):
    """The loss, or a parameter or optimizer-state array, stopped being finite."""


class TrainingInterrupted(MultinetError):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run; its state was saved to
    ``path`` (None: nothing was saved). ``signum``: the signal's number."""

    def __init__(self, message: str, path: Path | None, signum: int = signal.SIGINT):
        super().__init__(message)
        self.path = path
        self.signum = signum


class TrainingStopped(MultinetError):
    """The run could not go on (a checkpoint or the metrics could not be written, memory
    ran out); the message says where its state was saved instead, if anywhere."""


class OutputsNotFinite(MultinetError, ArithmeticError):
    """The forward pass overflows the parameters' dtype: the network's outputs are inf or
    NaN, so whatever it would predict means nothing."""


#: ``argument``'s ``value`` when the message names the argument without a value.
NOT_GIVEN = object()


def _python_argument(name: str, value: object, meta: str | None) -> str:
    if meta is not None:
        return f"{name}={meta}"
    return f"{name}=" if value is NOT_GIVEN else f"{name}={value!r}"


def _python_download(dataset: str) -> str:
    return (f"call multinet.load_dataset({dataset!r}) with neither, which downloads it "
            "into the per-user cache")


@dataclass(frozen=True)
class Spelling:
    """How an interface words what the user can do, for error messages."""

    #: ``argument(name, value, meta) -> text``: pass the Python API's argument ``name``.
    argument: Callable[[str, object, "str | None"], str]
    #: ``download(dataset) -> text``: how to download a dataset (a clause after "or").
    download: Callable[[str], str]


#: The Python API's wording, used unless ``spelled`` says otherwise.
PYTHON = Spelling(argument=_python_argument, download=_python_download)
_spelling: ContextVar[Spelling] = ContextVar("multinet_spelling", default=PYTHON)


def argument(name: str, value: object = NOT_GIVEN, *, meta: str | None = None) -> str:
    """How the user passes the Python API's argument ``name``, for an error message.

    From Python: ``argument("data_dir", meta="FOLDER")`` is ``data_dir=FOLDER``,
    ``argument("name", "fashion-mnist")`` is ``name='fashion-mnist'`` and
    ``argument("lr")`` is ``lr=``. Under ``spelled(...)`` (the CLI) it is the
    interface's own (``--data-dir FOLDER``, ``--dataset fashion-mnist``, ``--lr``);
    ``value`` is ``NOT_GIVEN`` there when none was given.
    """
    return _spelling.get().argument(name, value, meta)


def download_advice(dataset: str) -> str:
    """How to download ``dataset``, in the words of the interface in use: a clause to
    follow "or" (``call multinet.load_dataset('mnist') with neither, ...``; from the
    CLI, ``run 'multinet data fetch --dataset mnist'``)."""
    return _spelling.get().download(dataset)


@contextlib.contextmanager
def spelled(spelling: Spelling) -> Iterator[None]:
    """Within this block (this thread or task), messages use ``spelling``: how the
    command line makes them name its own flags and commands."""
    token = _spelling.set(spelling)
    try:
        yield
    finally:
        _spelling.reset(token)
