"""The optimizers and the learning-rate schedule (``multinet/optim.py``). That the
in-place updates match the functional ones, on every backend, is in test_parity.py."""

import numpy as np
import pytest

from multinet import optim
from multinet.registry import get_backend


def test_optimizer_state_is_new_arrays_and_adam_matches_the_formula():
    xp = get_backend("numpy").xp
    params = {"W1": xp.asarray([[1.0, -2.0]]), "b1": xp.asarray([0.5])}
    grads = {"W1": xp.asarray([[0.1, 0.2]]), "b1": xp.asarray([-0.3])}
    opt = optim.Optimizer("adam")
    state = optim.init_state(opt, params)
    new, new_state = optim.update(opt, params, grads, state, 0.01)
    assert float(state["t"]) == 0 and float(new_state["t"]) == 1
    # First Adam step moves each parameter by lr * sign(g) (up to eps).
    np.testing.assert_allclose(new["W1"], [[0.99, -2.01]], rtol=1e-6)
    np.testing.assert_allclose(new["b1"], [0.51], rtol=1e-6)
    assert params["W1"][0, 0] == 1.0  # nothing mutated


def test_cosine_schedule():
    assert optim.learning_rate(1.0, "cosine", 0, 100) == 1.0
    assert optim.learning_rate(1.0, "cosine", 50, 100) == pytest.approx(0.5)
    assert optim.learning_rate(1.0, "constant", 99, 100) == 1.0
