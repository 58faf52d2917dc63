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
only at log points, for the progress bar and the metrics.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace
from tqdm.auto import tqdm

from multinet import network, optim
from multinet.data import CLASSES, Dataset, flatten, scale_images, split_indices
from multinet.errors import MultinetError
from multinet.initializers import init_params
from multinet.registry import Backend

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
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose {', '.join(PRESETS)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if self.log_every < 1 or self.batch_size < 0:
            raise ValueError("log_every must be >= 1 and batch_size >= 0")
        if self.schedule not in optim.SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}")
        self.optimizer_spec()  # validates the optimizer fields

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


class TrainingDiverged(MultinetError):
    """The loss stopped being a finite number."""


class TrainingInterrupted(MultinetError):
    """Ctrl-C: the run stopped, and its state was saved to ``path``."""

    def __init__(self, message: str, path: Path | None):
        super().__init__(message)
        self.path = path


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


def make_train_step(optimizer: optim.Optimizer, chunk: int | None = None):
    """``step(params, opt_state, x, y, lr, x_t=None) -> (params, opt_state, loss,
    accuracy)``; ``x_t`` as in ``network.backprop``; with ``chunk``, the batch is
    processed ``chunk`` rows at a time (``chunked_backprop``) and ``x_t`` is not used."""

    def train_step(params, opt_state, x, y, lr, x_t=None):
        if chunk:
            loss, grads, accuracy = chunked_backprop(params, x, y, chunk)
        else:
            loss, grads, logits = network.backprop(params, x, y, x_t)
            accuracy = network.accuracy(logits, y)
        params, opt_state = optim.update(optimizer, params, grads, opt_state, lr)
        return params, opt_state, loss, accuracy

    return train_step


def make_minibatch_step(optimizer: optim.Optimizer):
    """Like ``make_train_step``, gathering and scaling the batch ``index`` on the device."""
    train_step = make_train_step(optimizer)

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


def _predict_scaled(params, images):
    return network.predict(params, scale_images(images, params["W1"].dtype))


def make_predictor(backend: Backend, chunk: int = 10000):
    """``predict(params, images) -> host labels`` for device ``uint8`` images, compiled
    once and run ``chunk`` images at a time (bounded memory for the activations)."""
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


