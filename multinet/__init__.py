"""multinet: one network, written against the array API standard, on NumPy, CuPy and JAX.

The network is a handful of pure functions over a dict of arrays (``multinet.network``);
``multinet.registry`` picks the array library. Importing this package imports no array
library: ``init_params`` (which draws with NumPy) is loaded on first use.
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

from multinet.errors import BackendUnavailable, DatasetError, MultinetError, UnknownBackend
from multinet.network import forward, loss_and_grads, predict, sgd_step, train_step
from multinet.registry import Backend, backend_names, get_backend

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendUnavailable", "DatasetError", "MultinetError", "UnknownBackend",
    "backend_names", "forward", "get_backend", "init_params", "loss_and_grads", "predict",
    "sgd_step", "train_step",
]


def __getattr__(name):
    if name == "init_params":
        from multinet.initializers import init_params

        return init_params
    raise AttributeError(f"module 'multinet' has no attribute {name!r}")
