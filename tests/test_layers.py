"""The layers: their texts, their shapes, max-pooling's tie rule on every backend, and
the blocked sum of a convolution's bias gradient.

The gradients themselves are checked against finite differences and an independent
convolution in test_oracles.py, and on every backend in test_parity.py.
"""

import numpy as np
import pytest

from multinet import layers as L
from multinet.layers import Layer, param_shapes, parse_layer, parse_layers, shapes
from multinet.rounding import SAFETY, relative_error

CANONICAL = ["dense:128", "conv:32:5x5:same", "conv:6:3x3:valid", "maxpool:2", "avgpool:3",
             "flatten", "relu"]


@pytest.mark.parametrize("text", CANONICAL)
def test_a_canonical_layer_text_reads_back_as_itself(text):
    layer = parse_layer(text)
    assert str(layer) == text
    assert parse_layer(layer) == layer == parse_layer(str(layer))


@pytest.mark.parametrize("text, canonical", [
    ("conv:32:5x5", "conv:32:5x5:valid"), ("conv:32:5", "conv:32:5x5:valid"),
    ("  maxpool:2 ", "maxpool:2"), ("dense:007", "dense:7")])
def test_a_short_form_reads_as_its_canonical_text(text, canonical):
    assert str(parse_layer(text)) == canonical


def test_layers_read_from_one_comma_separated_text_or_a_sequence():
    expected = (Layer("conv", 6, 5, "same"), Layer("relu"), Layer("maxpool", 2),
                Layer("flatten"), Layer("dense", 10))
    assert parse_layers("conv:6:5x5:same, relu,maxpool:2 , flatten,dense:10") == expected
    assert parse_layers(["conv:6:5x5:same", Layer("relu"), "maxpool:2", "flatten",
                         Layer("dense", 10)]) == expected


BAD = ["", "pool:2", "Dense:3", "dense", "dense:0", "dense:-1", "dense:1.5", "dense:+3",
       "dense:3:4", "dense:²", "conv:6", "conv:6:5x4", "conv:6:5x5x5", "conv:6:x",
       "conv:0:5x5", "conv:6:0x0", "conv:6:5x5:full", "conv:6:5x5:same:1", "maxpool:0",
       "avgpool", "relu:1", "flatten:2", "conv:six:5x5"]


@pytest.mark.parametrize("spec", BAD)
def test_a_bad_layer_text_is_one_value_error_naming_it(spec):
    with pytest.raises(ValueError) as caught:
        parse_layer(spec)
    message = str(caught.value)
    assert repr(spec) in message and "\n" not in message, message
    with pytest.raises(ValueError, match="layer"):
        parse_layers([f"dense:3, {spec}" if spec else "dense:3", spec])


@pytest.mark.parametrize("spec", [None, 12, 1.5, ("dense", 3)])
def test_a_layer_that_is_not_text_is_one_value_error(spec):
    with pytest.raises(ValueError, match="a layer is text"):
        parse_layer(spec)
    with pytest.raises(ValueError):
        parse_layers(spec if spec is not None else [spec])


def test_a_layer_record_with_bad_numbers_is_refused_like_its_text():
    with pytest.raises(ValueError, match="'dense:0'"):
        parse_layer(Layer("dense", 0))
    with pytest.raises(ValueError, match="padding"):
        parse_layer(Layer("conv", 4, 3, "full"))


LENET = parse_layers("conv:6:5x5:same, relu, maxpool:2, conv:16:5x5, relu, maxpool:2, "
                     "flatten, dense:120, relu, dense:10")


def test_shapes_follow_each_layer_from_flat_rows():
    assert shapes(LENET, 784) == [(784,), (28, 28, 6), (28, 28, 6), (14, 14, 6),
                                  (10, 10, 16), (10, 10, 16), (5, 5, 16), (400,), (120,),
                                  (120,), (10,)]
    # Pools drop what does not fill a window; an even kernel's "same" keeps the size.
    assert shapes(parse_layers("conv:2:4x4:same, avgpool:2, maxpool:3"), 49) == [
        (49,), (7, 7, 2), (3, 3, 2), (1, 1, 2)]


