"""The training step, on every backend: backprop and the optimizer's update as one pure
function the backend compiles (``Backend.compile``), in three shapes:

* ``make_step``: one step on a batch already on the device and scaled (a full-batch
  run's whole training set), optionally ``chunk`` rows at a time for eager libraries;
* ``make_minibatch_step``: the same, gathering and scaling batch ``index`` of the
  ``uint8`` images on the device first;
* ``make_epoch_runner``: ``SCAN_STEPS`` minibatch steps as one compiled program, where
  the backend can compile a loop (``Backend.compile_scan``).

``epoch_order`` is the order of the images in an epoch, the same on every backend.
"""

from __future__ import annotations

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


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """``(batches, batch_size)`` image indices of one epoch; the remainder is dropped."""
    batches = n // batch_size
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: batches * batch_size].reshape(batches, batch_size)
