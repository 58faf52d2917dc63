"""Shapes, dtypes and namespaces of every public network function, on every backend."""

import numpy as np
import pytest
from array_api_compat import array_namespace

from multinet import forward, init_params, loss_and_grads, predict, sgd_step, train_step
from multinet.initializers import draw_params, to_host
from multinet.network import layer_sizes

SIZES = [(784, 10, 10), (784, 32, 16, 10), (5, 3)]


def batch(backend, dtype, rng, n=7, features=784, classes=10):
    x = backend.asarray(rng.random((n, features)), dtype)
    y = backend.asarray(rng.integers(0, classes, n), "int32")
    return x, y


def assert_on_backend(backend, array, shape, dtype=None):
    assert array_namespace(array) is array_namespace(backend.asarray(np.zeros(1, np.float32)))
    assert tuple(array.shape) == shape
    if dtype is not None:
        assert array.dtype == backend.dtype(dtype)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(map(str, s)))
def test_init_params_shapes_dtypes_and_keys(backend_dtype, sizes):
    backend, dtype = backend_dtype
    params = init_params(sizes, seed=0, backend=backend, dtype=dtype)
    assert list(params) == [k for i in range(1, len(sizes)) for k in (f"W{i}", f"b{i}")]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        assert_on_backend(backend, params[f"W{i}"], (fan_in, fan_out), dtype)
        assert_on_backend(backend, params[f"b{i}"], (fan_out,), dtype)
    assert layer_sizes(params) == sizes


def test_every_backend_starts_from_the_same_weights(backend_dtype):
    backend, dtype = backend_dtype
    host = to_host(init_params((784, 10, 10), seed=3, backend=backend, dtype=dtype), backend)
    for key, reference in draw_params((784, 10, 10), seed=3).items():
        np.testing.assert_array_equal(host[key], reference.astype(dtype))


def test_notebook_init_is_uniform_minus_half_to_half():
    params = draw_params((784, 10, 10), seed=0)
    values = np.concatenate([v.ravel() for v in params.values()])
    assert -0.5 <= values.min() < -0.45 and 0.45 < values.max() < 0.5


def test_he_init_scales_with_fan_in_and_zeroes_biases():
    params = draw_params((784, 256, 10), seed=0, init="he")
    assert abs(params["W1"].std() - np.sqrt(2 / 784)) < 0.002
    assert not params["b1"].any() and not params["b2"].any()


@pytest.mark.parametrize("sizes", [(0, 10), (784,), ()])
def test_init_params_rejects_impossible_sizes(sizes):
    with pytest.raises(ValueError, match="sizes"):
        draw_params(sizes, seed=0)


def test_forward_predict_loss_grads_step(backend_dtype, rng):
    backend, dtype = backend_dtype
    params = init_params((784, 10, 10), seed=0, backend=backend, dtype=dtype)
    x, y = batch(backend, dtype, rng)

    assert_on_backend(backend, forward(params, x), (7, 10), dtype)
    labels = predict(params, x)
    assert_on_backend(backend, labels, (7,))
    assert set(backend.to_numpy(labels).tolist()) <= set(range(10))

    loss, grads = loss_and_grads(params, x, y)
    assert_on_backend(backend, loss, (), dtype)
    assert np.isfinite(float(backend.to_numpy(loss)))
    assert list(grads) == list(params)
    for key in params:
        assert_on_backend(backend, grads[key], tuple(params[key].shape), dtype)

    before = to_host(params, backend)
    updated = sgd_step(params, grads, 0.1)
    assert list(updated) == list(params)
    for key in params:
        assert_on_backend(backend, updated[key], tuple(params[key].shape), dtype)
        np.testing.assert_array_equal(backend.to_numpy(params[key]), before[key])  # no mutation


def test_compiled_train_step_matches_the_pieces(backend_dtype, rng):
    backend, dtype = backend_dtype
    params = init_params((784, 16, 10), seed=1, backend=backend, dtype=dtype)
    x, y = batch(backend, dtype, rng, n=33)
    new_params, loss, acc = backend.compile(train_step)(params, x, y, 0.5)
    ref_loss, grads = loss_and_grads(params, x, y)
    expected = sgd_step(params, grads, 0.5)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(loss), backend.to_numpy(ref_loss), rtol=rtol)
    for key in params:
        np.testing.assert_allclose(backend.to_numpy(new_params[key]),
                                   backend.to_numpy(expected[key]), rtol=rtol, atol=rtol)
    assert 0.0 <= float(backend.to_numpy(acc)) <= 1.0
