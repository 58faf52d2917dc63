"""The network: a multilayer perceptron as small pure functions over a dict of arrays.

Written once against the Python array API standard. The namespace comes from the arrays
themselves (``array_api_compat.array_namespace``), so the same code runs on NumPy, CuPy,
jax.numpy (also inside ``jax.jit``) and array-api-strict. This module imports no array
library and never asks which one it is running on.

Layout is samples-first: ``x`` is ``(batch, features)``, layer ``i`` has weights ``Wi``
of shape ``(fan_in, fan_out)`` and bias ``bi`` of shape ``(fan_out,)``, so a layer is
``x @ W + b``. Hidden layers use ReLU; the last layer's outputs are logits for a softmax.

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

from array_api_compat import array_namespace, device

#: The oldest version of the array API standard this module (and the optimizers and the
#: training loop over it) runs on, checked against each library's before a run
#: (``multinet.registry.check_standard``). 2023.12 made ``sum`` keep a float32 input's
#: dtype; under 2022.12 it returns the default float dtype (float64), and float32
#: training mixes dtypes. Python scalars in functions (``where(c, x, 0.0)``, 2024.12) are
#: not used: a 0-d array (``_zero``) does the same in every version.
ARRAY_API_VERSION = "2023.12"


def layer_count(params) -> int:
    """Number of weight layers (hidden layers + 1)."""
    return len(params) // 2


def layer_sizes(params) -> tuple[int, ...]:
    """``(inputs, hidden..., outputs)``, the ``sizes`` that ``init_params`` was given."""
    count = layer_count(params)
    return (params["W1"].shape[0],) + tuple(params[f"W{i}"].shape[1] for i in range(1, count + 1))


def _relu(xp, z):
    return xp.where(z > 0, z, _zero(xp, z))


def _forward_keeping_activations(params, x):
    """Logits, and the input of every layer (what backprop needs; ``inputs[0]`` is ``x``)."""
    xp = array_namespace(x)
    count = layer_count(params)
    inputs = [x]
    a = x
    for i in range(1, count):
        a = _relu(xp, a @ params[f"W{i}"] + params[f"b{i}"])
        inputs.append(a)
    logits = a @ params[f"W{count}"] + params[f"b{count}"]
    return logits, inputs


def forward(params, x):
    """Logits ``(batch, classes)``, before the softmax, for ``x`` ``(batch, features)``
    (MNIST: 784 pixels scaled to [0, 1]) in the parameters' float dtype."""
    return _forward_keeping_activations(params, x)[0]


def predict(params, x):
    """Predicted class labels ``(batch,)``, the index of each row's largest logit (the
    library's default integer dtype); ``x`` as for ``forward``."""
    xp = array_namespace(x)
    return xp.argmax(forward(params, x), axis=1)


def _placement(x) -> dict:
    """Keyword arguments that create a new array on ``x``'s device.

    Empty where arrays have no ``device`` (MLX: one unified memory, and its creation
    functions reject ``device=``). Inside ``jax.jit``, ``device()`` of a tracer is None,
    which means "the default device".
    """
    try:
        return {"device": device(x)}
    except AttributeError:
        return {}


def _zero(xp, like):
    """A 0-d zero of ``like``'s dtype, on its device, for ``where``: a 0-d array
    broadcasts like the Python scalar that only the 2024.12 standard allows there."""
    return xp.asarray(0.0, dtype=like.dtype, **_placement(like))


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
    columns = xp.arange(classes, dtype=y.dtype, **_placement(y))
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


def loss(params, x, y):
    """Mean cross-entropy of the softmax of the logits against integer labels ``y``.

    The forward half of ``loss_and_grads``, for code that differentiates it another way
    (the tests check the hand-written gradients against ``jax.grad`` of this).
    """
    logits = forward(params, x)
    return _softmax_cross_entropy(logits, one_hot(y, logits.shape[1], logits.dtype))[0]


def backprop(params, x, y, x_t=None):
    """``(loss, grads, logits)``: ``loss_and_grads`` plus the logits it computed anyway
    (training loops use them for accuracy without a second forward pass).

    ``x_t``, optional, is ``x`` transposed into its own contiguous array (features-first).
    The first layer's weight gradient is ``x.T @ delta``; a matrix product whose left
    operand is a transposed view runs at about a third of the speed in XLA on the CPU
    (measured: 39 ms against 12 ms for MNIST's 59,000 x 784 images) and slower in
    OpenBLAS too. Full-batch training, whose ``x`` never changes, pays one copy to skip it.
    """
    xp = array_namespace(x)
    logits, inputs = _forward_keeping_activations(params, x)
    targets = one_hot(y, logits.shape[1], logits.dtype)
    mean_loss, probs = _softmax_cross_entropy(logits, targets)

    # d(mean loss)/d(logits) for softmax + cross-entropy; then the chain rule, layer by
    # layer, backwards. ReLU's derivative is where its output (the next layer's input) is > 0.
    delta = (probs - targets) / _batch_size(xp, x, probs)
    grads = {}
    for i in range(layer_count(params), 0, -1):
        a = inputs[i - 1]
        grads[f"W{i}"] = (x_t if i == 1 and x_t is not None else a.T) @ delta
        grads[f"b{i}"] = xp.sum(delta, axis=0)
        if i > 1:
            delta = xp.where(a > 0, delta @ params[f"W{i}"].T, _zero(xp, delta))
    return mean_loss, {key: grads[key] for key in params}, logits


def loss_and_grads(params, x, y):
    """Mean cross-entropy over the batch and its gradient for every parameter.

    ``y`` holds integer labels. The gradients are written out by hand (backpropagation),
    not derived by a library: the tests check them against finite differences and
    ``jax.grad``.
    """
    mean_loss, grads, _ = backprop(params, x, y)
    return mean_loss, grads


def sgd_step(params, grads, lr):
    """``params - lr * grads``, as a new dict: nothing is mutated (JAX arrays cannot be)."""
    return {key: value - lr * grads[key] for key, value in params.items()}


def accuracy(logits, y):
    """Fraction of rows whose largest logit is at the label, as a 0-d array."""
    xp = array_namespace(logits)
    return xp.mean(xp.astype(xp.argmax(logits, axis=1) == y, logits.dtype))


def train_step(params, x, y, lr):
    """One full gradient-descent step: ``(new_params, loss, accuracy)``.

    Accuracy comes from the logits the step computes anyway, so a progress bar costs no
    second forward pass. Pure, so ``backend.compile`` can turn it into one XLA program.
    """
    mean_loss, grads, logits = backprop(params, x, y)
    return sgd_step(params, grads, lr), mean_loss, accuracy(logits, y)
