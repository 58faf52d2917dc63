"""Cross-backend parity: the same network on any backend gives the NumPy float64 numbers.

The reference is this very network code run by NumPy in float64. A backend passes when,
at every *level* (forward logits and loss, every gradient, one update step, a
full-batch training run compared along the way, the final predictions), its results
converted back with ``to_numpy`` lie within ``tolerance(dtype, steps)`` of the reference,
and every result is an array of the backend's own namespace, shape and dtype (a silent
fallback to NumPy fails).

Tolerance policy, the only one in multinet
------------------------------------------
Errors are measured as ``||actual - reference|| / ||reference||`` per array (Frobenius
norm, in float64), the largest over the arrays of a level. The bound is::

    tolerance(dtype, steps) = 32 * eps(dtype) * sqrt(1 + steps)

* ``eps(dtype)``: the error unit of the dtype under test (float32: 1.2e-7, float64:
  2.2e-16). The float64 reference's own error is negligible next to float32's.
* ``32``: measured single-pass errors on this network are 0.2 to 2 eps (NumPy, JAX and
  array-api-strict on a CPU); the factor leaves room for other summation orders (GPU
  BLAS, XLA fusion, blocked reductions), whose error grows like ``sqrt(K) eps`` for
  K-term sums (K = 784 inputs: ~28), not for mistakes, which give errors of order 1.
* ``sqrt(1 + steps)``: rounding errors of independent steps add like a random walk. On
  the notebook's 100-step MNIST run the parameter error measured 0.3, 0.5, 0.9, 1.2 and
  1.7 eps after 1, 10, 25, 50 and 100 steps: ``0.17 eps * sqrt(steps)`` to two digits.
  This holds for a stable run only; an unstable one (large init *and* large learning rate
  on a wide net) amplifies rounding exponentially (measured: 1,000 eps after 100 steps on
  784-64-32-10 with the notebook's init and lr 0.2), and no backend can match another
  there to float precision, so parity runs use the stable notebook configuration.

The loss curve is compared as one vector (norm-wise, like everything else): a late loss
close to 0 is the difference of two numbers of the logits' size, so its own relative
error measures cancellation, not parity. Logits, the loss and gradients are sums of many signed terms, which can cancel to far
below the size of the terms (a one-unit layer, a saturated softmax whose ``p - 1`` is
rounding noise, a tiny loss computed from logits near 1000). A float sum is only ever
accurate relative to the sum of its terms' *magnitudes* (``|error| <= n eps |x|.|y|`` for
a dot product), so their errors are divided by the norm of that magnitude, computed from
the float64 reference by running the network on absolute values (``magnitudes``).
Without cancellation it is the result's own norm, and the rule above is unchanged.
Predictions are compared separately: a float32 run may pick another class only where
the reference's two largest logits are within the logit tolerance of each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from array_api_compat import array_namespace

from multinet import network
from multinet.checks import describe_device
from multinet.data import flatten, scale_images
from multinet.errors import BackendUnavailable
from multinet.initializers import init_params, to_host
from multinet.registry import DTYPES, Backend, get_backend

#: Levels, in the order they are reported.
LEVELS = ("forward", "loss", "grads", "step", "train", "curve", "predictions")
SAFETY = 32


def tolerance(dtype: str, steps: int = 0) -> float:
    """The largest relative error allowed after ``steps`` training steps (see module doc)."""
    return SAFETY * float(np.finfo(dtype).eps) * math.sqrt(1 + steps)


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


class NamespaceMismatch(AssertionError):
    """A backend returned an array of another library, shape or dtype than it should."""


def check_array(backend: Backend, array, shape, dtype=None, what="result"):
    """Raise ``NamespaceMismatch`` unless ``array`` is ``backend``'s, with that shape/dtype."""
    try:
        namespace = array_namespace(array)
    except TypeError:
        raise NamespaceMismatch(f"{what}: {type(array).__name__} is no array-API array") from None
    if namespace is not backend.xp:
        raise NamespaceMismatch(f"{what}: array of {namespace.__name__}, "
                                f"expected {backend.xp.__name__}")
    if tuple(array.shape) != tuple(shape):
        raise NamespaceMismatch(f"{what}: shape {tuple(array.shape)}, expected {tuple(shape)}")
    if dtype is not None and array.dtype != backend.dtype(dtype):
        raise NamespaceMismatch(f"{what}: dtype {array.dtype}, expected {dtype}")
    return array


@dataclass(frozen=True)
class Problem:
    """The inputs of one parity comparison: host arrays, network sizes, training length."""

    x: np.ndarray          # (n, features) float64, or uint8 pixels (scaled on the device)
    y: np.ndarray          # (n,) integer labels
    sizes: tuple[int, ...]
    seed: int = 0
    lr: float = 0.2
    steps: int = 100
    checkpoints: tuple[int, ...] = (1, 10, 25, 50, 100)
    #: Multiply the initial last-layer weights and biases by this (to force huge logits).
    logit_scale: float = 1.0


