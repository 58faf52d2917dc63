"""Evaluation and probabilities (``multinet/evaluation.py``): a checkpoint evaluates the
same on every backend; read-only arrays are never written into; weights whose outputs
overflow float32 are refused in one line, from every command and from Python, while
weights merely near the limit are evaluated."""

import numpy as np
import pytest

from helpers import (M, NUMPY, SAMPLE_MNIST, assert_one_line_error, run_cli,
                     trained_checkpoint, with_weights, write)
from multinet import checkpoint as ckpt
from multinet.errors import MultinetError
from multinet.registry import get_backend


def test_a_checkpoint_evaluates_the_same_on_every_backend(mnist, tmp_path):
    from multinet.evaluation import evaluate

    path, _ = trained_checkpoint(mnist, tmp_path, epochs=2)
    loaded = ckpt.load(path)
    accuracies = set()
    for name in ("numpy", "strict", "jax"):
        try:
            backend = get_backend(name)
        except MultinetError:
            continue
        accuracies.add(evaluate(loaded.params, backend, mnist, loaded.config.dtype)
                       ["test_accuracy"])
    assert len(accuracies) == 1


def test_probabilities_of_a_float64_checkpoint_on_jax(sample):
    """NumPy views of JAX arrays are read-only: nothing may be written into them."""
    pytest.importorskip("jax")
    from multinet.evaluation import probabilities
    from multinet.initializers import draw_params

    jax = get_backend("jax")
    jax.enable_dtype("float64")
    params = draw_params((784, 10, 10), seed=0)
    probs = probabilities(params, jax, sample.test_images[:3], "float64")
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1)


# --- Weights too large for float32 ------------------------------------------------------

@pytest.mark.parametrize("command", [["evaluate"], ["evaluate", "--json"],
                                     ["predict", "--index", "0"], ["plot", "--out"]],
                         ids=" ".join)
def test_weights_too_large_for_float32_are_one_line_not_numpy_warnings(tmp_path, command):
    """Finite weights (1e30) a checkpoint accepts, whose forward pass overflows: NumPy
    warned of overflows, and the commands went on to report labels read from inf and NaN
    logits (all 0, "nan%")."""
    path = write(tmp_path / "huge.st", with_weights(1e30), M)
    out = [str(tmp_path / "plots")] if command[-1] == "--out" else []
    result = run_cli(command[0], str(path), *command[1:], *out,
                     "--data-dir", str(SAMPLE_MNIST), "--no-verify")
    assert_one_line_error(result, "weights are too large for float32", "inf or NaN",
                          "1 of 1 images" if command[0] == "predict" else "512 of 512 images")
    assert not result.stdout and not (tmp_path / "plots").exists()


def test_the_python_api_refuses_such_weights_too(tmp_path, mnist):
    """``Run.predict`` / ``probabilities`` / ``evaluate`` from Python: the same error,
    no NumPy warnings (pytest runs with warnings as errors where configured; checked
    here with ``warnings`` itself)."""
    import warnings

    import multinet
    from multinet.errors import OutputsNotFinite

    run = multinet.load(write(tmp_path / "huge.st", with_weights(1e30), M))
    images = mnist.test_images[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (run.predict, run.probabilities):
            with pytest.raises(OutputsNotFinite, match="3 of 3 images"):
                call(images)
        with pytest.raises(OutputsNotFinite):
            run.evaluate(mnist)


def test_weights_near_the_limit_are_checked_not_refused(mnist):
    """Past the cheap bound (``check_finite``) but finite all the way: 1e17 into every
    hidden unit and +-3e17 out of it, cancelling, is evaluated (a RuntimeWarning would
    fail here)."""
    from multinet.evaluation import evaluate

    signs = np.where(np.arange(16) % 2, 3e17, -3e17).astype(np.float32)
    tensors = with_weights(1e17, W2=np.repeat(signs[:, None], 10, axis=1))
    params = {k.removeprefix("params/"): v for k, v in tensors.items()
              if k.startswith("params/")}
    bound = 16 * (784 + 1) * 1e17 * 3e17  # |W2|^T (|W1|^T 1 + |b1|), as check_finite
    assert bound > float(np.finfo(np.float32).max) / 2
    result = evaluate(params, NUMPY, mnist, "float32")
    assert result["test_samples"] == len(result["predictions"]) == len(mnist.test_labels)


def test_a_cnn_whose_outputs_overflow_is_refused_and_one_near_the_limit_is_not(mnist):
    """The cheap bound and the check image by image, for a convolutional network: 1e38
    in every kernel overflows on every image with ink; kernels of 1e18 and +-1.31e17 out
    of identical channels (cancelling in the dense layer) put the bound at 4e38, past
    float32's range, while every output stays finite, so it is evaluated."""
    import warnings

    from multinet.errors import OutputsNotFinite
    from multinet.evaluation import evaluate
    from multinet.training.config import TrainConfig
    from multinet.training.prediction import check_finite

    layers = TrainConfig(hidden=(), layers=("conv:2:3x3", "relu", "maxpool:2", "flatten")
                         ).network_layers()
    signs = np.where(np.arange(338) % 2, -1.31e17, 1.31e17)  # channel 0 +, channel 1 -
    params = {"W1": np.full((3, 3, 1, 2), 1e18, np.float32), "b1": np.zeros(2, np.float32),
              "W2": np.repeat(signs[:, None], 10, axis=1).astype(np.float32),
              "b2": np.zeros(10, np.float32)}
    assert 338 * 9 * 1e18 * 1.31e17 > float(np.finfo(np.float32).max)
    images = mnist.test_images[:20]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_finite(params, images, "float32", layers)
        result = evaluate(params, NUMPY, mnist, "float32", layers)
        assert len(result["predictions"]) == len(mnist.test_labels)
        with pytest.raises(OutputsNotFinite, match="on 20 of 20 images"):
            check_finite({**params, "W1": params["W1"] * 1e20}, images, "float32", layers)
