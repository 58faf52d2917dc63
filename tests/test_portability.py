"""The network at the letter of the standard: a batch size the library does not know as an
int, and arrays without devices (see ``tests/shims.py``), under array-api-strict's flags
that forbid data-dependent shapes, as a symbolic (ndonnx) or lazy (Dask) library would."""

import math

import array_api_strict
import numpy as np
import pytest

from multinet.initializers import draw_params
from multinet.network import forward, loss_and_grads, predict, train_step

from shims import Shim

SIZES = (20, 8, 5)
#: The float64 results of the same math on NumPy and on array-api-strict agree to
#: rounding; 1e-12 leaves room for a different summation order and nothing more.
RTOL = 1e-12


@pytest.fixture(autouse=True)
def no_data_dependent_shapes():
    with array_api_strict.ArrayAPIStrictFlags(data_dependent_shapes=False,
                                              boolean_indexing=False):
        yield


def problem(seed=0, n=9):
    rng = np.random.default_rng(seed)
    params = draw_params(SIZES, seed=seed)
    return params, rng.random((n, SIZES[0])), rng.integers(0, SIZES[-1], n)


def on(shim, params, x, y):
    put = shim.asarray_from_numpy
    return {k: put(v) for k, v in params.items()}, put(x), put(y, np.int64)


def assert_matches_numpy(shim):
    params, x, y = problem()
    ref_loss, ref_grads = loss_and_grads(params, x, y)
    loss, grads = loss_and_grads(*on(shim, params, x, y))
    np.testing.assert_allclose(float(loss), ref_loss, rtol=RTOL)
    for key in params:
        np.testing.assert_allclose(grads[key].to_numpy(), ref_grads[key], rtol=RTOL,
                                   atol=RTOL * np.abs(ref_grads[key]).max())
    new_params, _, acc = train_step(*on(shim, params, x, y), 0.5)
    ref_params, _, ref_acc = train_step(params, x, y, 0.5)
    assert float(acc) == pytest.approx(float(ref_acc))
    for key in params:
        np.testing.assert_allclose(new_params[key].to_numpy(), ref_params[key], rtol=RTOL)
    np.testing.assert_array_equal(predict(*on(shim, params, x, y)[:2]).to_numpy(),
                                  predict(params, x))


@pytest.mark.parametrize("unknown", [None, math.nan], ids=["symbolic-None", "lazy-nan"])
def test_a_batch_size_the_library_does_not_know(unknown):
    shim = Shim(unknown=unknown)
    x = on(shim, *problem())[1]
    assert forward(on(shim, *problem())[0], x).shape[0] is unknown  # the shim is in effect
    assert_matches_numpy(shim)


def test_arrays_without_devices():
    shim = Shim(unknown="known", devices=False)
    with pytest.raises(TypeError, match="device"):  # the shim is in effect
        shim.arange(3, device=None)
    with pytest.raises(AttributeError):
        shim.asarray_from_numpy(np.zeros(2)).device
    assert_matches_numpy(shim)


def test_both_at_once():
    assert_matches_numpy(Shim(unknown=None, devices=False))
