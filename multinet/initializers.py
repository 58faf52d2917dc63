"""Starting weights, drawn on the host with NumPy and then moved to the backend.

Drawing on the host with one seeded generator (instead of each library's own RNG) is what
makes every backend, and every dtype, start from the same numbers: float32 weights are
the float64 draws rounded once. Every network is drawn the same way
(``draw_layer_params``): its parameters in order, ``W1, b1, W2, b2...``, from one
generator; a multilayer perceptron (``draw_params``) is the stack of dense layers its
widths make.
"""

from __future__ import annotations

import math

import numpy as np

from multinet.checks import NON_NEGATIVE_INTEGER, POSITIVE_INTEGER, is_integer
from multinet.data import IMAGE_SHAPE
from multinet.errors import InvalidArgument
from multinet.layers import param_shapes, parse_layers
from multinet.network import mlp_layers
from multinet.registry import DTYPES, Backend, get_backend

#: ``uniform``: U(-0.5, 0.5) for weights and biases, the notebook's ``rand(...) - 0.5``.
#: ``he``: N(0, 2 / fan_in) weights and zero biases, the usual choice for ReLU nets.
SCHEMES = ("uniform", "he")
#: Inputs of a network given by its layers, unless told: 28 x 28 pixels.
IMAGE_FEATURES = math.prod(IMAGE_SHAPE)


def draw_params(sizes, *, seed: int, init: str = "uniform") -> dict[str, np.ndarray]:
    """float64 NumPy parameters of a multilayer perceptron of layer sizes such as
    ``(784, 10, 10)``: ``draw_layer_params`` of its dense layers.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, inputs first.
    seed : int
        Seed of the generator.
    init : {"uniform", "he"}
        The scheme (``SCHEMES``).

    Returns
    -------
    dict of str to numpy.ndarray
        ``W1, b1, ...``, ``Wi`` ``(sizes[i-1], sizes[i])``, ``bi`` ``(sizes[i],)``.

    Raises
    ------
    InvalidArgument
        Naming the argument that is wrong.
    """
    widths = tuple(sizes) if hasattr(sizes, "__iter__") and not isinstance(sizes, str) else ()
    if not widths or not all(is_integer(s) for s in widths):
        raise InvalidArgument(f"sizes must be a sequence of layer widths (integers), inputs "
                              f"first, such as (784, 10, 10); got {sizes!r}")
    sizes = tuple(int(s) for s in widths)
    if len(sizes) < 2 or min(sizes) < 1:
        raise InvalidArgument(f"sizes must be at least (inputs, outputs), all >= 1; got "
                              f"{sizes}")
    return draw_layer_params(mlp_layers(sizes[1:-1], sizes[-1]), sizes[0], seed=seed,
                             init=init)


def draw_layer_params(layers, features: int, *, seed: int,
                      init: str = "uniform") -> dict[str, np.ndarray]:
    """float64 NumPy parameters of any stack of layers, drawn in the order of
    ``multinet.layers.param_shapes`` (``W1, b1, W2, b2...``) from ``default_rng(seed)``.

    ``uniform`` draws every tensor as ``rng.random(shape) - 0.5``; ``he`` draws a weight
    as ``rng.standard_normal(shape) * sqrt(2 / fan_in)``, ``fan_in`` the inputs of one
    output unit (a dense layer's rows, a convolution's ``k * k * C_in``), and leaves the
    biases zero (He et al. 2015, "Delving Deep into Rectifiers").

    Parameters
    ----------
    layers : sequence of Layer or str, or str
        The whole network, output layer included, as ``multinet.layers.parse_layers``
        reads it (``config.network_layers()``, ``network.mlp_layers(...)``, or text such
        as ``"conv:4:5x5:same, relu, maxpool:2, flatten, dense:10"``).
    features : int
        Inputs per sample: 784 for 28 x 28 images (a spatial first layer reads them as
        square images).
    seed : int
        Seed of the generator.
    init : {"uniform", "he"}
        The scheme (``SCHEMES``).

    Returns
    -------
    dict of str to numpy.ndarray
        The parameters, float64, in layer order.

    Raises
    ------
    InvalidArgument
        For layers that cannot be read or do not fit together on ``features`` inputs, a
        stack without a dense or convolutional layer, ``features`` that is not an
        integer >= 1, a bad ``seed`` or an unknown ``init``.
    """
    if features not in POSITIVE_INTEGER:
        raise InvalidArgument(f"features must be {POSITIVE_INTEGER}, got {features!r}")
    if seed not in NON_NEGATIVE_INTEGER:
        raise InvalidArgument(f"seed must be {NON_NEGATIVE_INTEGER}, got {seed!r}")
    if not isinstance(init, str) or init not in SCHEMES:
        raise InvalidArgument(f"unknown init {init!r}; choose one of {', '.join(SCHEMES)}")
    try:
        shapes = param_shapes(parse_layers(layers), int(features))
    except ValueError as error:
        text = str(error)
        raise InvalidArgument(text if text.startswith("layers ") else f"layers: {text}"
                              ) from None
    if not shapes:
        raise InvalidArgument(f"layers: a network needs a dense or conv layer, got "
                              f"{layers!r}")
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes.items():
        if init == "uniform":
            params[name] = rng.random(shape) - 0.5
        elif name.startswith("W"):
            params[name] = rng.standard_normal(shape) * np.sqrt(2.0 / math.prod(shape[:-1]))
        else:
            params[name] = np.zeros(shape)
    return params