def test_param_shapes_number_the_dense_and_conv_layers_in_order():
    assert param_shapes(LENET, 784) == {
        "W1": (5, 5, 1, 6), "b1": (6,), "W2": (5, 5, 6, 16), "b2": (16,),
        "W3": (400, 120), "b3": (120,), "W4": (120, 10), "b4": (10,)}
    assert list(param_shapes(LENET, 784)) == ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"]


@pytest.mark.parametrize("stack, features, fragment", [
    ("conv:2:3x3, dense:10", 784, "put 'flatten' before it"),
    ("conv:2:7x7", 36, "does not fit 6x6"),
    ("maxpool:5", 16, "does not fit 4x4"),
    ("conv:2:3x3:same", 785, "not square"),
    ("flatten, conv:2:3x3", 784, "'flatten' before it gives rows"),
    ("dense:64, relu, conv:4:3x3, flatten", 784, "'dense:64' before it gives rows"),
    ("conv:4:3x3, flatten, maxpool:2, flatten", 784, "'flatten' before it gives rows"),
    ("dense:36, relu, avgpool:2, flatten", 784, "only the network's input is read as images"),
])
def test_a_stack_that_does_not_fit_is_one_value_error(stack, features, fragment):
    with pytest.raises(ValueError, match=fragment):
        shapes(parse_layers(stack), features)


@pytest.mark.parametrize("stack", ["conv:2:3x3:same", "maxpool:2", "avgpool:3"])
def test_a_spatial_layer_given_rows_passes_back_a_gradient_shaped_like_its_rows(stack, rng):
    """A convolution or pool reads the network's flat input as images; the gradient it
    passes back has the input's shape, rows, whatever layer is below."""
    layer = parse_layers(stack)[0]
    x = rng.random((3, 36))
    params = (rng.standard_normal((3, 3, 1, 2)), np.zeros(2)) if layer.kind == "conv" else ()
    forward, backward = (getattr(L, f"{layer.kind}_forward"),
                         getattr(L, f"{layer.kind}_backward"))
    if layer.kind == "conv":
        out, saved = forward(x, *params, layer.padding)
        d_in, _ = backward(saved, np.ones_like(out), params[0])
    else:
        out, saved = forward(x, layer.size)
        d_in, _ = backward(saved, np.ones_like(out), layer.size)
    assert out.ndim == 4 and d_in.shape == x.shape


# --- The tie rule, on every backend --------------------------------------------------------