@dataclass
class Result:
    """Everything one backend computed for a ``Problem``, as float64 NumPy arrays."""

    logits: np.ndarray
    loss: np.ndarray
    grads: dict
    step: dict
    snapshots: dict = field(default_factory=dict)   # steps -> params
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    final_logits: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Reference only: the scale each result is accurate to (``magnitudes``).
    scales: dict = field(default_factory=dict)


def _device_inputs(backend: Backend, problem: Problem, dtype: str):
    if problem.x.dtype == np.uint8:
        x = scale_images(backend.asarray(problem.x), backend.dtype(dtype))
    else:
        x = backend.asarray(problem.x, dtype)
    return x, backend.asarray(problem.y, "int32")


def _host(backend: Backend, array):
    return np.asarray(backend.to_numpy(array), dtype=np.float64)


def _initial_params(backend: Backend, dtype: str, problem: Problem):
    params = init_params(problem.sizes, seed=problem.seed, backend=backend, dtype=dtype)
    last = network.layer_count(params)
    for key in (f"W{last}", f"b{last}"):
        params[key] = params[key] * problem.logit_scale
    return params


def run(backend: Backend, dtype: str, problem: Problem) -> Result:
    """Compute every level of ``problem`` on ``backend`` in ``dtype``, checking namespaces."""
    backend.enable_dtype(dtype)
    x, y = _device_inputs(backend, problem, dtype)
    params = _initial_params(backend, dtype, problem)
    n, classes = x.shape[0], problem.sizes[-1]

    logits = check_array(backend, backend.compile(network.forward)(params, x), (n, classes),
                         dtype, "forward")
    loss, grads = backend.compile(network.loss_and_grads)(params, x, y)
    check_array(backend, loss, (), dtype, "loss")
    for key, value in grads.items():
        check_array(backend, value, params[key].shape, dtype, f"gradient {key}")
    stepped = backend.compile(network.sgd_step)(params, grads, problem.lr)
    for key, value in stepped.items():
        check_array(backend, value, params[key].shape, dtype, f"updated {key}")
    result = Result(logits=_host(backend, logits), loss=_host(backend, loss),
                 grads=to_host(grads, backend), step=to_host(stepped, backend))

    train_step = backend.compile(network.train_step)
    losses = []
    for i in range(1, problem.steps + 1):
        params, step_loss, _ = train_step(params, x, y, problem.lr)
        losses.append(step_loss)  # stays on the device: no host sync inside the loop
        if i in problem.checkpoints:
            result.snapshots[i] = to_host(params, backend)
    result.losses = np.array([_host(backend, value) for value in losses])
    result.predictions = np.asarray(backend.to_numpy(
        check_array(backend, network.predict(params, x), (n,), None, "predict")))
    result.final_logits = _host(backend, network.forward(params, x))
    return result


def magnitudes(params: dict, x: np.ndarray, y: np.ndarray, lr: float) -> dict:
    """The scale each result is accurate to: the computation re-run on magnitudes.

    A float sum is accurate relative to the sum of the magnitudes of its terms (for a dot
    product, ``|error| <= n eps |x|.|y|``), and an error made early travels on through
    ``|W|``. So: forward on ``|x|``, ``|W|``, ``|b|`` gives each logit's scale; a logit
    off by ``eps * m`` moves its row's loss by at most that, so the loss's scale is
    ``|loss| + mean_rows(max m)``; backprop on magnitudes, starting from
    ``(p + one_hot) / n`` (the two terms of the softmax residual) widened by the logits'
    own error, gives each gradient's scale, and ``|W| + lr * scale`` each updated
    parameter's. Without cancellation every scale is about the result's own size.
    Returns float64 NumPy: ``{"logits", "loss", "W1", "b1", ..., "step W1", ...}``.
    """
    count = network.layer_count(params)
    inputs, scales = [x], [np.abs(x)]
    for i in range(1, count):
        inputs.append(np.maximum(inputs[-1] @ params[f"W{i}"] + params[f"b{i}"], 0.0))
        scales.append(scales[-1] @ np.abs(params[f"W{i}"]) + np.abs(params[f"b{i}"]))
    logits = inputs[-1] @ params[f"W{count}"] + params[f"b{count}"]
    logit_scale = scales[-1] @ np.abs(params[f"W{count}"]) + np.abs(params[f"b{count}"])
    shifted = logits - logits.max(axis=1, keepdims=True)
    sums = np.exp(shifted).sum(axis=1, keepdims=True)
    probs = np.exp(shifted) / sums
    targets = np.eye(logits.shape[1])[y]
    loss = np.mean(np.log(sums[:, 0]) - shifted[np.arange(len(y)), y])
    row_scale = logit_scale.max(axis=1, keepdims=True)
    result = {"logits": logit_scale, "loss": abs(loss) + float(row_scale.mean())}
    delta = (probs + targets) * (1 + 2 * row_scale) / len(x)
    for i in range(count, 0, -1):
        result[f"W{i}"] = scales[i - 1].T @ delta
        result[f"b{i}"] = delta.sum(axis=0)
        delta = (delta @ np.abs(params[f"W{i}"]).T) * (inputs[i - 1] > 0)
    for key in params:
        result[f"step {key}"] = np.abs(params[key]) + lr * result[key]
    return result


