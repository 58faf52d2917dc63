"""Steps captured as CUDA graphs (``Backend.capture_step``, ``backends/graphs.py``) and the
bench's captured workloads (``multinet/captured.py``).

On the CPU, the static buffers, the copies a replay makes and the results run through a
stand-in for the graph (``cpu_graph``: the captured call's outputs are fixed buffers that
each launch rewrites), on NumPy. The GPU cases run every backend whose ``capture_step``
is set (CuPy and PyTorch on a CUDA device) and skip elsewhere with the reason: a captured
step equals the eager step within the float32 tolerance, and a run with captured steps
ends in the same state (the checkpoint's parameters and optimizer state) as one without.
"""

import dataclasses

import numpy as np
import pytest

from helpers import assert_same_run, mnist_slice
from multinet import optim
from multinet.backends import graphs
from multinet.captured import captured_call, captured_epoch, captured_predict, flatten
from multinet.errors import InvalidArgument
from multinet.initializers import init_params
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import train
from multinet.training.state import own_copy
from multinet.training.steps import make_minibatch_step, make_step


def cpu_graph(call):
    """``record`` on the CPU: warm up, then the captured call's outputs become the graph's
    buffers, and each launch runs the step again into them, as a replay rewrites them."""
    for _ in range(graphs.WARMUP_CALLS):
        call()
    outputs = tuple(o if isinstance(o, np.ndarray) else np.array(o) for o in call())

    def launch():
        for buffer, value in zip(outputs, call()):
            if value is not buffer:
                np.copyto(buffer, value)

    return outputs, launch


class Copies(list):
    """``copy_into`` that remembers which arrays it copied."""

    def __call__(self, destination, source):
        self.append(source)
        np.copyto(destination, source)


def cpu_capture_step(copies=None):
    return lambda fn, args: graphs.capture(fn, args, clone=np.copy,
                                           copy_into=copies if copies is not None else np.copyto,
                                           record=cpu_graph)


def numpy_backend(copies=None):
    return dataclasses.replace(get_backend("numpy"), capture_step=cpu_capture_step(copies))


def problem(seed=0, n=96, features=20, batch=16):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, features), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int32)
    order = rng.permutation(n).reshape(-1, batch).astype(np.int32)
    params = init_params((features, 8, 3), seed=seed, backend="numpy", init="he")
    return images, labels, order, params


def eager_adam(images, labels, order, params, lrs):
    optimizer = optim.Optimizer("adam")
    step = make_minibatch_step(optimizer, in_place=True)
    p = own_copy(get_backend("numpy"), params)
    s = optim.init_state(optimizer, p)
    for i, lr in enumerate(lrs):
        p, s, loss, accuracy = step(p, s, images, labels, order[i % len(order)], lr)
    return p, s


def test_a_captured_in_place_step_gives_the_eager_steps_results():
    images, labels, order, params = problem()
    lrs = [1e-2 * (1 + np.cos(np.pi * k / 9)) for k in range(9)]
    optimizer = optim.Optimizer("adam")
    state = optim.init_state(optimizer, params)
    step = make_minibatch_step(optimizer, in_place=True)
    leaves, rebuild = flatten((params, state, images, labels, order[0], np.float32(lrs[0])))
    replay = cpu_capture_step()(
        lambda *a: tuple(flatten(step(*rebuild(a)))[0]), tuple(np.asarray(x) for x in leaves))
    n_state = len(flatten((params, state))[0])
    current = flatten((params, state))[0]
    for i, lr in enumerate(lrs):
        out = replay(*current, images, labels, order[i % len(order)],
                     np.asarray(lr, dtype=np.float32))
        current = out[:n_state]
    p, s = flatten((params, state))[1](list(current))
    expected_p, expected_s = eager_adam(images, labels, order, params,
                                        [np.float32(lr) for lr in lrs])
    assert_same_run(p, expected_p, "float32", len(lrs))
    assert_same_run(dict(enumerate(flatten(s)[0])), dict(enumerate(flatten(expected_s)[0])),
                    "float32", len(lrs))


