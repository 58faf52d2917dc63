"""Every backend matches the NumPy float64 reference, level by level.

The reference and the tolerance policy live in ``multinet.parity``; this file chooses
the inputs: a fixed 2,048-image MNIST slice trained for 100 full-batch steps, inputs
that break naive code (a batch of one, all-zero images, logits near +-1000, a hidden
layer of width one, one to three hidden layers, odd batch sizes), and a small
convolutional network on MNIST images (two convolutions, max- and average pooling; the
images' zeros tie most pooling windows).
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multinet import parity
from multinet.data import flatten
from multinet.registry import get_backend


def _random_problem(seed, n, sizes, **kwargs):
    rng = np.random.default_rng(seed)
    return parity.Problem(x=rng.random((n, sizes[0])), y=rng.integers(0, sizes[-1], n),
                          sizes=sizes, steps=5, checkpoints=(1, 5), **kwargs)


EDGE_CASES = {
    "batch-of-1": _random_problem(1, 1, (784, 10, 10)),
    "zero-images": dataclasses.replace(_random_problem(2, 9, (784, 10, 10)),
                                       x=np.zeros((9, 784))),
    "logits-1000": _random_problem(3, 17, (784, 10, 10), logit_scale=150.0),
    "hidden-width-1": _random_problem(4, 13, (20, 1, 3)),
    "depth-1-odd-batch": _random_problem(5, 37, (50, 7, 10), lr=0.1),
    "depth-2-odd-batch": _random_problem(6, 101, (50, 16, 8, 10), lr=0.1),
    "depth-3-odd-batch": _random_problem(7, 31, (50, 16, 8, 4, 10), lr=0.05),
}
#: Small enough for every backend in seconds, and still a sum of 12 x 28 x 28 = 9,408
#: terms in the first weight gradient: past the tolerance's constant part.
CNN_LAYERS = ("conv:2:3x3:same, relu, maxpool:2, conv:3:3x3, relu, avgpool:2, flatten, "
              "dense:10")
PROBLEMS = ["mnist-2048", *EDGE_CASES, "cnn-mnist-12"]


def cnn_problem(mnist, **kwargs):
    return parity.cnn_problem(mnist, samples=12, steps=2, layers=CNN_LAYERS, **kwargs)


@pytest.fixture(scope="session")
def results(request):
    """Runs computed once per (problem, backend, dtype) and shared by the level tests."""
    return {}


@pytest.fixture(params=PROBLEMS)
def problem(request):
    if request.param == "mnist-2048":
        mnist = request.getfixturevalue("mnist")
        return parity.Problem(x=flatten(mnist.train_images[:2048]),
                              y=mnist.train_labels[:2048], sizes=(784, 10, 10), steps=100)
    if request.param == "cnn-mnist-12":
        return cnn_problem(request.getfixturevalue("mnist"))
    return EDGE_CASES[request.param]


@pytest.fixture
def levels(backend_dtype, problem, results, request):
    """``{level: (error, tolerance)}`` of this backend, dtype and problem."""
    backend, dtype = backend_dtype
    name = request.node.callspec.params["problem"]
    if (name, "reference") not in results:
        results[name, "reference"] = parity.reference(problem)
    key = (name, backend.name, str(backend.device), dtype)
    if key not in results:
        run = parity.run(backend, dtype, problem)
        results[key] = parity.compare(run, results[name, "reference"], dtype, problem)
    return results[key]


def assert_within(levels, dtype, *names):
    eps = np.finfo(dtype).eps
    for name in names:
        error, bound = levels[name]
        assert error <= bound, (f"{name}: relative error {error:.3g} ({error / eps:.1f} eps) "
                                f"exceeds {bound:.3g} ({bound / eps:.0f} eps)")


def test_forward_logits_and_loss(levels, backend_dtype):
    assert_within(levels, backend_dtype[1], "forward", "loss")


def test_gradient_of_every_parameter(levels, backend_dtype):
    assert_within(levels, backend_dtype[1], "grads")


def test_one_update_step(levels, backend_dtype):
    assert_within(levels, backend_dtype[1], "step")


def test_training_run_parameters_and_loss_curve(levels, backend_dtype):
    assert_within(levels, backend_dtype[1], "train", "curve")


def test_final_predictions(levels):
    mismatches, _ = levels["predictions"]
    assert mismatches == 0, f"{mismatches:.0f} predictions differ where the reference is no tie"


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_shapes_and_scales(backend_dtype, data):
    """Random depth (1-3 hidden layers), widths, odd batches and logit scales."""
    backend, dtype = backend_dtype
    depth = data.draw(st.integers(1, 3), label="hidden layers")
    widths = data.draw(st.lists(st.integers(1, 20), min_size=depth, max_size=depth))
    sizes = (data.draw(st.integers(1, 40), label="inputs"), *widths,
             data.draw(st.integers(2, 12), label="classes"))
    problem = _random_problem(data.draw(st.integers(0, 2**32 - 1), label="seed"),
                              data.draw(st.integers(1, 33), label="batch"), sizes,
                              logit_scale=data.draw(st.sampled_from([1.0, 1e3])))
    problem = dataclasses.replace(problem, steps=0, checkpoints=())
    found = parity.compare(parity.run(backend, dtype, problem), parity.reference(problem),
                           dtype, problem)
    assert_within(found, dtype, "forward", "loss", "grads", "step")


#: Lazy libraries, through the generic backend: every operation builds a task graph, and
#: the full 100-step rows of both dtypes took 14 s on a quiet machine, 73 s on a loaded
#: one; these rows train 5 steps.
LAZY = ("module://dask.array",)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", LAZY)
def test_a_lazy_library_matches_at_every_level(name, dtype, mnist):
    pytest.importorskip(name.removeprefix("module://"))
    backend = get_backend(name)
    backend.enable_dtype(dtype)
    problem = parity.mnist_problem(mnist, steps=5)
    levels = parity.compare(parity.run(backend, dtype, problem), parity.reference(problem),
                            dtype, problem)
    assert_within(levels, dtype, "forward", "loss", "grads", "step", "train", "curve")
    mismatches, _ = levels["predictions"]
    assert mismatches == 0


def test_a_silent_fallback_to_numpy_is_caught():
    """A backend whose arrays are really NumPy's fails, however right its numbers."""
    strict = get_backend("strict")
    impostor = dataclasses.replace(strict, asarray=get_backend("numpy").asarray)
    with pytest.raises(parity.NamespaceMismatch, match="expected array_api_strict"):
        parity.run(impostor, "float32", EDGE_CASES["batch-of-1"])


