"""Cross-backend parity: the same network on any backend gives the NumPy float64 numbers.

The reference is this very network code run by NumPy in float64. A backend passes when,
at every *level* (forward logits and loss, every gradient, one update step, a
full-batch training run compared along the way, the final predictions), its results
converted back with ``to_numpy`` lie within ``tolerance`` of the reference, and every
result is an array of the backend's own namespace, shape and dtype (a silent fallback to
NumPy fails).

The tolerance policy, the only one in multinet, is ``multinet.rounding``'s:
``tolerance(dtype, steps, length)`` of an error relative to ``magnitudes``' scale, for
the longest sum behind each level (``reduction_lengths``); docs/parity.md has the
measurements behind it. The loss curve is compared as one vector (a late loss near 0 is
the difference of numbers of the logits' size). A float32 run may predict another class
only where the reference's two largest logits are within the logit tolerance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from array_api_compat import array_namespace

from multinet import layers as L
from multinet import network
from multinet.checks import describe_device
from multinet.data import flatten, scale_images
from multinet.errors import BackendUnavailable
from multinet.initializers import init_params, to_host
from multinet.registry import DTYPES, Backend, get_backend
# The tolerance model, also offered here: ``parity.tolerance`` is what tests and tools use.
from multinet.rounding import (SAFETY, magnitudes, max_relative_error,  # noqa: F401
                               reduction_lengths, relative_error, tolerance)
from multinet.training.config import TrainConfig

#: Levels, in the order they are reported.
LEVELS = ("forward", "loss", "grads", "step", "train", "curve", "predictions")

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
    #: A perceptron's layer widths, inputs first; ignored where ``layers`` is given.
    sizes: tuple[int, ...] = ()
    seed: int = 0
    lr: float = 0.2
    steps: int = 100
    checkpoints: tuple[int, ...] = (1, 10, 25, 50, 100)
    #: Multiply the initial last-layer weights and biases by this (to force huge logits).
    logit_scale: float = 1.0
    #: Any network as ``multinet.layers`` records, output layer included; empty for the
    #: perceptron of ``sizes``.
    layers: tuple = ()
    init: str = "uniform"

    def network(self) -> tuple:
        """The network's ``Layer`` records, output layer included."""
        if self.layers:
            return L.parse_layers(self.layers)
        return network.mlp_layers(self.sizes[1:-1], self.sizes[-1])

    def lengths(self) -> dict:
        """``reduction_lengths`` of this network on this batch."""
        return reduction_lengths(self.network(), self.x.shape[1], self.x.shape[0])


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
    if problem.layers:
        params = init_params(layers=problem.network(), features=problem.x.shape[1],
                             seed=problem.seed, backend=backend, dtype=dtype,
                             init=problem.init)
    else:
        params = init_params(problem.sizes, seed=problem.seed, backend=backend, dtype=dtype,
                             init=problem.init)
    last = network.layer_count(params)
    for key in (f"W{last}", f"b{last}"):
        params[key] = params[key] * problem.logit_scale
    return params


def run(backend: Backend, dtype: str, problem: Problem) -> Result:
    """Compute every level of ``problem`` on ``backend`` in ``dtype``, checking namespaces."""
    backend.enable_dtype(dtype)
    x, y = _device_inputs(backend, problem, dtype)
    params = _initial_params(backend, dtype, problem)
    layers = problem.network() if problem.layers else None
    n, classes = x.shape[0], problem.network()[-1].size

    def compiled(function):
        return backend.compile(functools.partial(function, layers=layers))

    logits = check_array(backend, compiled(network.forward)(params, x), (n, classes),
                         dtype, "forward")
    loss, grads = compiled(network.loss_and_grads)(params, x, y)
    check_array(backend, loss, (), dtype, "loss")
    for key, value in grads.items():
        check_array(backend, value, params[key].shape, dtype, f"gradient {key}")
    stepped = backend.compile(network.sgd_step)(params, grads, problem.lr)
    for key, value in stepped.items():
        check_array(backend, value, params[key].shape, dtype, f"updated {key}")
    result = Result(logits=_host(backend, logits), loss=_host(backend, loss),
                 grads=to_host(grads, backend), step=to_host(stepped, backend))

    train_step = compiled(network.train_step)
    losses = []
    for i in range(1, problem.steps + 1):
        params, step_loss, _ = train_step(params, x, y, problem.lr)
        losses.append(step_loss)  # stays on the device: no host sync inside the loop
        if i in problem.checkpoints:
            result.snapshots[i] = to_host(params, backend)
    result.losses = np.array([_host(backend, value) for value in losses])
    result.predictions = np.asarray(backend.to_numpy(
        check_array(backend, network.predict(params, x, layers), (n,), None, "predict")))
    result.final_logits = _host(backend, network.forward(params, x, layers))
    return result