def test_a_captured_pure_full_batch_step_gives_the_eager_steps_results():
    images, labels, _, params = problem()
    x = images.astype(np.float32) / 255
    optimizer = optim.Optimizer("momentum")
    step = make_step(optimizer)
    lr = np.asarray(0.1, dtype=np.float32)
    run = captured_call(numpy_backend(), step, params, optim.init_state(optimizer, params),
                        x, labels, lr, None)
    out = run()
    p, s = params, optim.init_state(optimizer, params)
    p, s, loss, accuracy = step(p, s, x, labels, lr)
    assert_same_run(dict(enumerate(out)),
                    dict(enumerate(flatten((p, s, loss, accuracy))[0])), "float32", 1)


def test_a_replay_copies_only_the_arguments_that_are_not_already_in_the_graph():
    images, labels, order, params = problem()
    copies = Copies()
    backend = numpy_backend(copies)
    optimizer = optim.Optimizer("adam")
    lr = np.asarray(1e-3, dtype=np.float32)
    run = captured_epoch(backend, make_minibatch_step(optimizer, in_place=True), params,
                         optim.init_state(optimizer, params), images, labels, order, lr)
    run()
    first_epoch = len(copies)
    del copies[:]
    run()
    # Each epoch: the caller's state, images, labels and lr once, then each step's batch
    # index and Adam's step count (a new array every step); the parameters and moments
    # the in-place step changes stay in the graph.
    n_state = len(flatten((params, optim.init_state(optimizer, params)))[0])
    batches = len(order)
    assert first_epoch == n_state + 4 + 2 * (batches - 1)
    assert len(copies) == n_state + 1 + 2 * (batches - 1)
    assert not any(c is images or c is labels or c is lr for c in copies)


def test_capturing_and_replaying_never_change_the_callers_arrays():
    images, labels, order, params = problem()
    before = {k: v.copy() for k, v in params.items()}
    optimizer = optim.Optimizer("adam")
    run = captured_epoch(numpy_backend(), make_minibatch_step(optimizer, in_place=True),
                         params, optim.init_state(optimizer, params), images, labels, order,
                         np.asarray(1e-2, dtype=np.float32))
    run()
    run()
    for key, value in before.items():
        np.testing.assert_array_equal(params[key], value)


def test_every_epoch_of_a_captured_in_place_step_starts_from_the_given_state():
    images, labels, order, params = problem()
    optimizer = optim.Optimizer("adam")
    lr = np.asarray(1e-2, dtype=np.float32)
    run = captured_epoch(numpy_backend(), make_minibatch_step(optimizer, in_place=True),
                         params, optim.init_state(optimizer, params), images, labels, order, lr)
    first = [a.copy() for a in run()]
    second = run()
    assert_same_run(dict(enumerate(second)), dict(enumerate(first)), "float32", len(order))


def test_captured_inference_gives_the_eager_labels():
    images, _, _, params = problem()
    from multinet.training.prediction import make_predictor
    backend = numpy_backend()
    expected = make_predictor(get_backend("numpy"))(params, images)
    np.testing.assert_array_equal(captured_predict(backend, params, images)(), expected)


def test_a_captured_step_refuses_arguments_of_another_shape_or_dtype():
    replay = cpu_capture_step()(lambda a, b: (a + b,), (np.ones(3), np.ones(3)))
    with pytest.raises(InvalidArgument, match="argument 1 .* float64 of shape \\(3,\\)"):
        replay(np.ones(3), np.ones(4))
    with pytest.raises(InvalidArgument, match="argument 0"):
        replay(np.ones(3, dtype=np.float32), np.ones(3))
    with pytest.raises(InvalidArgument, match="takes 2 arrays, got 1"):
        replay(np.ones(3))


def test_a_captured_step_takes_and_returns_arrays_only():
    with pytest.raises(InvalidArgument, match="argument 1 is float"):
        cpu_capture_step()(lambda a, lr: (a * lr,), (np.ones(3), 0.5))
    with pytest.raises(InvalidArgument, match="output 0 is str"):
        graphs.capture(lambda a: ("no",), (np.ones(3),), clone=np.copy,
                       copy_into=np.copyto, record=lambda call: (call(), lambda: None))


def test_torch_captures_steps_on_cuda_devices_only():
    pytest.importorskip("torch", reason="PyTorch is not installed (multinet[torch])")
    assert get_backend("torch").configured("cpu").capture_step is None


