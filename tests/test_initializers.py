"""Starting weights (``multinet/initializers.py``): every backend starts from the same
numbers, and a bad argument to ``multinet.init_params`` is one ``InvalidArgument``
naming it."""

import numpy as np
import pytest

import multinet
from multinet.initializers import SCHEMES, draw_layer_params, draw_params
from multinet.layers import parse_layers
from multinet.network import mlp_layers


def test_every_dtype_starts_from_the_same_draws_rounded_once():
    host = draw_params((784, 10, 10), seed=3)
    for dtype in ("float32", "float64"):
        params = multinet.init_params((784, 10, 10), seed=3, backend="numpy", dtype=dtype)
        assert params["W1"].dtype == np.dtype(dtype)
        assert np.array_equal(params["W1"], host["W1"].astype(dtype))


@pytest.mark.parametrize("arguments, message", [
    (dict(backend=3), "backend must be a backend's name, a Backend or None, got int"),
    (dict(seed="a"), "seed must be an integer >= 0, got 'a'"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(seed=1.5), "seed must be an integer >= 0, got 1.5"),
    (dict(dtype="float16"), "unknown dtype 'float16'; choose one of float32, float64"),
    (dict(init="glorot"), "unknown init 'glorot'; choose one of uniform, he"),
    (dict(sizes=784), "sizes must be a sequence of layer widths (integers), inputs first"),
    (dict(sizes="784"), "got '784'"),
    (dict(sizes=(784, "10", 10)), "got (784, '10', 10)"),
    (dict(sizes=(784, 10.5, 10)), "got (784, 10.5, 10)"),
    (dict(sizes=(784, 0, 10)), "sizes must be at least (inputs, outputs), all >= 1"),
    (dict(sizes=(784,)), "sizes must be at least (inputs, outputs)"),
])
def test_a_bad_argument_is_named(arguments, message):
    """``init_params(..., backend=3)`` was an ``AttributeError`` from the registry."""
    call = {"sizes": (784, 10, 10), "seed": 0, **arguments}
    with pytest.raises(multinet.InvalidArgument) as info:
        multinet.init_params(call.pop("sizes"), **call)
    assert message in str(info.value)


def test_sizes_may_be_any_iterable_of_integers():
    params = multinet.init_params(iter([784, 8, 10]), seed=0, backend="numpy")
    assert params["W1"].shape == (784, 8) and params["W2"].shape == (8, 10)


# --- Any stack of layers, one road ------------------------------------------------------

def notebook_draws(sizes, seed, init):
    """The perceptron's draws as multinet made them before there were layers: per layer
    ``W`` then ``b``, from one generator."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if init == "uniform":
            params[f"W{i}"] = rng.random((fan_in, fan_out)) - 0.5
            params[f"b{i}"] = rng.random(fan_out) - 0.5
        else:
            params[f"W{i}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
            params[f"b{i}"] = np.zeros(fan_out)
    return params


@pytest.mark.parametrize("init", SCHEMES)
@pytest.mark.parametrize("sizes", [(784, 10, 10), (784, 64, 32, 10), (5, 3)])
def test_a_perceptron_draws_the_same_bits_as_before_there_were_layers(sizes, init):
    expected = notebook_draws(sizes, 4, init)
    for drawn in (draw_params(sizes, seed=4, init=init),
                  draw_layer_params(mlp_layers(sizes[1:-1], sizes[-1]), sizes[0], seed=4,
                                    init=init)):
        assert list(drawn) == list(expected)
        for name, value in expected.items():
            assert drawn[name].dtype == np.float64
            assert np.array_equal(drawn[name], value), name


def test_a_convolution_draws_its_kernel_he_scaled_by_the_inputs_of_one_output():
    """``fan_in`` of a ``k x k`` kernel over ``C_in`` channels is ``k * k * C_in``; the
    tensors are drawn in order, ``W1, b1, W2, b2...``, biases zero."""
    layers = parse_layers("conv:3:5x5:same, relu, maxpool:2, conv:4:3x3, relu, flatten, dense:10")
    drawn = draw_layer_params(layers, 784, seed=2, init="he")
    rng = np.random.default_rng(2)
    assert np.array_equal(drawn["W1"], rng.standard_normal((5, 5, 1, 3)) * np.sqrt(2 / 25))
    assert np.array_equal(drawn["W2"], rng.standard_normal((3, 3, 3, 4)) * np.sqrt(2 / 27))
    assert np.array_equal(drawn["W3"], rng.standard_normal((12 * 12 * 4, 10))
                          * np.sqrt(2 / 576))
    assert all(not drawn[b].any() for b in ("b1", "b2", "b3"))
    assert [drawn[b].shape for b in ("b1", "b2", "b3")] == [(3,), (4,), (10,)]


def test_uniform_draws_every_tensor_of_the_layers_in_order():
    drawn = draw_layer_params(("conv:2:3x3", "relu", "flatten", "dense:10"), 784, seed=0)
    rng = np.random.default_rng(0)
    for name, shape in (("W1", (3, 3, 1, 2)), ("b1", (2,)), ("W2", (26 * 26 * 2, 10)),
                        ("b2", (10,))):
        assert np.array_equal(drawn[name], rng.random(shape) - 0.5), name


def test_init_params_takes_layers_from_python_on_a_backend():
    params = multinet.init_params(layers=["conv:2:3x3:same", "relu", "flatten", "dense:10"],
                                  seed=1, backend="numpy", dtype="float64", init="he")
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (3, 3, 1, 2), "b1": (2,), "W2": (28 * 28 * 2, 10), "b2": (10,)}
    small = multinet.init_params(layers="dense:3", features=5, seed=1, backend="numpy")
    assert small["W1"].shape == (5, 3) and small["W1"].dtype == np.float32


@pytest.mark.parametrize("arguments, message", [
    (dict(layers=["conv:2:3y3"]), "layers: layer 'conv:2:3y3': its kernel side must be an"),
    (dict(layers=["cnn:2"]), "layers: unknown layer 'cnn:2'"),
    (dict(layers=["conv:2:30x30", "flatten", "dense:10"]),
     "layers: layer 'conv:2:30x30:valid': a 30x30 kernel does not fit 28x28 images"),
    (dict(layers=["conv:2:3x3", "dense:10"]), "layer 'dense:10' reads rows but gets images"),
    (dict(layers=["relu"]), "layers: a network needs a dense or conv layer"),
    (dict(layers=5), "layers must be a sequence of layers such as"),
    (dict(layers=["dense:10"], features=0), "features must be an integer >= 1, got 0"),
    (dict(layers=["conv:2:3x3"], features=10), "layers: layer 'conv:2:3x3:valid': 10 inputs are not square images"),
    (dict(layers=["dense:10"], sizes=(784, 10)), "sizes and layers both describe the network"),
    (dict(sizes=None), "give sizes (a multilayer perceptron's widths) or layers"),
    (dict(features=784), "features goes with layers"),
    (dict(layers=["dense:10"], init="glorot"), "unknown init 'glorot'"),
])
def test_bad_layers_are_one_invalid_argument_naming_them(arguments, message):
    call = {"sizes": None if "layers" in arguments else (784, 10), "seed": 0, **arguments}
    with pytest.raises(multinet.InvalidArgument) as info:
        multinet.init_params(call.pop("sizes"), backend="numpy", **call)
    assert message in str(info.value) and "\n" not in str(info.value)
