"""The tolerance model (multinet.rounding): the bound, the lengths it reads from a
network, the measurements it rests on, and the scale errors are measured against."""

import numpy as np
import pytest

from multinet import network
from multinet.data import flatten
from multinet.initializers import draw_layer_params, draw_params
from multinet.layers import parse_layers
from multinet.rounding import magnitudes, reduction_lengths, relative_error, tolerance
from multinet.training.config import TrainConfig

EPS32, EPS64 = 2.0**-23, 2.0**-52


def test_the_tolerance_is_the_constant_up_to_4096_terms_then_grows_as_their_root():
    assert tolerance("float32") == pytest.approx(32 * EPS32)
    assert tolerance("float32", 0, 4096) == tolerance("float32")
    assert tolerance("float32", 0, 100_352) == pytest.approx(np.sqrt(100_352) / 2 * EPS32)
    assert tolerance("float64", 99, 10**6) == pytest.approx(500 * EPS64 * 10)


def test_reduction_lengths_of_the_notebook_network_leave_its_tolerances_as_they_were():
    """784 inputs, a batch of 2,048: every sum is within the constant's 4,096 terms, so
    the perceptron's parity is checked exactly as before the length term."""
    lengths = reduction_lengths(network.mlp_layers((10,), 10), 784, 2048)
    assert lengths == {"forward": 784, "loss": 2048, "backward": 2048}
    assert all(tolerance("float32", 5, n) == tolerance("float32", 5) for n in lengths.values())


def test_reduction_lengths_of_a_convolutional_network():
    layers = parse_layers("conv:6:5x5:same, relu, maxpool:2, conv:16:5x5, relu, avgpool:2, "
                          "flatten, dense:120, relu, dense:10")
    # forward: the widest sum is dense:120's 400 inputs (5 x 5 x 16); backward: the first
    # convolution's weight gradient, over 128 images x 28 x 28 positions.
    assert reduction_lengths(layers, 784, 128) == {"forward": 400, "loss": 400,
                                                   "backward": 128 * 28 * 28}
    assert reduction_lengths(layers, 784, 1)["backward"] == 28 * 28  # one image's positions


def test_the_length_term_covers_the_worst_summation_order_which_the_constant_does_not(rng):
    """Terms of one sign, added one after another (NumPy along axis 0): the error grows
    like sqrt(L) eps / 8, past the constant at 2**20 terms and within sqrt(L) / 2."""
    errors = {}
    for power in (12, 16, 20):
        terms = rng.random((2**power, 4)).astype(np.float32)
        exact = terms.astype(np.float64).sum(axis=0)
        errors[power] = relative_error(terms.sum(axis=0), exact)
        assert errors[power] <= tolerance("float32", 0, 2**power), (power, errors[power])
    assert errors[20] > tolerance("float32") and errors[20] > 8 * errors[12], errors


def test_the_scale_of_one_layer_is_the_magnitude_of_its_terms(rng):
    params = draw_params((7, 3), seed=1)
    x, y = rng.standard_normal((5, 7)), rng.integers(0, 3, 5)
    scales = magnitudes(params, x, y, 0.1)
    np.testing.assert_allclose(scales["logits"], np.abs(x) @ np.abs(params["W1"])
                               + np.abs(params["b1"]), rtol=1e-15)
    np.testing.assert_allclose(scales["step W1"], np.abs(params["W1"]) + 0.1 * scales["W1"])


def test_the_scale_of_a_deep_network_stays_near_its_results(mnist):
    """Independent roundings add in quadrature through the layers: the scales of the
    cnn preset's logits and gradients stay within 100 times their own size (worst-case
    magnitudes, |W| after |W|, were 5e4 to 2.5e9 times)."""
    layers = TrainConfig.from_preset("cnn").network_layers()
    params = draw_layer_params(layers, 784, seed=0, init="he")
    x, y = flatten(mnist.train_images[:8]) / 255.0, mnist.train_labels[:8]
    _, grads, logits = network.backprop(params, x, y, layers=layers)
    scales = magnitudes(params, x, y, 0.05, layers)
    ratios = {key: np.linalg.norm(scales[key]) / np.linalg.norm(value)
              for key, value in {"logits": logits, **grads}.items()}
    assert all(1 <= ratio <= 100 for ratio in ratios.values()), ratios