def test_the_cnn_problem_is_checked_with_its_reduction_length(mnist):
    problem = cnn_problem(mnist)
    assert problem.lengths()["backward"] == 12 * 28 * 28
    ref = parity.reference(problem)
    levels = parity.compare(ref, ref, "float32", problem)
    assert levels["grads"] == (0.0, parity.tolerance("float32", 0, 12 * 28 * 28))
    assert levels["forward"] == (0.0, parity.tolerance("float32"))


def test_tolerance_policy_values():
    assert parity.tolerance("float32") == pytest.approx(32 * 2.0**-23)
    assert parity.tolerance("float64", 99) == pytest.approx(320 * 2.0**-52)
    assert parity.relative_error([1.0, np.nan], [1.0, 2.0]) == np.inf
    assert parity.relative_error([0.0], [0.0]) == 0.0


def round_to_tf32(array, dtype=None):
    """float32 with TF32's 10-bit mantissa (what GPU matrix units do to float32 inputs)."""
    array = np.asarray(array, dtype=dtype)
    if array.dtype != np.float32:
        return array
    bits = array.view(np.uint32).astype(np.uint64)
    return ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)


def test_a_backend_that_loses_float32_precision_is_caught(mnist):
    """Negative control for the tolerance: rounding only the inputs and initial weights to
    TF32 (real TF32 rounds inside every product, and errs more) already fails."""
    lossy = dataclasses.replace(get_backend("numpy"), asarray=round_to_tf32)
    problem = parity.mnist_problem(mnist)
    levels = parity.compare(parity.run(lossy, "float32", problem), parity.reference(problem),
                            "float32", problem)
    failing = {name for name, (error, bound) in levels.items() if error > bound}
    assert {"forward", "grads", "step", "train"} <= failing


