"""The MLX backend (``backends/mlx.py``), beyond the parity suite that runs it like
every other backend: a compiled step traces once for every learning rate, and float64 is
refused where MLX does not compute in float64."""

import numpy as np
import pytest

from multinet import network
from multinet.errors import BackendUnavailable
from multinet.initializers import init_params
from multinet.registry import get_backend


def mlx_backend():
    pytest.importorskip("mlx.core", reason="MLX is not installed (multinet[mlx], or "
                                           "mlx[cpu] on Linux)")
    return get_backend("mlx")


def test_mlx_compiles_a_step_once_for_every_learning_rate(rng):
    """mx.compile traces again for each new Python number; the backend passes the rate as
    an array of the parameters' dtype, so a schedule costs no retracing. (MLX itself may
    trace once more on the second call, when the first call's inputs are still being
    evaluated asynchronously: at most two traces, however many rates.)"""
    backend = mlx_backend()
    traces = []

    def step(params, x, y, lr):
        traces.append(lr)
        return network.train_step(params, x, y, lr)

    params = init_params((784, 8, 10), seed=0, backend=backend, dtype="float32")
    x = backend.asarray(rng.random((16, 784)), "float32")
    y = backend.asarray(rng.integers(0, 10, 16), "int32")
    compiled = backend.compile(step)
    for lr in (0.5, 0.25, 0.125, 0.0625, 0.03125):
        new, loss, _ = compiled(params, x, y, lr)
        expected = network.sgd_step(params, network.loss_and_grads(params, x, y)[1], lr)
        for key in params:
            assert new[key].dtype == params[key].dtype
            np.testing.assert_allclose(backend.to_numpy(new[key]),
                                       backend.to_numpy(expected[key]), rtol=1e-5, atol=1e-6)
    assert len(traces) <= 2


def test_mlx_float64_is_refused_where_it_is_not_float64():
    backend = mlx_backend()
    import mlx.core as mx

    from multinet.backends.mlx import _float64_exp_error

    if backend.platform == "cpu" and _float64_exp_error(mx) <= 1e-13:
        backend.enable_dtype("float64")  # an MLX whose CPU float64 is float64
        return
    with pytest.raises(BackendUnavailable, match="float64"):
        backend.enable_dtype("float64")
