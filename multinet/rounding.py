"""The rounding-error model behind parity: how far a correct float computation of the
network may lie from the float64 reference, and relative to what.

An error is ``||actual - reference|| / ||scale||`` per array (Frobenius norms, float64),
and a level of ``multinet.parity`` passes when its largest is within::

    tolerance(dtype, steps, length) = max(32, sqrt(length) / 2) * eps(dtype) * sqrt(1 + steps)

* ``eps(dtype)``: the unit of the dtype under test; the reference's own error is
  negligible next to float32's.
* ``32``: room for other summation orders (GPU BLAS, XLA fusion), not for mistakes,
  which err by O(1); measured single-pass errors are below 1 eps of the scale below.
* ``sqrt(length) / 2``: ``length`` is the longest sum behind the level
  (``reduction_lengths``). Independent rounding errors of L terms added one after another
  grow like a random walk (measured 0.09-0.27 ``sqrt(L)`` eps for uniform terms of one
  sign), so this leaves room; it is not a bound (``L * eps`` is, and sums of nearly equal
  terms approach it): it holds because the network keeps its long sums short
  (``layers.blocked_sum``) or leaves them to the libraries' blocked matrix products. It
  passes 32 only beyond L = 4,096 terms: a convolution's weight gradient over a batch.
* ``sqrt(1 + steps)``: rounding errors of independent steps add like a random walk (in a
  stable run: an unstable one amplifies rounding exponentially).
* ``scale`` (``magnitudes``): the reference itself for parameters. Logits, the loss and
  gradients are sums of signed terms that can cancel far below their size, and a float
  sum is accurate only relative to the sum of its terms' magnitudes; that error then
  travels on through the layers above, where independent errors add in quadrature. So
  their scale is the standard deviation this model gives them, in units of eps.

docs/parity.md has the measurements behind each number.
"""

from __future__ import annotations

import math

import numpy as np

from multinet import layers as L
from multinet import network

SAFETY = 32


def tolerance(dtype: str, steps: int = 0, length: int = 0) -> float:
    """The largest relative error allowed after ``steps`` training steps, for results
    whose longest sum has ``length`` terms (0: short sums only).

    Parameters
    ----------
    dtype : {"float32", "float64"}
        The dtype under test; its ``eps`` is the unit.
    steps : int
        Training steps behind the result (0 for one pass).
    length : int
        Terms of the longest sum behind it (``reduction_lengths``).

    Returns
    -------
    float
        ``max(32, sqrt(length) / 2) * eps(dtype) * sqrt(1 + steps)``.
    """
    return (max(SAFETY, math.sqrt(length) / 2) * float(np.finfo(dtype).eps)
            * math.sqrt(1 + steps))


def reduction_lengths(layers, features: int, batch: int) -> dict:
    """Terms of the longest sum behind each kind of result of ``layers`` on ``batch``
    rows of ``features``: ``{"forward": ..., "loss": ..., "backward": ...}``.

    The forward pass sums a dense layer's inputs, a convolution's ``k * k * C_in``
    window, an average pool's window and the classes; the loss adds the mean over the
    batch; the backward pass sums over the batch (a dense layer's gradients), over the
    batch times the output positions (a convolution's weight gradient: one matrix
    product, in the library's order; its bias gradient is summed per image first,
    ``layers.blocked_sum``) and over a layer's outputs (its input's gradient).

    Parameters
    ----------
    layers : sequence of Layer
        The network, output layer included.
    features : int
        Inputs per sample.
    batch : int
        Rows per pass.

    Returns
    -------
    dict of str to int

    Raises
    ------
    ValueError
        For layers that do not fit ``features`` (``layers.shapes``).
    """
    sizes = L.shapes(layers, features)
    forward, backward = sizes[-1][0], batch
    for layer, before, after in zip(layers, sizes, sizes[1:]):
        if layer.kind == "dense":
            forward, backward = max(forward, before[0]), max(backward, layer.size)
        elif layer.kind == "conv":
            channels = before[2] if len(before) == 3 else 1
            forward = max(forward, layer.kernel ** 2 * channels)
            backward = max(backward, batch * after[0] * after[1], layer.kernel ** 2 * layer.size)
        elif layer.kind == "avgpool":
            forward = max(forward, layer.size ** 2)
    return {"forward": forward, "loss": max(forward, batch), "backward": max(backward, forward)}


def relative_error(actual, reference, scale=None) -> float:
    """``||actual - reference|| / ||scale||`` in float64 (``scale`` defaults to the
    reference); 0 when both are exactly 0."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        raise ValueError(f"shape {actual.shape} differs from the reference's {reference.shape}")
    if not np.all(np.isfinite(actual)):
        return math.inf
    scale = np.linalg.norm(reference if scale is None else scale)
    difference = np.linalg.norm(actual - reference)
    if scale == 0:
        return 0.0 if difference == 0 else math.inf
    return float(difference / scale)


def max_relative_error(actual: dict, reference: dict) -> float:
    """The largest ``relative_error`` over the arrays of two dicts with the same keys."""
    if actual.keys() != reference.keys():
        raise ValueError(f"keys {sorted(actual)} differ from the reference's {sorted(reference)}")
    return max(relative_error(actual[k], reference[k]) for k in reference)


def _apply(layer, a, W=None, b=None):
    """``layer``'s forward pass: ``(output, saved)``."""
    if layer.kind == "dense":
        return L.dense_forward(a, W, b)
    if layer.kind == "conv":
        return L.conv_forward(a, W, b, layer.padding)
    if layer.kind == "relu":
        return L.relu_forward(a)
    if layer.kind in ("maxpool", "avgpool"):
        pool = L.maxpool_forward if layer.kind == "maxpool" else L.avgpool_forward
        return pool(a, layer.size)
    return L.flatten_forward(a)


