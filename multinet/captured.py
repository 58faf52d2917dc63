"""The bench's captured workloads: multinet's own steps, captured once as CUDA graphs and
replayed, where the backend can (``Backend.capture_step``).

``capture_step`` takes a step on a flat tuple of arrays; ``training.steps.flatten`` turns the nests of
dicts and tuples the steps take and return (parameters, optimizer state) into one and
back. Each workload is the eager row's function, unchanged, so the two rows of a workload
differ by the launches alone. The capture (its warm-up calls included) happens in the
first run, which the bench reports on its own, as it does a compilation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from multinet import network
from multinet.data import scale_images
from multinet.registry import Backend
from multinet.training.steps import flatten


def _flat(fn, rebuild):
    """``fn`` as a function of the leaves ``rebuild`` takes, returning its result's."""
    def flat(*leaves):
        return tuple(flatten(fn(*rebuild(leaves)))[0])

    return flat


def captured_call(backend: Backend, fn, *args) -> Callable:
    """``run()``: ``fn(*args)`` replayed from its capture, the same arguments every time.

    Parameters
    ----------
    backend : Backend
        One whose ``capture_step`` is set.
    fn : callable
        A step (``training.steps.make_step``'s), on nests of arrays.
    *args
        Its arguments: nests of arrays (a learning rate as a 0-d array).

    Returns
    -------
    callable
        ``run() -> tuple of arrays``: the step's outputs, flattened; the first run captures.
    """
    leaves, rebuild = flatten(args)
    replay = None

    def run():
        nonlocal replay
        if replay is None:
            replay = backend.capture_step(_flat(fn, rebuild), tuple(leaves))
        return replay(*leaves)

    return run


def captured_epoch(backend: Backend, step, params, opt_state, images, labels, order,
                   lr) -> Callable:
    """``run()``: one epoch of ``step`` (``make_minibatch_step``'s), a replay per row of
    ``order``, from ``params`` and ``opt_state`` every time (which stay unchanged).

    Parameters
    ----------
    backend : Backend
        One whose ``capture_step`` is set.
    step : callable
        ``step(params, opt_state, images, labels, index, lr) -> (params, opt_state,
        loss, accuracy)``, pure or in place.
    params, opt_state : dict
        The state each epoch starts from.
    images, labels : arrays
        On the device.
    order : array
        ``(batches, batch_size)`` batch indices, on the device.
    lr : array
        The learning rate, a 0-d array.

    Returns
    -------
    callable
        ``run()``: the last replay's outputs, flattened.
    """
    state, _ = flatten((params, opt_state))
    leaves, rebuild = flatten((params, opt_state, images, labels, order[0, :], lr))
    replay = None

    def run():
        nonlocal replay
        if replay is None:
            replay = backend.capture_step(_flat(step, rebuild), tuple(leaves))
        current, out = state, ()
        for i in range(order.shape[0]):
            out = replay(*current, images, labels, order[i, :], lr)
            current = out[:len(state)]
        return out

    return run


def captured_predict(backend: Backend, params, images, layers=None) -> Callable:
    """``run() -> host labels``: the predictions of ``images`` (``uint8``, on the device)
    in one replay, as ``training.prediction.make_predictor`` makes them in one chunk.

    Parameters
    ----------
    backend : Backend
        One whose ``capture_step`` is set.
    params : dict
        The network's parameters, on the device.
    images : array
        ``uint8`` images, on the device.
    layers : tuple of Layer, optional
        As for ``network.predict``.

    Returns
    -------
    callable
        ``run() -> numpy.ndarray``: the labels, on the host.
    """
    def predict(params, images):
        return network.predict(params, scale_images(images, params["W1"].dtype), layers)

    run = captured_call(backend, predict, params, images)
    return lambda: np.asarray(backend.to_numpy(run()[0]))