def reference(problem: Problem) -> Result:
    """The reference: NumPy in float64."""
    numpy = get_backend("numpy")
    result = run(numpy, "float64", problem)
    x, y = _device_inputs(numpy, problem, "float64")
    result.scales = magnitudes(_initial_params(numpy, "float64", problem), x, np.asarray(y),
                               problem.lr, problem.network())
    return result


def prediction_mismatches(predictions, ref: Result, dtype: str, steps: int,
                          length: int = 0) -> int:
    """Rows whose predicted class differs from the reference's where the reference is
    no near tie. Within tolerance, a row of logits may be off by ``tolerance * ||row||``
    in any entry, so two classes closer than twice that may legitimately swap."""
    logits = ref.final_logits
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    bound = tolerance(dtype, steps, length)
    near_tie = margin <= 2 * bound * np.linalg.norm(logits, axis=1)
    differs = predictions != np.argmax(logits, axis=1)
    return int(np.sum(differs & ~near_tie))


def compare(actual: Result, ref: Result, dtype: str, problem: Problem) -> dict:
    """Errors and tolerances of every level: ``{level: (error, tolerance)}``, each
    tolerance for the longest sum behind its level (``Problem.lengths``)."""
    lengths = problem.lengths()
    forward, backward = lengths["forward"], lengths["backward"]
    levels = {
        "forward": (relative_error(actual.logits, ref.logits, ref.scales["logits"]),
                    tolerance(dtype, 0, forward)),
        "loss": (relative_error(actual.loss, ref.loss, ref.scales["loss"]),
                 tolerance(dtype, 0, lengths["loss"])),
        "grads": (max(relative_error(actual.grads[k], ref.grads[k], ref.scales[k])
                      for k in ref.grads), tolerance(dtype, 0, backward)),
        "step": (max(relative_error(actual.step[k], ref.step[k], ref.scales[f"step {k}"])
                     for k in ref.step), tolerance(dtype, 1, backward)),
    }
    if problem.steps:
        levels["train"] = max(
            ((max_relative_error(actual.snapshots[s], ref.snapshots[s]),
              tolerance(dtype, s, backward)) for s in actual.snapshots),
            key=lambda pair: pair[0] / pair[1])
        # The loss curve as one vector: a late loss near 0 is the difference of two
        # numbers of the logits' size, so its own relative error says nothing.
        levels["curve"] = (relative_error(actual.losses, ref.losses),
                           tolerance(dtype, problem.steps, backward))
    mismatches = prediction_mismatches(actual.predictions, ref, dtype, problem.steps,
                                       backward)
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


#: The network of each problem ``multinet parity --preset`` checks, and how it is run.
CNN_SAMPLES, CNN_STEPS, CNN_LR = 128, 10, 0.05


def cnn_problem(dataset, samples: int = CNN_SAMPLES, steps: int = CNN_STEPS,
                layers=None) -> Problem:
    """The convolutional parity problem: the ``cnn`` preset's network (or ``layers``,
    output layer included) with He's initialisation on the first ``samples`` training
    images, ``steps`` full-batch gradient-descent steps at lr 0.05.

    By default one batch of the preset's size, 128 images, whose first weight gradient
    sums 100,352 terms (``reduction_lengths``), and a short run: a ReLU unit whose input
    is within rounding of 0 can switch between dtypes and move its whole gradient, so
    long runs part for a reason that is no backend's (docs/cnn.md measures it).
    """
    if layers is None:
        layers = TrainConfig.from_preset("cnn").network_layers()
    checkpoints = tuple(s for s in (1, 5, 10, 25, 50, 100) if s < steps) + (steps,)
    return Problem(x=flatten(dataset.train_images[:samples]),
                   y=dataset.train_labels[:samples], layers=L.parse_layers(layers),
                   init="he", lr=CNN_LR, steps=steps, checkpoints=checkpoints if steps else ())


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