def _back(layer, saved, delta, W=None, need_input=True):
    """``layer``'s backward pass: ``(d_input, grads)``."""
    if layer.kind in ("dense", "conv"):
        backward = L.dense_backward if layer.kind == "dense" else L.conv_backward
        return backward(saved, delta, W, need_input=need_input)
    if layer.kind in ("maxpool", "avgpool"):
        pool = L.maxpool_backward if layer.kind == "maxpool" else L.avgpool_backward
        return pool(saved, delta, layer.size)
    return (L.relu_backward if layer.kind == "relu" else L.flatten_backward)(saved, delta)


def magnitudes(params: dict, x: np.ndarray, y: np.ndarray, lr: float, layers=None) -> dict:
    """The scale each result is accurate to, in units of eps: the standard deviation of
    its rounding error under the model in the module doc, from the float64 reference.

    A layer's sum errs by up to its terms' magnitudes (``|a| @ |W| + |b|``, a
    convolution's likewise), and the error ``e`` its input brings travels through it as
    ``e @ W``: variances ``s**2 @ W**2``, added to the square of the first. A ReLU or a
    pool passes the error on (a max-pool: its window's largest). A logit off by ``m``
    moves its row's loss by at most that, and the softmax residual by
    ``(p + one_hot) * (1 + 2 m) / n``; backward, each gradient gathers the error of its
    two factors and of its own sum the same way, through the reference's own ReLU masks
    and max-pool choices. An updated parameter's scale is ``|W| + lr * scale``.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        The float64 parameters.
    x, y : numpy.ndarray
        The inputs ``(n, features)`` and integer labels ``(n,)``.
    lr : float
        The step's learning rate.
    layers : sequence of Layer, optional
        The network, output layer included; None for the perceptron ``params`` hold.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"logits", "loss", "W1", "b1", ..., "step W1", ...}``, float64.
    """
    if layers is None:
        sizes = network.layer_sizes(params)
        layers = network.mlp_layers(sizes[1:-1], sizes[-1])
    weights, number = [], 0  # (number, W, b) of each layer with weights, else ()
    for layer in layers:
        number += layer.has_params
        weights.append((number, params[f"W{number}"], params[f"b{number}"])
                       if layer.has_params else ())
    a, s, inputs, saved = x, np.zeros_like(x), [], []
    for layer, Wb in zip(layers, weights):
        inputs.append((a, s))
        a, keep = _apply(layer, a, *Wb[1:])
        saved.append(keep)
        if Wb:
            _, W, b = Wb
            own = _apply(layer, np.abs(inputs[-1][0]), np.abs(W), np.abs(b))[0]
            s = np.sqrt(_apply(layer, s * s, W * W, 0 * b)[0] + own * own)
        elif layer.kind != "relu":
            s = _apply(layer, s)[0]
    shifted = a - a.max(axis=1, keepdims=True)
    sums = np.exp(shifted).sum(axis=1, keepdims=True)
    probs = np.exp(shifted) / sums
    targets = np.eye(a.shape[1])[y]
    loss = np.mean(np.log(sums[:, 0]) - shifted[np.arange(len(y)), y])
    row = s.max(axis=1, keepdims=True)
    result = {"logits": s, "loss": abs(loss) + float(row.mean())}
    delta, spread = (probs - targets) / len(x), (probs + targets) * (1 + 2 * row) / len(x)
    for index in range(len(layers) - 1, -1, -1):
        layer, keep, Wb, need = layers[index], saved[index], weights[index], index > 0
        if not Wb:
            if not need:
                break
            delta, spread = _back(layer, keep, delta)[0], _back(layer, keep, spread)[0]
            continue
        (number, W, b), (a, s) = Wb, inputs[index]
        carried = _back(layer, _apply(layer, s * s, W, 0 * b)[1], delta * delta, W, False)[1]
        spreads = _back(layer, _apply(layer, a * a, W, 0 * b)[1], spread * spread, W * W, need)
        own = _back(layer, _apply(layer, np.abs(a), W, 0 * b)[1], np.abs(delta), np.abs(W),
                    need)
        result[f"W{number}"] = np.sqrt(carried[0] + spreads[1][0] + own[1][0] ** 2)
        result[f"b{number}"] = np.sqrt(spreads[1][1] + own[1][1] ** 2)
        if need:
            delta = _back(layer, keep, delta, W)[0]
            spread = np.sqrt(spreads[0] + own[0] ** 2)
    for key in params:
        result[f"step {key}"] = np.abs(params[key]) + lr * result[key]
    return result
