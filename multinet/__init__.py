"""multinet: one neural network, written once against the Python array API standard and
trained unchanged on NumPy, CuPy, JAX, PyTorch, MLX or any library that implements it.

From Python (a notebook or a script)::

    import multinet
    data = multinet.load_dataset("mnist")        # finds MNIST, or downloads it once
    run = multinet.fit(data, preset="notebook", backend="jax", iterations=100)
    run.summary["test_accuracy"]                 # 0-1; run.history: one record per log point
    labels = run.predict(data.test_images[:10])  # NumPy int64 labels, shape (10,)
    run.save("run.safetensors")
    again = multinet.load("run.safetensors", backend="numpy")

The API (each has a docstring: ``help(multinet.fit)``):

``load_dataset(name="mnist", data_dir=None, *, download=True, verify=True, ...)``
    Find (else download), read and check MNIST or Fashion-MNIST: a ``Dataset`` of uint8
    images ``(n, 28, 28)`` and labels ``(n,)``, train and test.
``fit(dataset=None, *, preset=None, backend=None, progress=True, **overrides)``
    Train the ``"notebook"`` preset (or ``preset="mlp"``, ``preset="cnn"``) with any ``overrides`` of the
    CLI's options (``iterations``, ``epochs``, ``lr``, ``hidden``, ``layers``, ``batch_size``,
    ``optimizer``, ``seed``, ``dtype``, ...), and evaluate; returns a ``Run``.
    ``resume=`` continues a run or a checkpoint.
``Run``
    ``.summary`` (what ``multinet train --json`` prints), ``.history``, ``.params`` (on the
    backend), ``.predict(images)``, ``.probabilities(images)``, ``.evaluate(dataset)``,
    ``.save(path)``, and matplotlib figures that show inline in Jupyter:
    ``.plot_curves()``, ``.plot_predictions(images, labels)``, ``.plot_confusion()``,
    ``.plot_weights()``.
``load(path=None, backend=None)``
    A ``Run`` from a checkpoint, on any backend; with no path, the pretrained network
    shipped with multinet (784-256-10, trained on MNIST: docs/pretrained.md).
``backend_names()``, ``get_backend(name)``, ``Backend``
    The array libraries multinet can use, and what each provides.
``init_params``, ``forward``, ``predict``, ``loss_and_grads``, ``sgd_step``, ``train_step``
    The network itself: pure functions over a dict of arrays ``{"W1", "b1", ...}``, to
    write a training loop of your own on any backend (``examples/``).

Errors the user can fix are ``MultinetError`` subclasses with a one-line message that
names the argument to change (``InvalidArgument``, ``DatasetError``,
``UnknownBackend``, ``BackendUnavailable``, ...); a run that stops early raises
``TrainingInterrupted``, ``TrainingDiverged`` or ``TrainingStopped``, saying what was
saved. Importing multinet imports no array library; each is imported when a backend
that needs it is chosen.
"""

import os as _os
import sys as _sys


def _bind_source_backends() -> None:
    """Make ``multinet.backends`` importable from a source checkout.

    The backends live in the top-level ``backends/`` folder, which pyproject.toml installs
    as ``multinet.backends``. Run from the checkout's root (``python -m multinet``,
    ``python -m pytest``), Python imports this ``multinet/`` folder rather than the
    installed package, and that folder has no ``backends/`` inside: this binds the
    sibling folder in its place. It only acts in a checkout (a ``pyproject.toml`` beside
    both folders) and only when the package has no ``backends`` of its own, so an
    installed multinet is never touched.

    Written with ``os.path``, importing nothing more unless it acts: pathlib and
    importlib.util would add 15 ms to the time before the command can catch a Ctrl-C.
    """
    package = _os.path.dirname(_os.path.realpath(__file__))
    root = _os.path.dirname(package)
    init = _os.path.join(root, "backends", "__init__.py")
    if ("multinet.backends" in _sys.modules
            or _os.path.isdir(_os.path.join(package, "backends"))
            or not _os.path.isfile(_os.path.join(root, "pyproject.toml"))
            or not _os.path.isfile(init)):
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "multinet.backends", init, submodule_search_locations=[_os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    _sys.modules["multinet.backends"] = module
    spec.loader.exec_module(module)


_bind_source_backends()

from multinet._version import __version__ as __version__  # noqa: E402 (after the binding)

TYPE_CHECKING = False  # type checkers know the name; importing typing would take 4 ms
if TYPE_CHECKING:
    from multinet.api.fitting import PlotsNotWritten, fit
    from multinet.api.run import Run, load
    from multinet.data import load_dataset
    from multinet.errors import (BackendUnavailable, DatasetError, DatasetNotFound,
                                 InvalidArgument, MultinetError, TrainingDiverged,
                                 TrainingInterrupted, TrainingStopped, UnknownBackend)
    from multinet.initializers import init_params
    from multinet.network import forward, loss_and_grads, predict, sgd_step, train_step
    from multinet.registry import Backend, backend_names, get_backend
del TYPE_CHECKING

#: Where each public name is defined. It is imported on first use (PEP 562), as are the
#: submodules (``multinet.api``), not by ``import multinet``: the ``multinet`` command
#: imports this package before it can catch a Ctrl-C (``multinet.__main__``), and these
#: imports took a tenth of a second.
_SOURCES = {
    "multinet.api.fitting": ("PlotsNotWritten", "fit"),
    "multinet.api.run": ("Run", "load"),
    "multinet.data": ("load_dataset",),
    "multinet.errors": ("BackendUnavailable", "DatasetError", "DatasetNotFound",
                        "InvalidArgument", "MultinetError", "TrainingDiverged",
                        "TrainingInterrupted", "TrainingStopped", "UnknownBackend"),
    "multinet.initializers": ("init_params",),
    "multinet.network": ("forward", "loss_and_grads", "predict", "sgd_step", "train_step"),
    "multinet.registry": ("Backend", "backend_names", "get_backend"),
}
_SOURCE = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str):
    import importlib
    import importlib.util

    if name in _SOURCE:
        value = getattr(importlib.import_module(_SOURCE[name]), name)
    elif (name.isidentifier() and not name.startswith("_")  # "a.b" is no submodule's
          and importlib.util.find_spec(f"multinet.{name}")):
        value = importlib.import_module(f"multinet.{name}")  # a submodule
    else:
        raise AttributeError(f"module 'multinet' has no attribute {name!r}")
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    """Every name, the public ones not yet imported too; not these two hooks, which
    ``help(multinet)`` would list among the API."""
    return sorted({*globals(), *_SOURCE} - {"__getattr__", "__dir__"})


__all__ = [
    "Backend", "BackendUnavailable", "DatasetError", "DatasetNotFound", "InvalidArgument",
    "MultinetError", "PlotsNotWritten", "Run", "TrainingDiverged", "TrainingInterrupted",
    "TrainingStopped", "UnknownBackend", "backend_names", "fit", "forward", "get_backend",
    "init_params", "load", "load_dataset", "loss_and_grads", "predict", "sgd_step",
    "train_step",
]