def test_a_backend_that_loses_float32_precision_is_caught_on_a_cnn(mnist):
    lossy = dataclasses.replace(get_backend("numpy"), asarray=round_to_tf32)
    problem = cnn_problem(mnist)
    levels = parity.compare(parity.run(lossy, "float32", problem), parity.reference(problem),
                            "float32", problem)
    failing = {name for name, (error, bound) in levels.items() if error > bound}
    assert {"forward", "grads", "step", "train"} <= failing, levels


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_full_batch_gradients_match_one_pass(backend_dtype, chunk, rng):
    """Splitting a full batch into chunks (how eager backends run it) changes the
    summation order only: within the one-pass tolerance."""
    from multinet import network
    from multinet.initializers import init_params, to_host
    from multinet.training.steps import chunked_backprop

    backend, dtype = backend_dtype
    params = init_params((30, 8, 10), seed=1, backend=backend, dtype=dtype)
    x = backend.asarray(rng.random((203, 30)), dtype)
    y = backend.asarray(rng.integers(0, 10, 203), "int32")
    loss, grads, logits = network.backprop(params, x, y)
    chunk_loss, chunk_grads, chunk_accuracy = chunked_backprop(params, x, y, chunk)
    assert parity.relative_error(backend.to_numpy(chunk_loss), backend.to_numpy(loss)) \
        <= parity.tolerance(dtype)
    assert parity.max_relative_error(to_host(chunk_grads, backend), to_host(grads, backend)) \
        <= parity.tolerance(dtype)
    assert float(backend.to_numpy(chunk_accuracy)) == pytest.approx(
        float(backend.to_numpy(network.accuracy(logits, y))))


@pytest.mark.parametrize("spec", [dict(name="sgd"), dict(name="momentum"),
                                  dict(name="adam"), dict(name="adam", weight_decay=0.01)],
                         ids=["sgd", "momentum", "adam", "adam-decay"])
def test_in_place_updates_match_the_functional_ones(backend_dtype, spec, rng):
    """Where arrays are mutable, training updates them in place (``optim.update_in_place``):
    the same steps, rounded differently, so within the tolerance of as many steps; the
    functional update's inputs are not touched by it, the in-place one's are its result."""
    from multinet import optim
    from multinet.initializers import init_params, to_host

    backend, dtype = backend_dtype
    if not backend.mutable_arrays:
        pytest.skip(f"{backend.name} does not declare its arrays mutable "
                    f"(Backend.mutable_arrays: JAX's and MLX's are not; the generic path "
                    f"cannot tell): it never updates in place")
    optimizer = optim.Optimizer(**spec)
    steps = 5
    functional = init_params((30, 8, 10), seed=1, backend=backend, dtype=dtype)
    mutable = init_params((30, 8, 10), seed=1, backend=backend, dtype=dtype)
    state, mutable_state = optim.init_state(optimizer, functional), optim.init_state(
        optimizer, mutable)
    for _ in range(steps):
        grads = {k: backend.asarray(rng.standard_normal(v.shape), dtype)
                 for k, v in functional.items()}
        before = to_host(functional, backend)
        functional, state = optim.update(optimizer, functional, grads, state, 0.01)
        same = mutable
        mutable, mutable_state = optim.update_in_place(optimizer, mutable, grads,
                                                       mutable_state, 0.01)
        assert all(mutable[k] is same[k] for k in same)
        assert not any(np.array_equal(before[k], v)
                       for k, v in to_host(functional, backend).items())
    assert parity.max_relative_error(to_host(mutable, backend), to_host(functional, backend)) \
        <= parity.tolerance(dtype, steps)
    for key in state.get("v", state.get("m", {})):
        for part in ("m", "v"):
            if part in state:
                assert parity.relative_error(backend.to_numpy(mutable_state[part][key]),
                                             backend.to_numpy(state[part][key])) \
                    <= parity.tolerance(dtype, steps)
