"""The network: a stack of layers as small pure functions over a dict of arrays.

Written once against the Python array API standard. The namespace comes from the arrays
themselves (``array_api_compat.array_namespace``), so the same code runs on NumPy, CuPy,
jax.numpy (also inside ``jax.jit``) and array-api-strict. This module imports no array
library and never asks which one it is running on.

Layout is samples-first: ``x`` is ``(batch, features)``. A network is a tuple of
``multinet.layers.Layer`` records (dense, convolution, pooling, flatten, ReLU; each a
forward and backward pair in ``multinet.layers``); the layers with weights are numbered
from 1, ``Wi`` and ``bi``, in one dict. The multilayer perceptron is the special case
every function takes when ``layers`` is None: dense layers ``x @ W + b`` with ``Wi`` of
shape ``(fan_in, fan_out)`` and ``bi`` of ``(fan_out,)``, ReLU between them
(``mlp_layers``). The last layer's outputs are logits for a softmax.

Two fixes over the notebook this started from, both visible in ``loss_and_grads``:

* the softmax subtracts each row's maximum before ``exp``: the notebook's
  ``exp(Z) / sum(exp(Z))`` overflows to ``inf/inf = nan`` once a logit passes ~709
  (float64) or ~88 (float32);
* the bias gradient is the sum over samples *per unit* (shape ``(fan_out,)``); the
  notebook's ``np.sum(dZ)`` summed over units too, giving every unit the same scalar.

It relies on no more than the standard guarantees, so libraries at its edges work too: the
batch size is counted from an array when ``x.shape[0]`` is not an int (``None`` in a
library with symbolic shapes such as ndonnx, ``nan`` in a lazy one such as Dask after
boolean masking), and new arrays get ``device=`` only when the arrays have a device
(MLX's have none, and its ``arange`` rejects the keyword).
"""

from __future__ import annotations

from array_api_compat import array_namespace

from multinet import layers as L
from multinet.layers import Layer, placement

#: The oldest version of the array API standard this module (and the optimizers and the
#: training loop over it) runs on, checked against each library's before a run
#: (``multinet.registry.check_standard``). 2023.12 made ``sum`` keep a float32 input's
#: dtype; under 2022.12 it returns the default float dtype (float64), and float32
#: training mixes dtypes. Python scalars in functions (``where(c, x, 0.0)``, 2024.12) are
#: not used: a 0-d array (``layers.zero``) does the same in every version.
ARRAY_API_VERSION = "2023.12"


def layer_count(params) -> int:
    """Number of layers with weights (dense and convolutional)."""
    return len(params) // 2


def layer_sizes(params) -> tuple[int, ...]:
    """``(inputs, hidden..., outputs)`` of a multilayer perceptron's parameters, the
    ``sizes`` that ``init_params`` was given."""
    count = layer_count(params)
    return (params["W1"].shape[0],) + tuple(params[f"W{i}"].shape[1] for i in range(1, count + 1))


def mlp_layers(hidden, classes: int) -> tuple[Layer, ...]:
    """The multilayer perceptron as layers: ``dense:h, relu`` per hidden width, then
    the output layer ``dense:classes``."""
    return (*(layer for width in hidden for layer in (Layer("dense", width), Layer("relu"))),
            Layer("dense", classes))


def _layers_of(params, layers):
    """``layers``, or where it is None the perceptron that ``params`` hold."""
    if layers is not None:
        return layers
    sizes = layer_sizes(params)
    return mlp_layers(sizes[1:-1], sizes[-1])


def _forward_keeping_saved(params, x, layers):
    """Logits, and what each layer's backward needs (its ``saved``), in order."""
    saved = []
    a = x
    number = 0
    for layer in layers:
        if layer.has_params:
            number += 1
            W, b = params[f"W{number}"], params[f"b{number}"]
            if layer.kind == "dense":
                a, keep = L.dense_forward(a, W, b)
            else:
                a, keep = L.conv_forward(a, W, b, layer.padding)
        elif layer.kind == "relu":
            a, keep = L.relu_forward(a)
        elif layer.kind == "maxpool":
            a, keep = L.maxpool_forward(a, layer.size)
        elif layer.kind == "avgpool":
            a, keep = L.avgpool_forward(a, layer.size)
        else:
            a, keep = L.flatten_forward(a)
        saved.append(keep)
    return a, saved


def _backward(params, layers, saved, delta, x_t=None):
    """Gradients of every parameter, given ``delta``, the loss's gradient with respect
    to the logits: each layer's backward in reverse order. The first layer's input
    gradient is never computed (nothing below it needs one)."""
    grads = {}
    number = layer_count(params)
    for index in range(len(layers) - 1, -1, -1):
        layer, keep, need_input = layers[index], saved[index], index > 0
        if layer.has_params:
            W = params[f"W{number}"]
            if layer.kind == "dense":
                delta, (dW, db) = L.dense_backward(keep, delta, W, need_input=need_input,
                                                   a_t=x_t if index == 0 else None)
            else:
                delta, (dW, db) = L.conv_backward(keep, delta, W, need_input=need_input)
            grads[f"W{number}"], grads[f"b{number}"] = dW, db
            number -= 1
        elif not need_input:
            break
        elif layer.kind == "relu":
            delta, _ = L.relu_backward(keep, delta)
        elif layer.kind == "maxpool":
            delta, _ = L.maxpool_backward(keep, delta, layer.size)
        elif layer.kind == "avgpool":
            delta, _ = L.avgpool_backward(keep, delta, layer.size)
        else:
            delta, _ = L.flatten_backward(keep, delta)
    return grads


