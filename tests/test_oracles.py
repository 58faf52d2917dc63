"""Independent oracles for the hand-written backprop: finite differences and jax.grad.

Parity tests compare backends with each other, so a mistake in the shared network code
would pass them all (unless it changes a shape). These compare the gradients with two
derivations that share nothing with ``loss_and_grads``.
"""

import functools
import math

import numpy as np
import pytest

from multinet import layers as L
from multinet import network
from multinet.initializers import draw_layer_params, draw_params
from multinet.layers import parse_layers
from multinet.parity import relative_error

SIZES = [(6, 5, 4), (7, 5, 4, 3), (5, 4, 3, 3, 6)]


def problem(sizes, n=11, seed=0):
    rng = np.random.default_rng(seed)
    params = draw_params(sizes, seed=seed)
    return params, rng.random((n, sizes[0])), rng.integers(0, sizes[-1], n)


def finite_differences(params, x, y, h=1e-6, layers=None):
    """Central differences of the loss, one parameter entry at a time, in float64."""
    grads = {}
    for key, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[key][index] = value[index] + h
            up = float(network.loss(shifted, x, y, layers))
            shifted[key][index] = value[index] - h
            down = float(network.loss(shifted, x, y, layers))
            grad[index] = (up - down) / (2 * h)
        grads[key] = grad
    return grads


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(map(str, s)))
def test_backprop_matches_central_finite_differences(sizes):
    params, x, y = problem(sizes)
    _, grads = network.loss_and_grads(params, x, y)
    numeric = finite_differences(params, x, y)
    for key in params:
        # Central differences with h = 1e-6 are good to ~1e-9 here (h^2 truncation,
        # eps/h rounding); a wrong formula is off by O(1).
        assert grads[key].shape == params[key].shape
        assert relative_error(grads[key], numeric[key]) < 1e-7, key


@pytest.mark.parametrize("sizes", [*SIZES, (784, 10, 10)], ids=lambda s: "-".join(map(str, s)))
def test_backprop_matches_jax_grad(sizes):
    jax = pytest.importorskip("jax", reason="jax.grad oracle needs JAX (pip install jax)")
    from multinet.registry import get_backend
    from multinet.initializers import to_backend

    backend = get_backend("jax")
    backend.enable_dtype("float64")
    host_params, x, y = problem(sizes, n=64)
    params = to_backend(host_params, backend, "float64")
    x, y = backend.asarray(x, "float64"), backend.asarray(y, "int32")
    _, grads = network.loss_and_grads(params, x, y)
    automatic = jax.grad(network.loss)(params, x, y)
    for key in params:
        assert relative_error(np.asarray(grads[key]), np.asarray(automatic[key])) < 1e-12, key


def test_loss_is_the_mean_cross_entropy_of_the_softmax():
    params, x, y = problem((6, 5, 4), n=9)
    logits = network.forward(params, x)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # naive is fine here
    expected = -np.mean(np.log(probs[np.arange(len(y)), y]))
    assert float(network.loss(params, x, y)) == pytest.approx(expected, rel=1e-13)


def test_softmax_stays_finite_where_the_naive_one_overflows():
    params, x, y = problem((6, 5, 4), n=9)
    params["W2"] = params["W2"] * 1e4  # logits in the thousands: exp overflows float64
    with np.errstate(over="ignore", invalid="ignore"):
        logits = network.forward(params, x)
        naive = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.abs(logits).max() > 1000 and not np.all(np.isfinite(naive))
    loss, grads = network.loss_and_grads(params, x, y)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_bias_gradient_is_per_unit_not_one_scalar():
    params, x, y = problem((6, 5, 4), n=9)
    _, grads = network.loss_and_grads(params, x, y)
    for key in ("b1", "b2"):
        assert grads[key].shape == params[key].shape
        assert len(set(np.round(grads[key], 12))) > 1  # the notebook gave every unit one value


# --- Convolutional networks ---------------------------------------------------------------
# Small stacks that between them cover valid and same padding (odd and even kernels),
# several input and output channels, max- and average pooling with left-over rows.
CNNS = {
    "same-max-valid-avg": (("conv:3:3x3:same, relu, maxpool:2, conv:4:3x3:valid, relu, "
                            "avgpool:2, flatten, dense:5"), 8),
    "even-same-avg-max": (("conv:2:2x2:same, relu, avgpool:2, conv:3:3x3:same, relu, "
                           "maxpool:3, flatten, dense:4"), 9),
    "valid-pool-before-relu": ("conv:4:5x5:valid, maxpool:2, relu, flatten, dense:3", 12),
}


