"""The compiled steps (``multinet/training/steps.py``): a minibatch epoch compiled as
one program gives the step-by-step result. (Chunked full-batch gradients against one pass
are in test_parity.py.)"""

import numpy as np
import pytest

from helpers import host
from multinet import optim, parity
from multinet.registry import get_backend


def test_a_whole_epoch_compiled_as_one_program_matches_step_by_step(rng):
    """JAX runs a minibatch epoch as one ``lax.scan``; the result is the step-by-step one."""
    pytest.importorskip("jax", reason="compile_scan is JAX's")
    from multinet.initializers import init_params
    from multinet.training.steps import make_epoch_runner, make_minibatch_step

    jax = get_backend("jax")
    optimizer = optim.Optimizer("adam")
    params = init_params((20, 16, 10), seed=0, backend=jax, dtype="float32", init="he")
    state = optim.init_state(optimizer, params)
    images = jax.asarray(rng.integers(0, 256, (96, 20), dtype=np.uint8))
    labels = jax.asarray(rng.integers(0, 10, 96), "int32")
    rows = jax.asarray(rng.permutation(96).reshape(6, 16), "int32")
    lrs = [optim.learning_rate(1e-2, "cosine", s, 6) for s in range(6)]

    scanned, _, loss_sum, _ = make_epoch_runner(jax, optimizer, "float32")(
        params, state, images, labels, rows, lrs)
    step = jax.compile(make_minibatch_step(optimizer))
    p, s, total = params, state, 0.0
    for i, lr in enumerate(lrs):
        p, s, loss, _ = step(p, s, images, labels, rows[i, :], lr)
        total += float(loss)
    assert parity.max_relative_error(host(scanned, jax), host(p, jax)) \
        <= parity.tolerance("float32", 6)
    assert float(loss_sum) == pytest.approx(total, rel=1e-5)
    assert make_epoch_runner(get_backend("numpy"), optimizer, "float32") is None


def test_a_cnn_epoch_compiled_as_one_program_matches_step_by_step(rng):
    """The layers reach the program of ``SCAN_STEPS`` steps as they reach one step."""
    pytest.importorskip("jax", reason="compile_scan is JAX's")
    from multinet.training.config import TrainConfig
    from multinet.training.loop import initial_state
    from multinet.training.steps import make_epoch_runner, make_minibatch_step

    jax = get_backend("jax")
    config = TrainConfig.from_preset("cnn", layers=("conv:2:3x3", "relu", "maxpool:2",
                                                    "flatten"))
    layers, optimizer = config.network_layers(), config.optimizer_spec()
    state = initial_state(config, jax, 784)
    images = jax.asarray(rng.integers(0, 256, (48, 784), dtype=np.uint8))
    labels = jax.asarray(rng.integers(0, 10, 48), "int32")
    rows = jax.asarray(rng.permutation(48).reshape(3, 16), "int32")
    lrs = [1e-2] * 3

    scanned, _, loss_sum, _ = make_epoch_runner(jax, optimizer, "float32", layers)(
        state.params, state.opt_state, images, labels, rows, lrs)
    step = jax.compile(make_minibatch_step(optimizer, layers=layers))
    p, s, total = state.params, state.opt_state, 0.0
    for i, lr in enumerate(lrs):
        p, s, loss, _ = step(p, s, images, labels, rows[i, :], lr)
        total += float(loss)
    assert scanned["W1"].shape == (3, 3, 1, 2)
    assert parity.max_relative_error(host(scanned, jax), host(p, jax)) \
        <= parity.tolerance("float32", 3)
    assert float(loss_sum) == pytest.approx(total, rel=1e-5)
