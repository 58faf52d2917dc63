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
    Train the ``"notebook"`` preset (or ``preset="mlp"``) with any ``overrides`` of the
    CLI's options (``iterations``, ``epochs``, ``lr``, ``hidden``, ``batch_size``,
    ``optimizer``, ``seed``, ``dtype``, ...), and evaluate; returns a ``Run``.
    ``resume=`` continues a run or a checkpoint.
``Run``
    ``.summary`` (what ``multinet train --json`` prints), ``.history``, ``.params`` (on the
    backend), ``.predict(images)``, ``.probabilities(images)``, ``.evaluate(dataset)``,
    ``.save(path)``, and matplotlib figures that show inline in Jupyter:
    ``.plot_curves()``, ``.plot_predictions(images, labels)``, ``.plot_confusion()``.
``load(path, backend=None)``
    A ``Run`` from a checkpoint, on any backend.
``backend_names()``, ``get_backend(name)``, ``Backend``
    The array libraries multinet can use, and what each provides.
``init_params``, ``forward``, ``predict``, ``loss_and_grads``, ``sgd_step``, ``train_step``
    The network itself: pure functions over a dict of arrays ``{"W1", "b1", ...}``, to
    write a training loop of your own on any backend (``examples/``).

Errors the user can fix are ``MultinetError`` subclasses with a one-line message that
names the argument to change (``InvalidArgument``, ``DatasetError``,
``UnknownBackend``, ``BackendUnavailable``, ...). Importing multinet imports no array
library; each is imported when a backend that needs it is chosen.
"""

import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path


def _bind_source_backends() -> None:
    """Make ``multinet.backends`` importable from a source checkout.

    The backends live in the top-level ``backends/`` folder, which pyproject.toml installs
    as ``multinet.backends``. Run from the checkout's root (``python -m multinet``,
    ``python -m pytest``), Python imports this ``multinet/`` folder rather than the
    installed package, and that folder has no ``backends/`` inside: this binds the
    sibling folder in its place. It only acts in a checkout (a ``pyproject.toml`` beside
    both folders) and only when the package has no ``backends`` of its own, so an
    installed multinet is never touched.
    """
    package = _Path(__file__).resolve().parent
    folder = package.parent / "backends"
    if ("multinet.backends" in _sys.modules or (package / "backends").is_dir()
            or not (package.parent / "pyproject.toml").is_file()
            or not (folder / "__init__.py").is_file()):
        return
    spec = _importlib_util.spec_from_file_location(
        "multinet.backends", folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules["multinet.backends"] = module
    spec.loader.exec_module(module)


_bind_source_backends()

from multinet.api import PlotsNotWritten, Run, fit, init_params, load, load_dataset
from multinet.errors import (BackendUnavailable, DatasetError, DatasetNotFound,
                             InvalidArgument, MultinetError, UnknownBackend)
from multinet.network import forward, loss_and_grads, predict, sgd_step, train_step
from multinet.registry import Backend, backend_names, get_backend

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendUnavailable", "DatasetError", "DatasetNotFound", "InvalidArgument",
    "MultinetError", "PlotsNotWritten", "Run", "UnknownBackend", "backend_names", "fit",
    "forward",
    "get_backend", "init_params", "load", "load_dataset", "loss_and_grads", "predict",
    "sgd_step", "train_step",
]
