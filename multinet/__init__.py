"""multinet: one network, written against the array API standard, on NumPy, CuPy and JAX.

The network is a handful of pure functions over a dict of arrays (``multinet.network``);
``multinet.registry`` picks the array library. Importing this package imports no array
library: ``init_params`` (which draws with NumPy) is loaded on first use.
"""

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