def reference(problem: Problem) -> Result:
    """The reference: NumPy in float64."""
    numpy = get_backend("numpy")
    result = run(numpy, "float64", problem)
    x, y = _device_inputs(numpy, problem, "float64")
    result.scales = magnitudes(_initial_params(numpy, "float64", problem), x, np.asarray(y),
                               problem.lr)
    return result


def prediction_mismatches(predictions, ref: Result, dtype: str, steps: int) -> int:
    """Rows whose predicted class differs from the reference's where the reference is
    no near tie. Within tolerance, a row of logits may be off by ``tolerance * ||row||``
    in any entry, so two classes closer than twice that may legitimately swap."""
    logits = ref.final_logits
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    near_tie = margin <= 2 * tolerance(dtype, steps) * np.linalg.norm(logits, axis=1)
    differs = predictions != np.argmax(logits, axis=1)
    return int(np.sum(differs & ~near_tie))


def compare(actual: Result, ref: Result, dtype: str, problem: Problem) -> dict:
    """Errors and tolerances of every level: ``{level: (error, tolerance)}``."""
    levels = {
        "forward": (relative_error(actual.logits, ref.logits, ref.scales["logits"]),
                    tolerance(dtype)),
        "loss": (relative_error(actual.loss, ref.loss, ref.scales["loss"]), tolerance(dtype)),
        "grads": (max(relative_error(actual.grads[k], ref.grads[k], ref.scales[k])
                      for k in ref.grads), tolerance(dtype)),
        "step": (max(relative_error(actual.step[k], ref.step[k], ref.scales[f"step {k}"])
                     for k in ref.step), tolerance(dtype, 1)),
    }
    if problem.steps:
        levels["train"] = max(
            ((max_relative_error(actual.snapshots[s], ref.snapshots[s]), tolerance(dtype, s))
             for s in actual.snapshots), key=lambda pair: pair[0] / pair[1])
        # The loss curve as one vector: a late loss near 0 is the difference of two
        # numbers of the logits' size, so its own relative error says nothing.
        levels["curve"] = (relative_error(actual.losses, ref.losses),
                           tolerance(dtype, problem.steps))
    mismatches = prediction_mismatches(actual.predictions, ref, dtype, problem.steps)
    levels["predictions"] = (float(mismatches), 0.0)
    return levels


def passed(levels: dict) -> bool:
    return all(error <= bound for error, bound in levels.values())


def mnist_problem(dataset, samples: int = 2048, steps: int = 100) -> Problem:
    """The standard parity problem: the notebook's network on the first ``samples``
    training images, ``steps`` full-batch steps at lr 0.2."""
    checkpoints = tuple(s for s in (1, 10, 25, 50, 100, 250, 500, 1000) if s < steps) + (steps,)
    return Problem(x=flatten(dataset.train_images[:samples]),
                   y=dataset.train_labels[:samples], sizes=(784, 10, 10), steps=steps,
                   checkpoints=checkpoints if steps else ())


def _placements(name: str) -> list:
    """``(backend or None, reason)`` for each kind of device ``name`` offers
    (``Backend.device_choices``; just its one device for most)."""
    try:
        base = get_backend(name)
    except BackendUnavailable as exc:
        return [(None, str(exc))]
    placements = []
    for device in base.device_choices or (None,):
        try:
            placements.append((base.configured(device), None))
        except BackendUnavailable as exc:
            placements.append((None, str(exc)))
    return placements


def report(problem: Problem, backends, dtypes=DTYPES) -> list[dict]:
    """One row per (backend, device, dtype): errors, tolerances and verdict; unavailable
    ones (a backend that cannot run here, a dtype it cannot use) get a row with the
    reason. A backend with a choice of devices is checked on each."""
    ref = reference(problem)
    rows = []
    for name, (backend, reason) in ((n, p) for n in backends for p in _placements(n)):
        for dtype in dtypes:
            row = {"backend": name, "dtype": dtype}
            try:
                if backend is None:
                    raise BackendUnavailable(reason)
                row["device"] = describe_device(backend.device, backend.platform)
                row["platform"] = backend.platform
                levels = compare(run(backend, dtype, problem), ref, dtype, problem)
            except BackendUnavailable as exc:
                rows.append({**row, "verdict": "skipped", "reason": str(exc)})
                continue
            except NamespaceMismatch as exc:
                rows.append({**row, "verdict": "fail", "reason": str(exc)})
                continue
            row["errors"] = {level: error for level, (error, _) in levels.items()}
            row["tolerances"] = {level: bound for level, (_, bound) in levels.items()}
            row["verdict"] = "pass" if passed(levels) else "fail"
            rows.append(row)
    return rows