def cnn_problem(name, ties, n=5, seed=0):
    """Layers, float64 parameters, images and labels. With ``ties``, small integers for
    pixels (zeros mostly) and weights: every sum is exact, so windows hold equal maxima
    that come from different pixels, and the tie rule decides the gradients below."""
    text, side = CNNS[name]
    layers = parse_layers(text)
    rng = np.random.default_rng(seed)
    params = draw_layer_params(layers, side * side, seed=seed, init="he")
    if ties:
        params = {k: rng.integers(-1, 2, v.shape).astype(float) for k, v in params.items()}
        x = rng.choice([0.0, 0.0, 1.0, 2.0], (n, side * side))
    else:
        x = rng.standard_normal((n, side * side))
    return layers, params, x, rng.integers(0, layers[-1].size, n)


@pytest.mark.parametrize("name", CNNS)
def test_cnn_backprop_matches_central_finite_differences(name):
    """Inputs without ties: at a tie the loss has a kink, and differences straddle it."""
    layers, params, x, y = cnn_problem(name, ties=False)
    _, grads = network.loss_and_grads(params, x, y, layers)
    numeric = finite_differences(params, x, y, layers=layers)
    for key in params:
        assert grads[key].shape == params[key].shape
        assert relative_error(grads[key], numeric[key]) < 1e-7, key


def lax_loss(params, x, y, layers):
    """The same network written independently, with JAX's own convolution and pooling:
    ``lax.conv_general_dilated`` (NHWC, HWIO) and ``lax.reduce_window``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    side = math.isqrt(x.shape[1])
    a, number = jnp.reshape(x, (x.shape[0], side, side, 1)), 0
    for layer in layers:
        if layer.kind in ("dense", "conv"):
            number += 1
            W, b = params[f"W{number}"], params[f"b{number}"]
            a = (a @ W if layer.kind == "dense" else lax.conv_general_dilated(
                a, W, (1, 1), layer.padding.upper(), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=lax.Precision.HIGHEST)) + b
        elif layer.kind == "relu":
            a = jax.nn.relu(a)
        elif layer.kind == "flatten":
            a = jnp.reshape(a, (a.shape[0], -1))
        else:
            window = (1, layer.size, layer.size, 1)
            if layer.kind == "maxpool":
                a = lax.reduce_window(a, -jnp.inf, lax.max, window, window, "VALID")
            else:
                a = lax.reduce_window(a, 0.0, lax.add, window, window, "VALID") / layer.size**2
    log_probs = jax.nn.log_softmax(a, axis=1)
    return -jnp.mean(log_probs[jnp.arange(a.shape[0]), y])


@functools.cache
def lax_gradient():
    """``jax.grad`` of ``lax_loss``, compiled once per network (the layers are static)."""
    import jax

    return jax.jit(jax.grad(lax_loss), static_argnums=3)


@pytest.mark.parametrize("ties", [False, True], ids=["no-ties", "ties"])
@pytest.mark.parametrize("name", CNNS)
def test_cnn_backprop_matches_jax_grad_of_lax_convolution_and_pooling(name, ties):
    """``lax.reduce_window``'s max gradient also goes to the first maximum of a window in
    row-major order, so the two agree on ties too, to float64 rounding."""
    pytest.importorskip("jax", reason="the jax.grad oracle needs JAX (pip install jax)")
    from multinet.registry import get_backend

    get_backend("jax").enable_dtype("float64")
    layers, params, x, y = cnn_problem(name, ties)
    if ties:
        assert tied_windows(params, x, layers) > 0
    _, grads = network.loss_and_grads(params, x, y, layers)
    automatic = lax_gradient()(params, x, y, layers)
    for key in params:
        assert relative_error(grads[key], np.asarray(automatic[key])) < 1e-12, key


def tied_windows(params, x, layers):
    """Windows of the first pooling layer whose largest value occurs more than once and
    is not 0 (ties among ReLU's zeros change no gradient: ReLU stops them)."""
    a, number = x, 0
    for layer in layers:
        if layer.kind == "conv":
            number += 1
            a = L.conv_forward(a, params[f"W{number}"], params[f"b{number}"], layer.padding)[0]
        elif layer.kind == "relu":
            a = L.relu_forward(a)[0]
        elif layer.kind.endswith("pool"):
            break
    n, h, w, c, size = *a.shape, layer.size
    a = a[:, :h // size * size, :w // size * size, :]
    windows = a.reshape(n, h // size, size, w // size, size, c).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(*windows.shape[:4], size * size)
    top = windows.max(axis=-1)
    return int(np.sum(((windows == top[..., None]).sum(axis=-1) > 1) & (top != 0)))