class _DeferredInterrupt:
    """Within this block, Ctrl-C sets ``requested`` instead of raising, so the loop can
    stop between two steps, with parameters, optimizer state and counters consistent."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


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


def train(config: TrainConfig, backend: Backend, dataset: Dataset, *, progress: bool = True,
          state: TrainState | None = None, checkpoint=None, on_interrupt=None,
          metrics_path=None) -> TrainResult:
    """Train (from scratch, or on from ``state``) and evaluate on train, dev and test.

    ``checkpoint(state) -> path`` is called at every log point once the loss there is
    known to be finite, so a saved checkpoint is always a good one. Ctrl-C stops the loop
    between two steps (between two epochs where the backend compiles a whole epoch); the
    state is passed to ``on_interrupt`` (default: ``checkpoint``) and
    ``TrainingInterrupted`` raised. A non-finite loss raises ``TrainingDiverged`` and
    saves nothing.
    """
    backend.enable_dtype(config.dtype)
    splits = splits_on_device(backend, config, dataset)
    train_split = splits["train"]
    if state is None:
        state = initial_state(config, backend, train_split.images.shape[1])
    full_batch = config.batch_size == 0 or config.batch_size >= len(train_split)
    if backend.device_count > 1 and (full_batch or config.batch_size % backend.device_count):
        raise MultinetError(
            f"splitting batches over {backend.device_count} devices needs minibatches "
            f"(--batch-size) that divide evenly by {backend.device_count}")
    batches = 1 if full_batch else len(train_split) // config.batch_size
    total_steps = config.epochs * batches
    optimizer = config.optimizer_spec()
    run_epoch = None
    if full_batch:
        step = backend.compile(make_train_step(optimizer, backend.fuse_chunk))
        x_all, x_t = full_batch_inputs(backend, train_split, config.dtype)
    else:
        step = backend.compile(make_minibatch_step(optimizer))
        run_epoch = make_epoch_runner(backend, optimizer, config.dtype)
    predict_labels = make_predictor(backend)
    metrics = open(metrics_path, "a") if metrics_path else None
    bar = tqdm(total=total_steps, initial=state.step, desc=f"train [{backend.name}]",
               unit="step", disable=not progress, leave=False)
    start = time.perf_counter()
    seconds_before = state.seconds
    try:
        with _DeferredInterrupt() as interrupt:
            while state.epoch < config.epochs and not interrupt.requested:
                index = None if full_batch else backend.batch_asarray(
                    epoch_order(len(train_split), config.batch_size, config.seed, state.epoch),
                    "int32")
                loss_sum = acc_sum = 0.0
                first_batch = state.batch
                if run_epoch is not None:  # the rest of the epoch as one program
                    lrs = [optim.learning_rate(config.lr, config.schedule, s, total_steps)
                           for s in range(state.step, state.step + batches - state.batch)]
                    state.params, state.opt_state, loss_sum, acc_sum = run_epoch(
                        state.params, state.opt_state, train_split.images,
                        train_split.labels, index[state.batch:, :], lrs)
                    bar.update(len(lrs))
                    state.step, state.batch, lr = state.step + len(lrs), batches, lrs[-1]
                while state.batch < batches and not interrupt.requested:
                    lr = optim.learning_rate(config.lr, config.schedule, state.step, total_steps)
                    if full_batch:
                        out = step(state.params, state.opt_state, x_all, train_split.labels,
                                   lr, x_t)
                    else:
                        out = step(state.params, state.opt_state, train_split.images,
                                   train_split.labels, index[state.batch, :], lr)
                    state.params, state.opt_state, loss, acc = out
                    loss_sum, acc_sum = loss_sum + loss, acc_sum + acc
                    state.batch += 1
                    state.step += 1
                    bar.update(1)
                if state.batch < batches:
                    break  # interrupted mid-epoch: the state says where to go on
                state.epoch, state.batch = state.epoch + 1, 0
                if state.epoch % config.log_every == 0 or state.epoch == config.epochs:
                    seen = batches - first_batch
                    record = {
                        "epoch": state.epoch, "step": state.step, "lr": lr,
                        "loss": float(backend.to_numpy(loss_sum)) / seen,
                        "train_accuracy": float(backend.to_numpy(acc_sum)) / seen,
                        "dev_accuracy": accuracy_of(predict_labels, state.params,
                                                    splits["dev"]),
                        "seconds": seconds_before + time.perf_counter() - start,
                    }
                    if not math.isfinite(record["loss"]):
                        raise TrainingDiverged(
                            f"loss became {record['loss']} by epoch {state.epoch} (step "
                            f"{state.step}): is the learning rate {config.lr} too high? The "
                            f"last checkpoint written, if any, is from before it diverged")
                    state.history.append(record)
                    if metrics:
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4f}",
                                    dev=f"{record['dev_accuracy']:.4f}")
                    state.seconds = record["seconds"]
                    if checkpoint:
                        checkpoint(state)
            backend.synchronize(*state.params.values())
            state.seconds = seconds_before + time.perf_counter() - start
            if interrupt.requested:
                save = on_interrupt or checkpoint
                saved = save(state) if save else None
                raise TrainingInterrupted(
                    f"interrupted at epoch {state.epoch}, step {state.step}"
                    + (f"; checkpoint saved to {saved}; continue with --resume {saved}"
                       if saved else ""), saved)
    finally:
        bar.close()
        if metrics:
            metrics.close()
    return TrainResult(state=state,
                       summary=summarize(config, backend, state, splits, predict_labels))


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
