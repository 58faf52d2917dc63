"""The training step, on every backend: backprop and the optimizer's update as one pure
function the backend compiles (``Backend.compile``), in three shapes:

* ``make_step``: one step on a batch already on the device and scaled (a full-batch
  run's whole training set), optionally ``chunk`` rows at a time for eager libraries;
* ``make_minibatch_step``: the same, gathering and scaling batch ``index`` of the
  ``uint8`` images on the device first;
* ``make_epoch_runner``: ``SCAN_STEPS`` minibatch steps as one compiled program, where
  the backend can compile a loop (``Backend.compile_scan``);
* ``make_full_batch_runner``: the same for full-batch steps (a chunk of iterations between
  two log points), where the backend says so (``Backend.scan_full_batch``).

``capture`` runs any of the single steps as replays of one captured graph, where the
backend captures (``Backend.capture_step``); ``flatten`` takes the nests of arrays the
steps take and return apart, as a capture needs them.

``epoch_order`` is the order of the images in an epoch, the same on every backend.
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np
from array_api_compat import array_namespace

from multinet import network, optim
from multinet.data import scale_images
from multinet.registry import Backend

#: Steps per compiled program where a backend compiles runs of steps (``compile_scan``).
#: A signal is acted on between two programs and at most one more is queued behind the
#: running one, so a stop waits for at most two programs: about 2 x 64 steps (measured in
#: docs/reliability.md), instead of a whole epoch, or several when nothing reads a result.
SCAN_STEPS = 64


def chunked_backprop(params, x, y, chunk: int, layers=None):
    """``(loss, grads, accuracy)`` of the whole batch, computed ``chunk`` rows at a time;
    ``layers`` as in ``network.backprop`` (the network's ``Layer`` records, None for the
    perceptron ``params`` hold).

    Each sample's contribution to the mean loss and its gradient depends on that sample
    alone, so the batch splits exactly into weighted chunks. A chunk's images are read by
    the forward product and again by the gradient's while they are still in cache, and
    every elementwise step works on cache-sized arrays: one trip through memory instead
    of many, for libraries that run each operation eagerly (see ``Backend.fuse_chunk``).
    """
    n = x.shape[0]
    loss = accuracy = 0.0
    grads = None
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        weight = (stop - start) / n
        part_loss, part_grads, logits = network.backprop(params, x[start:stop, ...],
                                                         y[start:stop], layers=layers)
        loss = loss + weight * part_loss
        accuracy = accuracy + weight * network.accuracy(logits, y[start:stop])
        grads = ({k: weight * g for k, g in part_grads.items()} if grads is None
                 else {k: grads[k] + weight * g for k, g in part_grads.items()})
    return loss, grads, accuracy


def make_step(optimizer: optim.Optimizer, chunk: int | None = None,
              in_place: bool = False, layers=None):
    """``step(params, opt_state, x, y, lr, x_t=None) -> (params, opt_state, loss,
    accuracy)``; ``x_t`` and ``layers`` as in ``network.backprop`` (``layers``: the
    network's ``Layer`` records, ``TrainConfig.network_layers()``; None for the
    perceptron ``params`` hold); with ``chunk``, the batch is processed ``chunk`` rows
    at a time (``chunked_backprop``) and ``x_t`` is not used. ``in_place`` (only for
    ``Backend.mutable_arrays``): the update overwrites the arrays of ``params`` and
    ``opt_state`` (``optim.update_in_place``)."""
    update = optim.update_in_place if in_place else optim.update

    def step(params, opt_state, x, y, lr, x_t=None):
        if chunk:
            loss, grads, accuracy = chunked_backprop(params, x, y, chunk, layers)
        else:
            loss, grads, logits = network.backprop(params, x, y, x_t, layers)
            accuracy = network.accuracy(logits, y)
        params, opt_state = update(optimizer, params, grads, opt_state, lr)
        return params, opt_state, loss, accuracy

    return step


def make_minibatch_step(optimizer: optim.Optimizer, in_place: bool = False, layers=None):
    """Like ``make_step``, gathering and scaling the batch ``index`` on the device."""
    step = make_step(optimizer, in_place=in_place, layers=layers)

    def minibatch_step(params, opt_state, images, labels, index, lr):
        xp = array_namespace(images)
        x = scale_images(xp.take(images, index, axis=0), params["W1"].dtype)
        return step(params, opt_state, x, xp.take(labels, index, axis=0), lr)

    return minibatch_step


def make_epoch_runner(backend: Backend, optimizer: optim.Optimizer, dtype: str,
                      layers=None):
    """``run(params, opt_state, images, labels, rows, lrs) -> (params, opt_state,
    loss_sum, accuracy_sum)``: one minibatch step per row of ``rows`` (batch indices) at
    the matching learning rate of ``lrs`` (a host array), as one compiled program where
    the backend can (``Backend.compile_scan``), else ``None``: the caller then runs the
    compiled step batch by batch. ``layers`` as for ``make_step``."""
    if backend.compile_scan is None:
        return None
    minibatch_step = make_minibatch_step(optimizer, layers=layers)

    def body(carry, x, images, labels):
        params, opt_state, loss, accuracy = minibatch_step(*carry, images, labels, *x)
        return (params, opt_state), (loss, accuracy)

    scan = backend.compile_scan(body)

    def run(params, opt_state, images, labels, rows, lrs):
        lrs = backend.asarray(np.asarray(lrs), dtype)
        (params, opt_state), (losses, accuracies) = scan((params, opt_state), (rows, lrs),
                                                         images, labels)
        xp = backend.xp
        return params, opt_state, xp.sum(losses), xp.sum(accuracies)

    return run


def make_full_batch_runner(backend: Backend, optimizer: optim.Optimizer, dtype: str,
                           layers=None):
    """``run(params, opt_state, x, y, x_t, lrs) -> (params, opt_state, loss, accuracy)``:
    one full-batch step (``make_step``) per learning rate of ``lrs`` (a host array), as
    one compiled program (``Backend.compile_scan``); ``loss`` and ``accuracy`` are the last
    step's. None where the backend runs full-batch steps one at a time (no
    ``compile_scan``, or ``Backend.scan_full_batch`` unset)."""
    if backend.compile_scan is None or not backend.scan_full_batch:
        return None
    step = make_step(optimizer, backend.fuse_chunk, layers=layers)

    def body(carry, x, images, labels, images_t):
        params, opt_state, loss, accuracy = step(*carry, images, labels, *x, images_t)
        return (params, opt_state), (loss, accuracy)

    scan = backend.compile_scan(body)

    def run(params, opt_state, x, y, x_t, lrs):
        lrs = backend.asarray(np.asarray(lrs), dtype)
        (params, opt_state), (losses, accuracies) = scan((params, opt_state), (lrs,),
                                                         x, y, x_t)
        return params, opt_state, losses[-1], accuracies[-1]

    return run


def flatten(tree) -> tuple[list, Callable]:
    """The arrays of a nest of dicts, tuples and lists, and how to rebuild it.

    Parameters
    ----------
    tree : array, dict, tuple, list or None
        Dicts are read in the order of their sorted keys; None holds no array.

    Returns
    -------
    tuple
        ``(leaves, rebuild)``: the arrays in order, and ``rebuild(leaves)``, the nest
        again (lists as tuples) with those arrays in their places.
    """
    if tree is None:
        return [], lambda leaves: None
    if isinstance(tree, (dict, tuple, list)):
        keys = sorted(tree) if isinstance(tree, dict) else range(len(tree))
        parts = [flatten(tree[k]) for k in keys]

        def rebuild(leaves):
            values, start = [], 0
            for part, part_rebuild in parts:
                values.append(part_rebuild(leaves[start:start + len(part)]))
                start += len(part)
            return dict(zip(keys, values)) if isinstance(tree, dict) else tuple(values)

        return [leaf for part, _ in parts for leaf in part], rebuild
    return [tree], lambda leaves: leaves[0]


def capture(backend: Backend, step: Callable, dtype: str) -> Callable:
    """``step`` (``make_step``'s or ``make_minibatch_step``'s), each call a replay of one
    capture of it (``Backend.capture_step``), made by the first call.

    Parameters
    ----------
    backend : Backend
        One whose ``capture_step`` is set.
    step : callable
        ``step(params, opt_state, ...) -> (params, opt_state, loss, accuracy)``.
    dtype : str
        The learning rate's dtype: a number argument becomes a 0-d array of it, so that
        the graph reads each step's value instead of keeping the first one's.

    Returns
    -------
    callable
        The same signature and results; the arrays it returns are the graph's, which the
        next call overwrites (an in-place step's parameters are updated there anyway).
    """
    replay = rebuild_args = rebuild_outputs = None

    def flat_step(*leaves):
        nonlocal rebuild_outputs
        outputs, rebuild_outputs = flatten(step(*rebuild_args(leaves)))
        return tuple(outputs)

    def captured(*args):
        nonlocal replay, rebuild_args
        leaves, rebuild = flatten(tuple(
            backend.asarray(np.asarray(a), dtype) if isinstance(a, numbers.Number) else a
            for a in args))
        if replay is None:
            rebuild_args = rebuild
            replay = backend.capture_step(flat_step, tuple(leaves))
        return rebuild_outputs(list(replay(*leaves)))

    return captured


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """``(batches, batch_size)`` image indices of one epoch; the remainder is dropped."""
    batches = n // batch_size
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: batches * batch_size].reshape(batches, batch_size)
