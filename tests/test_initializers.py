"""Starting weights (``multinet/initializers.py``): every backend starts from the same
numbers, and a bad argument to ``multinet.init_params`` is one ``InvalidArgument``
naming it."""

import numpy as np
import pytest

import multinet
from multinet.initializers import draw_params


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