def test_flatten_rebuilds_the_nest_it_took_apart():
    tree = ({"b": 1, "a": {"y": 2, "x": 3}}, None, [4, (5,)])
    leaves, rebuild = flatten(tree)
    assert leaves == [3, 2, 1, 4, 5]
    assert rebuild(leaves) == ({"a": {"x": 3, "y": 2}, "b": 1}, None, (4, (5,)))


# --- On a GPU ---------------------------------------------------------------------------

def capturing(backend_dtype):
    backend, dtype = backend_dtype
    if backend.capture_step is None:
        pytest.skip(f"{backend.name} on {backend.platform} ({backend.version}) captures no "
                    "steps: CUDA graphs need a CUDA device (and, on CuPy, a cuBLAS it lets "
                    "stream capture call)")
    return backend, dtype


@pytest.mark.parametrize("preset", ["notebook", "mlp"])
def test_a_captured_step_equals_the_eager_step_on_the_gpu(backend_dtype, preset, mnist):
    backend, dtype = capturing(backend_dtype)
    steps = 20
    config = TrainConfig.from_preset(preset, dtype=dtype)
    optimizer = config.optimizer_spec()
    images = backend.asarray(mnist.train_images[:2048].reshape(2048, -1))
    labels = backend.asarray(mnist.train_labels[:2048].astype(np.int32))
    batch = config.batch_size or 2048
    order = backend.asarray(np.random.default_rng(0).permutation(2048)
                            .reshape(-1, batch).astype(np.int32))
    sizes = (784, *config.hidden, 10)
    params = init_params(sizes, seed=0, backend=backend, dtype=dtype, init=config.init)
    step = make_minibatch_step(optimizer, in_place=True)
    lrs = [optim.learning_rate(config.lr, config.schedule, k, steps) for k in range(steps)]
    eager_p = own_copy(backend, params)
    eager_s = optim.init_state(optimizer, eager_p)
    state = optim.init_state(optimizer, params)
    leaves, rebuild = flatten((params, state, images, labels, order[0, :],
                               backend.asarray(np.asarray(lrs[0]), dtype)))
    replay = backend.capture_step(lambda *a: tuple(flatten(step(*rebuild(a)))[0]),
                                  tuple(leaves))
    n_state = len(flatten((params, state))[0])
    current = flatten((params, state))[0]
    for k, lr in enumerate(lrs):
        index = order[k % order.shape[0], :]
        eager_p, eager_s, _, _ = step(eager_p, eager_s, images, labels, index, lr)
        out = replay(*current, images, labels, index, backend.asarray(np.asarray(lr), dtype))
        current = out[:n_state]
    host = [np.asarray(backend.to_numpy(a)) for a in current]
    expected = [np.asarray(backend.to_numpy(a)) for a in flatten((eager_p, eager_s))[0]]
    assert_same_run(dict(enumerate(host)), dict(enumerate(expected)), dtype, steps)


def test_a_run_with_captured_steps_ends_in_the_eager_runs_state_on_the_gpu(backend_dtype,
                                                                        mnist):
    backend, dtype = capturing(backend_dtype)
    captures = []

    def counted(fn, args):
        captures.append(fn)
        return backend.capture_step(fn, args)

    config = TrainConfig.from_preset("mlp", dtype=dtype, epochs=2, dev_size=200)
    data = mnist_slice(mnist, 2048, 256)
    captured = train(config, dataclasses.replace(backend, capture_step=counted), data,
                     progress=False)
    eager = train(config, dataclasses.replace(backend, capture_step=None), data,
                  progress=False)
    assert captures, "the training loop never used capture_step"
    steps = captured.state.step
    assert steps == eager.state.step > 0
    for mine, theirs in ((captured.params, eager.params),
                         (captured.state.opt_state, eager.state.opt_state)):
        mine, theirs = flatten(mine)[0], flatten(theirs)[0]
        assert_same_run({i: np.asarray(backend.to_numpy(a)) for i, a in enumerate(mine)},
                        {i: np.asarray(backend.to_numpy(a)) for i, a in enumerate(theirs)},
                        dtype, steps)