def forward(params, x, layers=None):
    """Logits ``(batch, classes)``, before the softmax, for ``x`` ``(batch, features)``
    (MNIST: 784 pixels scaled to [0, 1]) in the parameters' float dtype. ``layers``: the
    network's ``Layer`` records (``multinet.layers``), output layer included; None for
    the multilayer perceptron ``params`` hold (dense and ReLU, ``mlp_layers``)."""
    return _forward_keeping_saved(params, x, _layers_of(params, layers))[0]


def predict(params, x, layers=None):
    """Predicted class labels ``(batch,)``, the index of each row's largest logit (the
    library's default integer dtype); ``x`` and ``layers`` as for ``forward``."""
    xp = array_namespace(x)
    return xp.argmax(forward(params, x, layers), axis=1)


def _batch_size(xp, x, like):
    """Rows of ``x``: an int where the library knows it, else a 0-d array of ``like``'s dtype.

    ``x.shape[0]`` is None for a symbolic batch (ndonnx, a traced export) and nan for a
    lazy array of unknown length (Dask); dividing by either would turn every gradient
    into NaN or fail, so the count comes from summing ones over a column of ``like``
    (exact below 2**24 rows in float32).
    """
    rows = x.shape[0]
    if isinstance(rows, int):
        return rows
    return xp.sum(xp.ones_like(like[:, 0]))


def one_hot(y, classes: int, dtype):
    """``(batch, classes)`` array with a 1 at each label, in ``dtype``."""
    xp = array_namespace(y)
    columns = xp.arange(classes, dtype=y.dtype, **placement(y))
    return xp.astype(y[:, None] == columns[None, :], dtype)


def _softmax_cross_entropy(logits, targets):
    """Mean cross-entropy and softmax probabilities, computed without overflow.

    Shifting each row by its maximum leaves the softmax unchanged and makes every
    exponent <= 0, so ``exp`` cannot overflow and the row sum is at least 1, so the
    ``log`` is finite too.
    """
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    exps = xp.exp(shifted)
    sums = xp.sum(exps, axis=1, keepdims=True)
    log_likelihood = xp.sum(shifted * targets, axis=1) - xp.log(sums[:, 0])
    return -xp.mean(log_likelihood), exps / sums


def loss(params, x, y, layers=None):
    """Mean cross-entropy of the softmax of the logits against integer labels ``y``.

    The forward half of ``loss_and_grads``, for code that differentiates it another way
    (the tests check the hand-written gradients against ``jax.grad`` of this).
    """
    logits = forward(params, x, layers)
    return _softmax_cross_entropy(logits, one_hot(y, logits.shape[1], logits.dtype))[0]


def backprop(params, x, y, x_t=None, layers=None):
    """``(loss, grads, logits)``: ``loss_and_grads`` plus the logits it computed anyway
    (training loops use them for accuracy without a second forward pass).

    ``x_t``, optional, is ``x`` transposed into its own contiguous array (features-first),
    for a network whose first layer is dense. Its weight gradient is ``x.T @ delta``; a
    matrix product whose left operand is a transposed view runs at about a third of the
    speed in XLA on the CPU (measured: 39 ms against 12 ms for MNIST's 59,000 x 784
    images) and slower in OpenBLAS too. Full-batch training, whose ``x`` never changes,
    pays one copy to skip it. ``layers`` as for ``forward``.
    """
    xp = array_namespace(x)
    layers = _layers_of(params, layers)
    logits, saved = _forward_keeping_saved(params, x, layers)
    targets = one_hot(y, logits.shape[1], logits.dtype)
    mean_loss, probs = _softmax_cross_entropy(logits, targets)
    # d(mean loss)/d(logits) for softmax + cross-entropy; then the chain rule, layer by
    # layer, backwards.
    delta = (probs - targets) / _batch_size(xp, x, probs)
    grads = _backward(params, layers, saved, delta, x_t)
    return mean_loss, {key: grads[key] for key in params}, logits


def loss_and_grads(params, x, y, layers=None):
    """Mean cross-entropy over the batch and its gradient for every parameter.

    ``y`` holds integer labels. The gradients are written out by hand (backpropagation),
    not derived by a library: the tests check them against finite differences and
    ``jax.grad``. ``layers`` as for ``forward``.
    """
    mean_loss, grads, _ = backprop(params, x, y, layers=layers)
    return mean_loss, grads


def sgd_step(params, grads, lr):
    """``params - lr * grads``, as a new dict: nothing is mutated (JAX arrays cannot be)."""
    return {key: value - lr * grads[key] for key, value in params.items()}


def accuracy(logits, y):
    """Fraction of rows whose largest logit is at the label, as a 0-d array."""
    xp = array_namespace(logits)
    return xp.mean(xp.astype(xp.argmax(logits, axis=1) == y, logits.dtype))


def train_step(params, x, y, lr, layers=None):
    """One full gradient-descent step: ``(new_params, loss, accuracy)``.

    Accuracy comes from the logits the step computes anyway, so a progress bar costs no
    second forward pass. Pure, so ``backend.compile`` can turn it into one XLA program.
    """
    mean_loss, grads, logits = backprop(params, x, y, layers=layers)
    return sgd_step(params, grads, lr), mean_loss, accuracy(logits, y)