def first_maximum_gradient(a, delta, size):
    """Max-pooling's gradient by plain Python loops: each window's gradient goes to the
    first of its maxima in row-major order (``list.index``), and nowhere else."""
    out = np.zeros_like(a)
    n, h, w, c = a.shape
    for i, y, x, k in np.ndindex(n, h // size, w // size, c):
        window = [a[i, y * size + r, x * size + s, k] for r in range(size) for s in range(size)]
        first = window.index(max(window))
        out[i, y * size + first // size, x * size + first % size, k] = delta[i, y, x, k]
    return out


def tied_images():
    """Two channels of 5 x 7 with every kind of tie in 2 x 2 windows: all four equal, two
    or three equal maxima in each position, all zeros; the last row and column are left
    over (and hold the largest values, which must not count)."""
    first = np.array([[1, 1, 0, 2, 3, 0, 9],
                      [1, 1, 2, 1, 0, 3, 9],
                      [0, 0, -1, 4, 2, 5, 9],
                      [0, 0, 4, 4, 7, 7, 9],
                      [9, 9, 9, 9, 9, 9, 9]], dtype=float)
    return np.stack([first, 10 - first], axis=-1)[None]


def test_max_pooling_sends_each_gradient_to_the_first_maximum_on_every_backend(
        backend_dtype):
    backend, dtype = backend_dtype
    images = tied_images()
    delta = np.arange(1.0, 13.0).reshape(1, 2, 3, 2)
    pooled, saved = L.maxpool_forward(backend.asarray(images, dtype), 2)
    gradient, _ = L.maxpool_backward(saved, backend.asarray(delta, dtype), 2)
    expected = first_maximum_gradient(images, delta, 2)
    # The first of four tied ones; the first of two tied twos, not the one below it.
    assert expected[0, 0, 0, 0] == 1 and (expected[0, 0, 3, 0], expected[0, 1, 2, 0]) == (3, 0)
    np.testing.assert_array_equal(backend.to_numpy(gradient), expected)
    np.testing.assert_array_equal(backend.to_numpy(pooled), images[:, :4, :6].reshape(
        1, 2, 2, 3, 2, 2).max(axis=(2, 4)))


def test_all_zero_windows_after_relu_pass_no_gradient_below_on_every_backend(backend, rng):
    """ReLU's zeros tie every window they fill; the rule picks the window's first entry,
    and ReLU's derivative there (0 where its output is 0) stops it."""
    dtype = "float32"
    z = -rng.random((2, 4, 4, 3))
    z[0, :2, :2, 0] = [[0.0, 0.5], [0.5, 0.25]]  # one window with a positive maximum
    activations, relu_saved = L.relu_forward(backend.asarray(z, dtype))
    _, saved = L.maxpool_forward(activations, 2)
    delta = np.ones((2, 2, 2, 3))
    routed, _ = L.maxpool_backward(saved, backend.asarray(delta, dtype), 2)
    expected = first_maximum_gradient(np.maximum(z, 0), delta, 2)
    np.testing.assert_array_equal(backend.to_numpy(routed), expected)
    below, _ = L.relu_backward(relu_saved, routed)
    only = np.zeros_like(z)
    only[0, 0, 1, 0] = 1.0  # the first of the two tied 0.5s, the one positive maximum
    np.testing.assert_array_equal(backend.to_numpy(below), only)


def test_average_pooling_shares_each_gradient_and_gives_left_over_entries_none(backend):
    delta = np.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    _, saved = L.avgpool_forward(backend.asarray(np.ones((1, 5, 5, 1)), "float32"), 2)
    gradient = backend.to_numpy(L.avgpool_backward(saved, backend.asarray(delta, "float32"),
                                                    2)[0])
    expected = np.zeros((1, 5, 5, 1))
    expected[0, :4, :4, 0] = np.kron(delta[0, :, :, 0], np.ones((2, 2))) / 4
    np.testing.assert_array_equal(gradient, expected)


# --- The conv bias gradient's blocked sum ---------------------------------------------------

def test_blocked_sum_is_the_sum_over_images_and_positions(rng):
    delta = rng.standard_normal((5, 3, 4, 2))
    np.testing.assert_allclose(L.blocked_sum(np, delta), delta.sum(axis=(0, 1, 2)),
                               rtol=1e-13)


def test_blocked_sum_keeps_float32_rounding_short_where_one_long_sum_does_not(rng):
    """Terms of one sign (the worst case) over 256 images of 28 x 28: NumPy adds along
    axis 0 one row after another, so the one long sum errs by about sqrt(L) / 8 eps
    (L = 200,704); per image first, then over the batch, the rounding stays within the
    constant part of the tolerance (docs/parity.md measures both)."""
    delta = rng.random((256, 28, 28, 4)).astype(np.float32)
    exact = delta.astype(np.float64).sum(axis=(0, 1, 2))
    eps = np.finfo(np.float32).eps
    long_sum = relative_error(np.sum(delta.reshape(-1, 4), axis=0), exact) / eps
    blocked = relative_error(L.blocked_sum(np, delta), exact) / eps
    assert blocked <= SAFETY / 4 and long_sum >= 5 * blocked, (long_sum, blocked)
