"""Independent oracles for the hand-written backprop: finite differences and jax.grad.

Parity tests compare backends with each other, so a mistake in the shared network code
would pass them all (unless it changes a shape). These compare the gradients with two
derivations that share nothing with ``loss_and_grads``.
"""

import numpy as np
import pytest

from multinet import network
from multinet.initializers import draw_params
from multinet.parity import relative_error

SIZES = [(6, 5, 4), (7, 5, 4, 3), (5, 4, 3, 3, 6)]


def problem(sizes, n=11, seed=0):
    rng = np.random.default_rng(seed)
    params = draw_params(sizes, seed=seed)
    return params, rng.random((n, sizes[0])), rng.integers(0, sizes[-1], n)


def finite_differences(params, x, y, h=1e-6):
    """Central differences of the loss, one parameter entry at a time, in float64."""
    grads = {}
    for key, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[key][index] = value[index] + h
            up = float(network.loss(shifted, x, y))
            shifted[key][index] = value[index] - h
            down = float(network.loss(shifted, x, y))
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
