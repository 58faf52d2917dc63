"""Training: presets, the step, the loop, evaluation.

Two kinds of run share one loop:

* **full batch** (``batch_size=0``, the notebook's ``--preset notebook``): every step sees
  all training images, which stay on the device already scaled; an "epoch" is one step.
* **minibatch** (``--preset mlp``): the ``uint8`` images stay on the device and each step
  gathers and scales its batch there. Batches have one fixed shape (the last partial
  batch of an epoch is dropped), so JAX compiles the step once.

The order of the images in epoch ``e`` is ``default_rng([seed, e]).permutation``, so a
run resumed from a checkpoint (epoch, batch within it, parameters, optimizer state)
continues exactly as the uninterrupted run would. The loop reads values back to the host
only at log points, for the progress bar and the metrics; after starting a step (or a
compiled run of ``SCAN_STEPS`` steps) it waits for the previous one, so no more than one
is ever queued and a signal is acted on within two (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace
from tqdm.auto import tqdm

from multinet import heap, network, optim
from multinet.data import CLASSES, Dataset, flatten, scale_images, split_indices
from multinet.errors import MultinetError, argument
from multinet.initializers import SCHEMES, init_params
from multinet.registry import Backend

DTYPES = ("float32", "float64")
PRESETS = {
    # The notebook: 784-10-10, uniform(-0.5, 0.5) init, full-batch gradient descent.
    "notebook": dict(hidden=(10,), lr=0.2, optimizer="sgd", batch_size=0, epochs=500,
                     init="uniform", schedule="constant", log_every=10),
    # A stronger MLP: 784-512-256-10, He init, Adam with a cosine-decayed learning rate.
    "mlp": dict(hidden=(512, 256), lr=1e-3, optimizer="adam", batch_size=128, epochs=10,
                init="he", schedule="cosine", log_every=1),
}


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters. The defaults are the notebook preset."""

    preset: str = "notebook"
    hidden: tuple[int, ...] = (10,)
    lr: float = 0.2
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    #: Images per step; 0 means the full training set (one step per epoch).
    batch_size: int = 0
    #: Passes over the training set; with ``batch_size=0``, gradient-descent iterations.
    epochs: int = 500
    seed: int = 0
    dtype: str = "float32"
    dev_size: int = 1000
    init: str = "uniform"
    #: Epochs between log records (progress bar, metrics, divergence check).
    log_every: int = 10

    def __post_init__(self):
        self._normalise_types()
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose {', '.join(PRESETS)}")
        for name, low in (("epochs", 0), ("batch_size", 0), ("seed", 0), ("dev_size", 0),
                          ("log_every", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not (_finite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be a finite number > 0, got {self.lr}")
        if not (_finite(self.momentum) and 0 <= self.momentum < 1):
            # mu >= 1 makes the velocity a sum that never forgets: it grows without bound.
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight decay must be a finite number >= 0, "
                             f"got {self.weight_decay}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if self.schedule not in optim.SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.init not in SCHEMES:
            raise ValueError(f"unknown init {self.init!r}; choose {', '.join(SCHEMES)}")
        self.optimizer_spec()  # validates the optimizer fields

    def _normalise_types(self) -> None:
        """Every field as the plain Python type of its default (``int`` from a NumPy
        integer, ``float`` from an ``int``, ``hidden`` a tuple of ints), so a configuration
        always writes as JSON and reads back from its own checkpoint. Any other type (a
        bool, a fraction where a count is wanted, text where a number is, ``hidden="32"``)
        raises ``TypeError`` naming the field: before the work, not at its first save."""
        for spec in dataclasses.fields(self):
            name, value, default = spec.name, getattr(self, spec.name), spec.default
            if name == "hidden":
                try:
                    items = None if isinstance(value, (str, bytes)) else tuple(value)
                except TypeError:  # not iterable
                    items = None
                if items is None or not all(map(is_integer, items)):
                    raise TypeError(f"hidden must be a sequence of integers (one width per "
                                    f"hidden layer), got {value!r}")
                value = tuple(int(h) for h in items)
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise TypeError(f"{name} must be a string, got {value!r}")
            elif isinstance(default, int):
                if not is_integer(value):
                    raise TypeError(f"{name} must be an integer, got {value!r}")
                value = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError(f"{name} must be a number, got {value!r}")
                try:
                    value = float(value)
                except OverflowError:  # an integer too large: the range checks refuse it
                    pass
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values) -> "TrainConfig":
        """A configuration from JSON (a checkpoint's): exactly the fields, each of its
        JSON type (an integer where one is expected, never a boolean), then the value
        checks above. Raises ``ValueError`` naming the field."""
        if not isinstance(values, dict):
            raise ValueError(f"expected an object, got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing, unknown = set(fields) - set(values), set(values) - set(fields)
        if missing or unknown:
            raise ValueError(", ".join([*(f"{k} missing" for k in sorted(missing)),
                                        *(f"unknown field {k!r}" for k in sorted(unknown))]))
        for name, value in values.items():
            kind = type(getattr(cls, name, None)) if name != "hidden" else list
            ok = (isinstance(value, str) if kind is str else
                  is_int(value) if kind is int else
                  (is_int(value) or isinstance(value, float)) if kind is float else
                  isinstance(value, list) and len(value) > 0 and all(map(is_int, value)))
            if not ok:
                wanted = {str: "a string", int: "an integer", float: "a number",
                          list: "a non-empty list of integers"}[kind]
                raise ValueError(f"{name} must be {wanted}, got {json.dumps(value)[:40]}")
        return cls(**values)

    @classmethod
    def from_preset(cls, preset: str = "notebook", **overrides) -> "TrainConfig":
        """The preset's values, then every override that is not None."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return cls(preset=preset, **{**PRESETS[preset], **chosen})

    def optimizer_spec(self) -> optim.Optimizer:
        return optim.Optimizer(self.optimizer, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}

    def describe_step(self) -> str:
        """The hyperparameters that decide how far a step goes, as set for this run:
        ``"optimizer momentum, lr 0.05 (cosine schedule), momentum 0.99, batch size 64"``."""
        parts = [f"optimizer {self.optimizer}", f"lr {self.lr:g} ({self.schedule} schedule)"]
        if self.optimizer == "momentum":
            parts.append(f"momentum {self.momentum:g}")
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay:g}")
        parts.append(f"batch size {self.batch_size}" if self.batch_size else "full batch")
        return ", ".join(parts)


def is_int(value) -> bool:
    """A Python ``int``, not a bool: what JSON (a checkpoint's metadata) holds."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_integer(value) -> bool:
    """An integer of any kind (Python's, NumPy's), not a bool: what callers may pass."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _finite(value) -> bool:
    """Whether a number is finite; an integer too large for a float is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class TrainingDiverged(MultinetError):
    """The loss stopped being a finite number."""


class TrainingInterrupted(MultinetError):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run; its state was saved to
    ``path`` (None: nothing was saved). ``signum``: the signal's number."""

    def __init__(self, message: str, path: Path | None, signum: int = signal.SIGINT):
        super().__init__(message)
        self.path = path
        self.signum = signum


class TrainingStopped(MultinetError):
    """The run could not go on (a checkpoint or the metrics could not be written, memory
    ran out); the message says where its state was saved instead, if anywhere."""


@dataclass(frozen=True)
class Saved:
    """Where a state was saved, and why there if it is not where it was meant to go
    (what an ``on_interrupt`` callback may return instead of a bare path)."""

    path: Path
    note: str = ""


@dataclass
class TrainState:
    """Where a run is: everything a checkpoint holds besides the configuration."""

    params: dict
    opt_state: dict
    epoch: int = 0          # the epoch in progress (or next to start)
    batch: int = 0          # the next batch within that epoch
    step: int = 0           # optimizer steps taken so far
    seconds: float = 0.0    # training time so far, over all sessions
    history: list = field(default_factory=list)
    #: Sums of the loss and accuracy of batches ``0 .. batch-1`` of the epoch in progress,
    #: so that an epoch interrupted and resumed reports the mean over all its batches.
    #: None: not known (a checkpoint written before multinet stored them).
    loss_sum: object = 0.0
    accuracy_sum: object = 0.0


@dataclass
class TrainResult:
    state: TrainState
    summary: dict

    @property
    def params(self):
        return self.state.params

    @property
    def history(self):
        return self.state.history


def chunked_backprop(params, x, y, chunk: int):
    """``(loss, grads, accuracy)`` of the whole batch, computed ``chunk`` rows at a time.

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
                                                         y[start:stop])
        loss = loss + weight * part_loss
        accuracy = accuracy + weight * network.accuracy(logits, y[start:stop])
        grads = ({k: weight * g for k, g in part_grads.items()} if grads is None
                 else {k: grads[k] + weight * g for k, g in part_grads.items()})
    return loss, grads, accuracy


def make_train_step(optimizer: optim.Optimizer, chunk: int | None = None,
                    in_place: bool = False):
    """``step(params, opt_state, x, y, lr, x_t=None) -> (params, opt_state, loss,
    accuracy)``; ``x_t`` as in ``network.backprop``; with ``chunk``, the batch is
    processed ``chunk`` rows at a time (``chunked_backprop``) and ``x_t`` is not used.
    ``in_place`` (only for ``Backend.mutable_arrays``): the update overwrites the
    arrays of ``params`` and ``opt_state`` (``optim.update_in_place``)."""
    update = optim.update_in_place if in_place else optim.update

    def train_step(params, opt_state, x, y, lr, x_t=None):
        if chunk:
            loss, grads, accuracy = chunked_backprop(params, x, y, chunk)
        else:
            loss, grads, logits = network.backprop(params, x, y, x_t)
            accuracy = network.accuracy(logits, y)
        params, opt_state = update(optimizer, params, grads, opt_state, lr)
        return params, opt_state, loss, accuracy

    return train_step


def make_minibatch_step(optimizer: optim.Optimizer, in_place: bool = False):
    """Like ``make_train_step``, gathering and scaling the batch ``index`` on the device."""
    train_step = make_train_step(optimizer, in_place=in_place)

    def minibatch_step(params, opt_state, images, labels, index, lr):
        xp = array_namespace(images)
        x = scale_images(xp.take(images, index, axis=0), params["W1"].dtype)
        return train_step(params, opt_state, x, xp.take(labels, index, axis=0), lr)

    return minibatch_step


def make_epoch_runner(backend: Backend, optimizer: optim.Optimizer, dtype: str):
    """``run(params, opt_state, images, labels, rows, lrs) -> (params, opt_state,
    loss_sum, accuracy_sum)``: one minibatch step per row of ``rows`` (batch indices) at
    the matching learning rate of ``lrs`` (a host array), as one compiled program where
    the backend can (``Backend.compile_scan``), else ``None``: the caller then runs the
    compiled step batch by batch."""
    if backend.compile_scan is None:
        return None
    minibatch_step = make_minibatch_step(optimizer)

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


def full_batch_inputs(backend: Backend, split: "DeviceSplit", dtype: str):
    """``(x, x_t)``: the scaled images, and for backends that do not process full batches
    in chunks a contiguous features-first copy, which makes the gradient's product fast
    (``network.backprop``); ``x_t`` is None for chunking backends."""
    x = scale_images(split.images, backend.dtype(dtype))
    if backend.fuse_chunk:
        return x, None
    x_t = scale_images(backend.asarray(np.ascontiguousarray(split.host_images.T)),
                       backend.dtype(dtype))
    return x, x_t


@dataclass(frozen=True)
class DeviceSplit:
    """One split on the device: ``uint8`` images ``(n, features)`` and int32 labels."""

    images: object
    labels: object
    host_images: np.ndarray   # (n, features) uint8
    host_labels: np.ndarray

    @classmethod
    def from_host(cls, backend: Backend, images, labels) -> "DeviceSplit":
        flat = flatten(images)
        return cls(images=backend.asarray(flat), labels=backend.asarray(labels, "int32"),
                   host_images=flat, host_labels=np.asarray(labels))

    def __len__(self) -> int:
        return self.images.shape[0]


def _own_copy(backend: Backend, tree: dict) -> dict:
    """A copy of every array of a (nested) dict, for steps that update in place."""
    return {k: _own_copy(backend, v) if isinstance(v, dict) else
            backend.xp.asarray(v, copy=True) for k, v in tree.items()}


def _predict_scaled(params, images):
    return network.predict(params, scale_images(images, params["W1"].dtype))


#: Images per compiled prediction call (``make_predictor``) on a CPU: a 2,048 x 512
#: float32 hidden activation (4 MiB) stays in cache between the layers where one of
#: 10,000 images (20 MiB) does not. Measured on 2 AMD EPYC (Zen 3) cores, 10,000 images,
#: interleaved in one process: JAX 457 -> 379 ms (median) from 10,000 to 2,000 per call,
#: NumPy within the noise (437 -> 406 ms) (docs/performance.md).
CPU_PREDICT_CHUNK = 2048
#: ... and on a GPU, where every call costs a launch and the activations fit anyway.
GPU_PREDICT_CHUNK = 10000


def make_predictor(backend: Backend, chunk: int | None = None):
    """``predict(params, images) -> host labels`` for device ``uint8`` images, compiled
    once and run ``chunk`` images at a time (bounded memory for the activations;
    default: ``CPU_PREDICT_CHUNK`` or ``GPU_PREDICT_CHUNK`` by ``backend.platform``)."""
    if chunk is None:
        chunk = CPU_PREDICT_CHUNK if backend.platform == "cpu" else GPU_PREDICT_CHUNK
    predict = backend.compile(_predict_scaled)

    def predict_labels(params, images) -> np.ndarray:
        n = images.shape[0]
        parts = [np.asarray(backend.to_numpy(predict(params, images[i:min(i + chunk, n), ...])))
                 for i in range(0, n, chunk)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    return predict_labels


def accuracy_of(predict_labels, params, split: DeviceSplit) -> float:
    if len(split) == 0:
        return math.nan
    return float(np.mean(predict_labels(params, split.images) == split.host_labels))


def splits_on_device(backend: Backend, config: TrainConfig, dataset: Dataset) -> dict:
    train_idx, dev_idx = split_indices(len(dataset.train_labels), config.dev_size, config.seed)
    return {
        "train": DeviceSplit.from_host(backend, dataset.train_images[train_idx],
                                       dataset.train_labels[train_idx]),
        "dev": DeviceSplit.from_host(backend, dataset.train_images[dev_idx],
                                     dataset.train_labels[dev_idx]),
        "test": DeviceSplit.from_host(backend, dataset.test_images, dataset.test_labels),
    }


def initial_state(config: TrainConfig, backend: Backend, features: int) -> TrainState:
    sizes = (features, *config.hidden, CLASSES)
    params = init_params(sizes, seed=config.seed, backend=backend, dtype=config.dtype,
                         init=config.init)
    return TrainState(params=params, opt_state=optim.init_state(config.optimizer_spec(), params))


#: Signals that stop a run cleanly: Ctrl-C; SIGTERM, which SLURM, Kubernetes, systemd and
#: ``timeout`` send before SIGKILL; SIGHUP, a closed terminal or ssh session.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))

#: Steps per compiled program where a backend compiles runs of steps (``compile_scan``).
#: A signal is acted on between two programs and at most one more is queued behind the
#: running one, so a stop waits for at most two programs: about 2 x 64 steps (measured in
#: docs/reliability.md), instead of a whole epoch, or several when nothing reads a result.
SCAN_STEPS = 64


class _StopSignals:
    """Within this block, the first of ``STOP_SIGNALS`` sets ``signum`` instead of ending
    the process, so the loop can stop between two steps, with parameters, optimizer state
    and counters consistent, and save them. A second one stops at once, saving nothing
    (``TrainingInterrupted``), as a second Ctrl-C does in most tools."""

    def __init__(self):
        self.signum = 0

    def __enter__(self):
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:
            raise TrainingInterrupted(
                f"stopped at once by a second signal ({signal.Signals(signum).name}); "
                "nothing more was saved", None, signum)
        self.signum = signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False


class _Saves:
    """``checkpoint`` plus a record of the last save: where, and at which epoch and step."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint
        self.path = self.epoch = self.step = None

    def __call__(self, state) -> None:
        self.path = _saved(self.checkpoint(state)).path
        self.epoch, self.step = state.epoch, state.step


def _saved(result) -> Saved:
    return result if isinstance(result, Saved) else Saved(Path(result))


def _flat_arrays(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat_arrays(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def non_finite(backend: Backend, state: TrainState) -> list[str]:
    """Names of the parameters (``W1``) and optimizer-state arrays (``opt/v/W1``) holding
    a NaN or an infinity. A NaN can hide from the loss (ReLU maps it to 0 and the loss is
    taken before the last update), so the arrays themselves are checked."""
    arrays = [*_flat_arrays(state.params), *_flat_arrays(state.opt_state, "opt/")]
    xp = backend.xp
    return [name for name, value in arrays
            if not bool(backend.to_numpy(xp.all(xp.isfinite(value))))]


def _diverged(config: TrainConfig, state: TrainState, what: str, saves: _Saves):
    advice = f"a smaller {argument('lr')}" + (f" or {argument('momentum')}"
                                              if config.optimizer == "momentum" else "")
    if config.weight_decay and config.lr * config.weight_decay >= 1:
        advice += (f" or {argument('weight_decay')} (lr x weight decay >= 1 overshoots "
                   "every step)")
    kept = (f"the last checkpoint, {saves.path}, is from epoch {saves.epoch} (step "
            f"{saves.step}), before it diverged" if saves.path is not None
            else "no checkpoint was written by this run")
    return TrainingDiverged(f"training diverged: {what} by epoch {state.epoch} (step "
                            f"{state.step}) with {config.describe_step()}; try {advice}; "
                            f"{kept}")


def _human(size: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 2**10:.1f} KiB"


def memory_needed(config: TrainConfig, features: int, n_train: int) -> tuple[int, int]:
    """``(host_bytes, device_bytes)`` a run needs at least: the float64 draw of the weights
    and their cast on the host; parameters, gradients, the updated copy and the optimizer
    state (old and new), activations of one batch and the images on the device. An
    estimate for the message that refuses a run that cannot fit, not an accounting."""
    sizes = (features, *config.hidden, CLASSES)
    count = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    item = 8 if config.dtype == "float64" else 4
    copies = {"sgd": 0, "momentum": 1, "adam": 2}[config.optimizer]
    rows = n_train if not config.batch_size else min(config.batch_size, n_train)
    host = count * (8 + item)
    device = (count * item * (3 + 2 * copies) + rows * sum(sizes[1:]) * item * 3
              + n_train * features * (1 + (0 if config.batch_size else 2 * item)))
    return host, device


def _physical_memory() -> int | None:
    """This machine's memory, or the container's limit (cgroup v2) where that is lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _memory_message(config: TrainConfig, features: int, n_train: int, backend: Backend):
    host, device = memory_needed(config, features, n_train)
    needed = host + device if backend.platform == "cpu" else host
    sizes = "-".join(map(str, (features, *config.hidden, CLASSES)))
    where = ("" if backend.platform == "cpu"
             else f" on the host, plus {_human(device)} on the device")
    return needed, (f"the network {sizes} needs about {_human(needed)} of memory{where} "
                    f"(parameters, optimizer state and activations in {config.dtype} with "
                    f"{config.optimizer})")


def check_memory(config: TrainConfig, backend: Backend, features: int, n_train: int) -> None:
    """Refuse a network that cannot fit in this machine's memory, before allocating."""
    needed, message = _memory_message(config, features, n_train, backend)
    total = _physical_memory()
    if total is not None and needed > total:
        raise MultinetError(f"{message}; this machine has {_human(total)}: choose smaller "
                            f"{argument('hidden')} widths")


def check_position(state: TrainState, batches: int, features: int) -> None:
    """A state to continue from must fit the data: its counters this epoch length, its
    first layer the images' width and its last the classes."""
    sizes = network.layer_sizes(state.params)
    if sizes[0] != features or sizes[-1] != CLASSES:
        raise MultinetError(f"the network takes {sizes[0]} inputs and gives {sizes[-1]} "
                            f"classes; the data has {features} pixels and {CLASSES} classes")
    if not 0 <= state.batch < batches or state.step != state.epoch * batches + state.batch:
        raise MultinetError(
            f"the saved position (epoch {state.epoch}, batch {state.batch}, step "
            f"{state.step}) does not fit this data's {batches} batch(es) per epoch")


def _logged_records(path) -> list[dict]:
    """The records at the end of a metrics file (its last 64 KiB), oldest first; lines
    that are not records (cut off by a crash, or not written by multinet) left out."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:  # no file yet
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and type(record.get("step")) is int:
            records.append(record)
    return records


def metrics_to_write_first(metrics_path, state: TrainState) -> list[dict]:
    """The records of ``state.history`` a resumed run appends to its metrics file before
    its own: those after the last one the file holds (a run killed between saving a
    checkpoint and logging its line), all of them where it holds none.

    A record is this run's when it equals one of the history's as JSON text (which keeps
    every float exactly, NaN included), not by its step: one file may hold several runs, each from step 1. Raises
    ``MultinetError`` when the record after this run's last in the file goes past the
    state's step: a run from this checkpoint (or an older copy of it) logged those steps
    already, and going on would write them a second time. A history that is empty (a
    state saved before its first log point) leaves nothing to tell runs apart: it goes on.
    """
    if not state.history:
        return []
    records = _logged_records(metrics_path)
    # Compared as JSON text: NaN (a dev accuracy without a dev split) equals itself there.
    history = [json.dumps(r, sort_keys=True) for r in state.history]
    for i in range(len(records) - 1, -1, -1):
        if json.dumps(records[i], sort_keys=True) in history:
            break
    else:
        return list(state.history)
    after = records[i + 1:]
    if after and after[0]["step"] > state.step:
        last = after[0]["step"]
        for record in after[1:]:  # the steps of that run, up to where another begins
            if record["step"] <= last:
                break
            last = record["step"]
        steps = (f"step {last}" if last == after[0]["step"]
                 else f"steps {after[0]['step']}-{last}")
        raise MultinetError(
            f"{argument('metrics', str(metrics_path))}: already holds records up to step "
            f"{last}, past step {state.step} where the resumed checkpoint stands; going on "
            f"would write {steps} into it a second time: give the metrics another file, or "
            f"resume from the checkpoint those records came from")
    return state.history[history.index(json.dumps(records[i], sort_keys=True)) + 1:]


def _log(metrics_path, record: dict) -> None:
    from multinet.files import OutputError, append_line, reason

    try:
        append_line(metrics_path, json.dumps(record))
    except OSError as exc:
        raise OutputError(f"cannot append to the metrics file {metrics_path}: "
                          f"{reason(exc)}") from None


def train(config: TrainConfig, backend: Backend, dataset: Dataset, *, progress: bool = True,
          state: TrainState | None = None, checkpoint=None, on_interrupt=None,
          metrics_path=None) -> TrainResult:
    """Train (from scratch, or on from ``state``) and evaluate on train, dev and test.

    At every log point the loss *and every parameter and optimizer-state array* must be
    finite, else ``TrainingDiverged`` (naming the step's hyperparameters) is raised and
    nothing more is saved; then ``checkpoint(state) -> path`` is called, then the metrics
    line is appended to ``metrics_path`` (so a line never describes a state that was not
    saved; after a kill between the two, the resumed run writes the missing lines first).
    When the run ends, ``checkpoint`` has been called on the final state.

    SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the loop between two steps (within two
    programs of ``SCAN_STEPS`` steps where the backend compiles runs of steps); the state
    is passed to ``on_interrupt`` (default: ``checkpoint``), which returns the path (or a
    ``Saved``), and ``TrainingInterrupted`` raised. A checkpoint or metrics write that
    fails (``OSError``), or memory running out, also stops the run: the state is passed to
    ``on_interrupt`` the same way and ``TrainingStopped`` raised, saying where it went.
    """
    backend.enable_dtype(config.dtype)
    # An eager step's temporaries reused, not re-faulted; multinet.fit trims the heap
    # once the run is over (heap.release_free_memory).
    heap.retain_freed_memory()
    try:
        splits = splits_on_device(backend, config, dataset)
    except ValueError as exc:  # a dev split larger than the data
        raise MultinetError(str(exc)) from None
    train_split = splits["train"]
    features = train_split.images.shape[1]
    check_memory(config, backend, features, len(train_split))
    if state is None:
        state = initial_state(config, backend, features)
    full_batch = config.batch_size == 0 or config.batch_size >= len(train_split)
    if backend.device_count > 1 and (full_batch or config.batch_size % backend.device_count):
        raise MultinetError(
            f"splitting batches over {backend.device_count} devices needs minibatches "
            f"({argument('batch_size')}) that divide evenly by {backend.device_count}")
    batches = 1 if full_batch else len(train_split) // config.batch_size
    check_position(state, batches, features)
    pending = metrics_to_write_first(metrics_path, state) if metrics_path else []
    total_steps = config.epochs * batches
    optimizer = config.optimizer_spec()
    run_steps = None
    if backend.mutable_arrays:
        # The steps update in place: on arrays of this run's own, never the caller's.
        state.params, state.opt_state = _own_copy(backend, state.params), _own_copy(
            backend, state.opt_state)
    if full_batch:
        step = backend.compile(make_train_step(optimizer, backend.fuse_chunk,
                                               backend.mutable_arrays))
        x_all, x_t = full_batch_inputs(backend, train_split, config.dtype)
    else:
        step = backend.compile(make_minibatch_step(optimizer, backend.mutable_arrays))
        run_steps = make_epoch_runner(backend, optimizer, config.dtype)
    predict_labels = make_predictor(backend)
    saves = _Saves(checkpoint) if checkpoint else None
    rescue = on_interrupt or checkpoint
    bar = tqdm(total=total_steps, initial=state.step, desc=f"train [{backend.name}]",
               unit="step", disable=not progress, leave=False)
    start = time.perf_counter()
    seconds_before = state.seconds
    try:
        with _StopSignals() as stop:
            for record in pending:  # saved, but killed before it was logged
                _log(metrics_path, record)
            while state.epoch < config.epochs and not stop.signum:
                index = None if full_batch else backend.batch_asarray(
                    epoch_order(len(train_split), config.batch_size, config.seed, state.epoch),
                    "int32")
                if state.batch == 0 or state.loss_sum is None:
                    counted_from = state.batch  # the sums cover the batches from here on
                    state.loss_sum = state.accuracy_sum = 0.0
                else:
                    counted_from = 0
                lr = None
                while (run_steps is not None and batches - state.batch >= SCAN_STEPS
                       and not stop.signum):
                    lrs = [optim.learning_rate(config.lr, config.schedule, s, total_steps)
                           for s in range(state.step, state.step + SCAN_STEPS)]
                    params, opt_state, loss, acc = run_steps(
                        state.params, state.opt_state, train_split.images, train_split.labels,
                        index[state.batch:state.batch + SCAN_STEPS, :], lrs)
                    # The previous program's result: at most one more program is queued.
                    backend.synchronize(*state.params.values())
                    loss_sum, acc_sum = state.loss_sum + loss, state.accuracy_sum + acc
                    state.params, state.opt_state, state.loss_sum, state.accuracy_sum = (
                        params, opt_state, loss_sum, acc_sum)
                    state.batch, state.step, lr = (state.batch + SCAN_STEPS,
                                                   state.step + SCAN_STEPS, lrs[-1])
                    bar.update(SCAN_STEPS)
                while state.batch < batches and not stop.signum:
                    lr = optim.learning_rate(config.lr, config.schedule, state.step, total_steps)
                    if full_batch:
                        out = step(state.params, state.opt_state, x_all, train_split.labels,
                                   lr, x_t)
                    else:
                        out = step(state.params, state.opt_state, train_split.images,
                                   train_split.labels, index[state.batch, :], lr)
                    backend.synchronize(*state.params.values())
                    loss_sum, acc_sum = state.loss_sum + out[2], state.accuracy_sum + out[3]
                    state.params, state.opt_state, state.loss_sum, state.accuracy_sum = (
                        out[0], out[1], loss_sum, acc_sum)
                    state.batch += 1
                    state.step += 1
                    bar.update(1)
                if state.batch < batches:
                    break  # stopped mid-epoch: the state says where to go on
                seen = batches - counted_from
                loss_sum, acc_sum = state.loss_sum, state.accuracy_sum
                state.epoch, state.batch = state.epoch + 1, 0
                state.loss_sum = state.accuracy_sum = 0.0
                if state.epoch % config.log_every == 0 or state.epoch == config.epochs:
                    record = {
                        "epoch": state.epoch, "step": state.step, "lr": lr,
                        "loss": float(backend.to_numpy(loss_sum)) / seen,
                        "train_accuracy": float(backend.to_numpy(acc_sum)) / seen,
                        "dev_accuracy": accuracy_of(predict_labels, state.params,
                                                    splits["dev"]),
                        "seconds": seconds_before + time.perf_counter() - start,
                    }
                    if not math.isfinite(record["loss"]):
                        raise _diverged(config, state, f"the loss became {record['loss']}",
                                        saves or _Saves(None))
                    bad = non_finite(backend, state)
                    if bad:
                        raise _diverged(config, state, f"{', '.join(bad[:3])} stopped being "
                                        "finite numbers", saves or _Saves(None))
                    state.history.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}",
                                    dev=f"{record['dev_accuracy']:.4f}")
                    state.seconds = record["seconds"]
                    if saves:
                        saves(state)
                    if metrics_path:
                        _log(metrics_path, record)
            backend.synchronize(*state.params.values())
            state.seconds = seconds_before + time.perf_counter() - start
            if stop.signum:
                name = signal.Signals(stop.signum).name
                bad = non_finite(backend, state)
                if bad:
                    raise _diverged(config, state, f"{', '.join(bad[:3])} stopped being "
                                    f"finite numbers (found on {name})", saves or _Saves(None))
                if saves and saves.step == state.step:
                    saved = Saved(saves.path)
                else:
                    saved = _saved(rescue(state)) if rescue else None
                raise TrainingInterrupted(
                    f"interrupted ({name}) at epoch {state.epoch}, step {state.step}"
                    + (f"; checkpoint saved to {saved.path}"
                       + (f" ({saved.note})" if saved.note else "")
                       + f"; continue with {argument('resume', str(saved.path))}" if saved
                       else f"; nothing was saved (no {argument('save')})"),
                    saved and saved.path, stop.signum)
            if saves and saves.step != state.step:
                saves(state)  # nothing left to train (a resumed run at its end, 0 epochs)
    except (OSError, MemoryError) as exc:
        raise _stopped(exc, config, backend, state, rescue,
                       features, len(train_split)) from None
    finally:
        bar.close()
    return TrainResult(state=state,
                       summary=summarize(config, backend, state, splits, predict_labels))


def _stopped(exc, config, backend, state, rescue, features, n_train) -> TrainingStopped:
    """The error for a run that cannot go on, after saving its state through ``rescue``."""
    if isinstance(exc, MemoryError):
        _, estimate = _memory_message(config, features, n_train, backend)
        why = f"out of memory: {estimate}"
    else:
        why = str(exc) if isinstance(exc, MultinetError) else f"write failed: {exc}"
    where = f"the state at epoch {state.epoch}, step {state.step}"
    if isinstance(exc, MemoryError) and backend.mutable_arrays:
        # The step updates parameters and optimizer state in place (optim.update_in_place):
        # memory can run out between two of its writes, leaving a state that is neither
        # the step before nor the step after. Such a state is never saved.
        return TrainingStopped(f"{why}; the arrays were being updated in place, so the "
                               "state in memory is not saved: the last checkpoint written "
                               "is the last good one")
    if rescue is None:
        return TrainingStopped(f"{why}; {where} was not saved (no {argument('save')})")
    try:
        saved = _saved(rescue(state))
    except (OSError, MemoryError, MultinetError) as second:
        return TrainingStopped(f"{why}; {where} could not be saved either ({second})")
    return TrainingStopped(f"{why}; {where} was saved to {saved.path}"
                           + (f" ({saved.note})" if saved.note else "")
                           + f"; continue with {argument('resume', str(saved.path))}")


def summarize(config, backend, state, splits, predict_labels) -> dict:
    accuracies = {f"{name}_accuracy": accuracy_of(predict_labels, state.params, split)
                  for name, split in splits.items()}
    seconds = state.seconds
    samples = state.step * (len(splits["train"]) if config.batch_size == 0
                            else min(config.batch_size, len(splits["train"])))
    return {
        "backend": backend.name,
        "device": str(backend.device),
        **config.to_dict(),
        "iterations": state.step,
        "sizes": list(network.layer_sizes(state.params)),
        "train_samples": len(splits["train"]),
        **accuracies,
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "seconds": seconds,
        "samples_per_second": samples / seconds if seconds else None,
    }
