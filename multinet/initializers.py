"""Starting weights, drawn on the host with NumPy and then moved to the backend.

Drawing on the host with one seeded generator (instead of each library's own RNG) is what
makes every backend, and every dtype, start from the same numbers: float32 weights are
the float64 draws rounded once.
"""

from __future__ import annotations

import numpy as np

from multinet.checks import NON_NEGATIVE_INTEGER, is_integer
from multinet.errors import InvalidArgument
from multinet.registry import DTYPES, Backend, get_backend

#: ``uniform``: U(-0.5, 0.5) for weights and biases, the notebook's ``rand(...) - 0.5``.
#: ``he``: N(0, 2 / fan_in) weights and zero biases, the usual choice for ReLU nets.
SCHEMES = ("uniform", "he")


def draw_params(sizes, *, seed: int, init: str = "uniform") -> dict[str, np.ndarray]:
    """float64 NumPy parameters for layer sizes such as ``(784, 10, 10)``; a bad argument
    is ``InvalidArgument`` naming it."""
    widths = tuple(sizes) if hasattr(sizes, "__iter__") and not isinstance(sizes, str) else ()
    if not widths or not all(is_integer(s) for s in widths):
        raise InvalidArgument(f"sizes must be a sequence of layer widths (integers), inputs "
                              f"first, such as (784, 10, 10); got {sizes!r}")
    sizes = tuple(int(s) for s in widths)
    if len(sizes) < 2 or min(sizes) < 1:
        raise InvalidArgument(f"sizes must be at least (inputs, outputs), all >= 1; got "
                              f"{sizes}")
    if seed not in NON_NEGATIVE_INTEGER:
        raise InvalidArgument(f"seed must be {NON_NEGATIVE_INTEGER}, got {seed!r}")
    if not isinstance(init, str) or init not in SCHEMES:
        raise InvalidArgument(f"unknown init {init!r}; choose one of {', '.join(SCHEMES)}")
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if init == "uniform":
            params[f"W{i}"] = rng.random((fan_in, fan_out)) - 0.5
            params[f"b{i}"] = rng.random(fan_out) - 0.5
        else:
            params[f"W{i}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
            params[f"b{i}"] = np.zeros(fan_out)
    return params


def to_backend(host_params: dict, backend: Backend, dtype: str | None = None) -> dict:
    """Copy a dict of NumPy arrays onto ``backend`` (``dtype=None`` keeps each dtype)."""
    return {name: backend.asarray(value, dtype) for name, value in host_params.items()}


def to_host(params: dict, backend: Backend) -> dict:
    """NumPy copies of a dict of ``backend``'s arrays."""
    return {name: np.asarray(backend.to_numpy(value)) for name, value in params.items()}


def init_params(sizes, *, seed: int, backend: Backend | str | None = None,
                dtype: str = "float32", init: str = "uniform") -> dict:
    """Starting parameters ``{"W1", "b1", ..., "Wk", "bk"}`` on a backend.

    They are drawn on the host with NumPy's ``default_rng(seed)`` in float64 and then
    rounded once to ``dtype`` on the backend, so every backend and dtype starts from the
    same numbers.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, inputs first: ``(784, 10, 10)`` is the notebook's network (784
        inputs, 10 hidden ReLU units, 10 outputs). ``Wi`` is ``(sizes[i-1], sizes[i])``
        and ``bi`` is ``(sizes[i],)``; any number of hidden layers works.
    seed : int
        Seed of the generator.
    backend : Backend, str or None
        A ``Backend``, a backend's name, or None for ``$MULTINET_BACKEND``, else numpy.
    dtype : {"float32", "float64"}
        On JAX, float64 needs ``backend.enable_dtype("float64")`` first (it switches JAX
        to 64-bit mode).
    init : {"uniform", "he"}
        ``"uniform"``: U(-0.5, 0.5) weights and biases, the notebook's. ``"he"``:
        N(0, 2 / fan_in) weights and zero biases (He et al. 2015, "Delving Deep into
        Rectifiers").

    Returns
    -------
    dict of str to array
        The parameters, arrays of ``backend`` in ``dtype``.

    Raises
    ------
    InvalidArgument
        For ``sizes`` that are not two or more integers >= 1, a ``seed`` that is not an
        integer >= 0, an unknown ``init`` or ``dtype``, or a ``backend`` that is neither
        a name nor a ``Backend``.
    UnknownBackend, BackendUnavailable
        For a backend that is not known, or cannot run here.
    """
    if backend is not None and not isinstance(backend, (str, Backend)):
        raise InvalidArgument(f"backend must be a backend's name, a Backend or None, got "
                              f"{type(backend).__name__}")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InvalidArgument(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not isinstance(backend, Backend):
        backend = get_backend(backend)
    return to_backend(draw_params(sizes, seed=seed, init=init), backend, dtype)