def to_backend(host_params: dict, backend: Backend, dtype: str | None = None) -> dict:
    """Copy a dict of NumPy arrays onto ``backend`` (``dtype=None`` keeps each dtype)."""
    return {name: backend.asarray(value, dtype) for name, value in host_params.items()}


def to_host(params: dict, backend: Backend) -> dict:
    """NumPy copies of a dict of ``backend``'s arrays."""
    return {name: np.asarray(backend.to_numpy(value)) for name, value in params.items()}


def init_params(sizes=None, *, seed: int, backend: Backend | str | None = None,
                dtype: str = "float32", init: str = "uniform", layers=None,
                features: int | None = None) -> dict:
    """Starting parameters ``{"W1", "b1", ..., "Wk", "bk"}`` on a backend, for a
    multilayer perceptron of ``sizes`` or for any network of ``layers``.

    They are drawn on the host with NumPy's ``default_rng(seed)`` in float64 and then
    rounded once to ``dtype`` on the backend, so every backend and dtype starts from the
    same numbers.

    Parameters
    ----------
    sizes : sequence of int, optional
        A perceptron's layer widths, inputs first: ``(784, 10, 10)`` is the notebook's
        network (784 inputs, 10 hidden ReLU units, 10 outputs). ``Wi`` is
        ``(sizes[i-1], sizes[i])`` and ``bi`` is ``(sizes[i],)``; any number of hidden
        layers works. Give ``sizes`` or ``layers``.
    seed : int
        Seed of the generator.
    backend : Backend, str or None
        A ``Backend``, a backend's name, or None for ``$MULTINET_BACKEND``, else numpy.
    dtype : {"float32", "float64"}
        On JAX, float64 needs ``backend.enable_dtype("float64")`` first (it switches JAX
        to 64-bit mode).
    init : {"uniform", "he"}
        ``"uniform"``: U(-0.5, 0.5) weights and biases, the notebook's. ``"he"``:
        N(0, 2 / fan_in) weights (``fan_in`` is ``k * k * C_in`` for a convolution) and
        zero biases (He et al. 2015, "Delving Deep into Rectifiers").
    layers : sequence of str or Layer, or str, optional
        The whole network, output layer included, as ``multinet.forward(params, x,
        layers)`` takes it: ``["conv:4:5x5:same", "relu", "maxpool:2", "flatten",
        "dense:10"]``, or the same as one string separated by commas. A convolution's
        ``Wi`` is ``(k, k, C_in, C_out)``, a dense layer's ``(fan_in, units)``.
    features : int, optional
        With ``layers``: the inputs per sample (default 784, 28 x 28 images, which a
        convolution or pool reads as square images).

    Returns
    -------
    dict of str to array
        The parameters, arrays of ``backend`` in ``dtype``.

    Raises
    ------
    InvalidArgument
        For ``sizes`` that are not two or more integers >= 1, ``layers`` that cannot be
        read or do not fit together, both or neither of them, ``features`` without
        ``layers``, a ``seed`` that is not an integer >= 0, an unknown ``init`` or
        ``dtype``, or a ``backend`` that is neither a name nor a ``Backend``.
    UnknownBackend, BackendUnavailable
        For a backend that is not known, or cannot run here.
    """
    if backend is not None and not isinstance(backend, (str, Backend)):
        raise InvalidArgument(f"backend must be a backend's name, a Backend or None, got "
                              f"{type(backend).__name__}")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InvalidArgument(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if (sizes is None) == (layers is None):
        raise InvalidArgument("give sizes (a multilayer perceptron's widths) or layers (any "
                              "network), one of them" if sizes is None else
                              "sizes and layers both describe the network; give one")
    if layers is None and features is not None:
        raise InvalidArgument("features goes with layers; a perceptron's inputs are sizes[0]")
    if not isinstance(backend, Backend):
        backend = get_backend(backend)
    host = (draw_params(sizes, seed=seed, init=init) if layers is None else
            draw_layer_params(layers, IMAGE_FEATURES if features is None else features,
                              seed=seed, init=init))
    return to_backend(host, backend, dtype)
