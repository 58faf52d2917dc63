"""The training loop: from a configuration, a backend and a dataset to trained parameters.

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
compiled run of ``SCAN_STEPS`` minibatch steps, or of the full-batch steps up to the next
log point, at most ``SCAN_STEPS``, where ``Backend.scan_full_batch`` says so) it waits for
the previous one, so no more than one is ever queued and a signal is acted on within two
(docs/reliability.md). Where the backend captures steps (``Backend.capture_step``), each
step is a replay of one captured graph (``multinet.training.setup``).
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

from multinet import optim
from multinet.catalog import CLASSES
from multinet.checks import describe_device
from multinet.data import Dataset
from multinet.errors import (MultinetError, OutputsNotFinite, TrainingDiverged,
                             TrainingInterrupted, TrainingStopped, argument)
from multinet.registry import Backend
from multinet.training.config import FEATURES, TrainConfig
from multinet.training.memory import memory_message
from multinet.training.metrics import append_record
from multinet.training.prediction import accuracy_of
from multinet.training.progress import progress_display
from multinet.training.setup import Setup, initial_state, prepare
from multinet.training.signals import StopSignals
from multinet.training.state import Saved, TrainResult, TrainState, why_not_kept
from multinet.training.steps import SCAN_STEPS, epoch_order

#: What callers import from here: ``initial_state`` is defined with the rest of a run's
#: preparation (``multinet.training.setup``).
__all__ = ["initial_state", "network_fields", "summarize", "train"]


def train(config: TrainConfig, backend: Backend, dataset: Dataset, *,
          progress: bool | str = True, state: TrainState | None = None, checkpoint=None,
          on_interrupt=None, metrics_path=None, checkpoint_path=None) -> TrainResult:
    """Train (from scratch, or on from ``state``) and evaluate on train, dev and test.

    Only a state that evaluates is ever kept (``_why_not_kept``: every parameter and
    optimizer-state array finite, and the network's outputs finite in its dtype). At every
    log point the loss must be finite and the state evaluate, else ``TrainingDiverged``
    (naming the step's hyperparameters and what was kept) is raised and nothing more is
    saved; then ``checkpoint(state) -> path`` is called, then the metrics line is appended
    to ``metrics_path`` (so a line never describes a state that was not saved; after a
    kill between the two, the resumed run writes the missing lines first). When the run
    ends, ``checkpoint`` has been called on the final state. A ``state`` to continue from
    that does not evaluate is ``OutputsNotFinite``, before any step. ``checkpoint_path``:
    where ``checkpoint`` writes, named when nothing was written there.

    ``progress``: True, a tqdm bar (``tqdm.auto``: a widget in Jupyter) where stderr
    redraws it in place, else a plain line every few seconds; ``"lines"``, always lines;
    ``"bar"``, always the bar; False, nothing (``multinet.training.progress``).

    SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the loop between two steps (within two
    programs of at most ``SCAN_STEPS`` steps where the backend compiles runs of steps:
    minibatches, and full-batch chunks between log points); the state
    is passed to ``on_interrupt`` (default: ``checkpoint``), which returns the path (or a
    ``Saved``), and ``TrainingInterrupted`` raised. A checkpoint or metrics write that
    fails (``OSError``), or memory running out, also stops the run: the state is passed to
    ``on_interrupt`` the same way and ``TrainingStopped`` raised, saying where it went. A
    state that does not evaluate is not passed on: the error says what was kept instead.
    """
    resumed = state is not None
    setup, state = prepare(config, backend, dataset, state, metrics_path)
    if resumed:
        # The state saved at the end of a run with nothing left to train is this one.
        why = _why_not_kept(setup, state)
        if why:
            raise OutputsNotFinite(f"cannot continue from this state: {why}; it can be "
                                   "neither evaluated nor trained on")
    saves, rescue = _Saves(checkpoint, checkpoint_path), on_interrupt or checkpoint
    bar = progress_display(progress, total=setup.total_steps, initial=state.step,
                           desc=f"train [{backend.name}]", batches=setup.batches)
    seconds = _clock(state.seconds)
    try:
        with StopSignals() as stop:
            for record in setup.pending:  # saved, but killed before it was logged
                append_record(metrics_path, record)
            while state.epoch < config.epochs and not stop.signum:
                epoch = _train_epoch(setup, state, stop, bar)
                if epoch is None:
                    break  # stopped mid-epoch: the state says where to go on
                if state.epoch % config.log_every == 0 or state.epoch == config.epochs:
                    _log_point(setup, state, epoch, seconds(), saves, metrics_path, bar)
            backend.synchronize(*state.params.values())
            state.seconds = seconds()
            if stop.signum:
                raise _interrupted(setup, state, stop.signum, saves, rescue)
            if saves.step != state.step:
                saves(state)  # nothing left to train (a resumed run at its end, 0 epochs)
    except (OSError, MemoryError) as exc:
        raise _stopped(exc, setup, state, saves, rescue) from None
    finally:
        bar.close()
    return TrainResult(state=state, summary=summarize(config, backend, state, setup.splits,
                                                      setup.predict_labels))


def _train_epoch(setup: Setup, state: TrainState, stop: StopSignals, bar):
    """The steps of epoch ``state.epoch`` from batch ``state.batch`` on, until the epoch
    ends or a signal stops it. Returns ``(loss_sum, accuracy_sum, batches, lr)`` of the
    epoch when it ended (the sums over ``batches`` batches; ``lr`` the last step's), else
    None, leaving the state mid-epoch."""
    config, backend = setup.config, setup.backend
    if setup.full_batch and setup.run_steps is not None:
        steps = min(config.log_every - state.epoch % config.log_every,
                    config.epochs - state.epoch, SCAN_STEPS)
        if steps > 1:
            sums = _run_chunk(setup, state, steps)
            bar.update(steps)
            return sums
    index = None if setup.full_batch else backend.batch_asarray(
        epoch_order(len(setup.train_split), config.batch_size, config.seed, state.epoch),
        "int32")
    if state.batch == 0 or state.loss_sum is None:
        counted_from = state.batch  # the sums cover the batches from here on
        state.loss_sum = state.accuracy_sum = 0.0
    else:
        counted_from = 0
    lr = None
    while (setup.run_steps is not None and setup.batches - state.batch >= SCAN_STEPS
           and not stop.signum):
        lr = _run_program(setup, state, index)
        bar.update(SCAN_STEPS)
    while state.batch < setup.batches and not stop.signum:
        lr = _run_step(setup, state, index)
        bar.update(1)
    if state.batch < setup.batches:
        return None
    sums = (state.loss_sum, state.accuracy_sum, setup.batches - counted_from, lr)
    state.epoch, state.batch = state.epoch + 1, 0
    state.loss_sum = state.accuracy_sum = 0.0
    return sums


def _run_program(setup: Setup, state: TrainState, index) -> float:
    """``SCAN_STEPS`` minibatch steps as one compiled program; the last step's lr."""
    config, split = setup.config, setup.train_split
    lrs = [optim.learning_rate(config.lr, config.schedule, s, setup.total_steps)
           for s in range(state.step, state.step + SCAN_STEPS)]
    params, opt_state, loss, accuracy = setup.run_steps(
        state.params, state.opt_state, split.images, split.labels,
        index[state.batch:state.batch + SCAN_STEPS, :], lrs)
    # The previous program's result: at most one more program is queued.
    setup.backend.synchronize(*state.params.values())
    _advance(state, params, opt_state, loss, accuracy, SCAN_STEPS)
    return lrs[-1]


def _run_chunk(setup: Setup, state: TrainState, steps: int):
    """``steps`` full-batch steps (epochs) as one compiled program, ending at a log point
    or sooner; the last epoch's ``(loss, accuracy, 1, lr)``, as ``_train_epoch`` returns."""
    config = setup.config
    lrs = [optim.learning_rate(config.lr, config.schedule, s, setup.total_steps)
           for s in range(state.step, state.step + steps)]
    params, opt_state, loss, accuracy = setup.run_steps(
        state.params, state.opt_state, setup.x_all, setup.train_split.labels, setup.x_t, lrs)
    # The previous program's result: at most one more program is queued.
    setup.backend.synchronize(*state.params.values())
    state.params, state.opt_state = params, opt_state
    state.epoch, state.step = state.epoch + steps, state.step + steps
    state.loss_sum = state.accuracy_sum = 0.0
    return loss, accuracy, 1, lrs[-1]


def _run_step(setup: Setup, state: TrainState, index) -> float:
    """One step (the whole training set, or batch ``state.batch``); its lr."""
    config, split = setup.config, setup.train_split
    lr = optim.learning_rate(config.lr, config.schedule, state.step, setup.total_steps)
    if setup.full_batch:
        out = setup.step(state.params, state.opt_state, setup.x_all, split.labels, lr,
                         setup.x_t)
    else:
        out = setup.step(state.params, state.opt_state, split.images, split.labels,
                       index[state.batch, :], lr)
    setup.backend.synchronize(*state.params.values())
    _advance(state, *out, 1)
    return lr


def _advance(state: TrainState, params, opt_state, loss, accuracy, steps: int) -> None:
    """The state after ``steps`` steps, changed only once every new value exists."""
    loss_sum, accuracy_sum = state.loss_sum + loss, state.accuracy_sum + accuracy
    state.params, state.opt_state, state.loss_sum, state.accuracy_sum = (
        params, opt_state, loss_sum, accuracy_sum)
    state.batch, state.step = state.batch + steps, state.step + steps


def _log_point(setup: Setup, state: TrainState, epoch, seconds: float, saves: _Saves,
               metrics_path, bar) -> None:
    """At the end of a logged epoch: the record, checked finite, then the checkpoint,
    then the metrics line."""
    loss_sum, accuracy_sum, batches, lr = epoch
    backend = setup.backend
    record = {
        "epoch": state.epoch, "step": state.step, "lr": lr,
        "loss": float(backend.to_numpy(loss_sum)) / batches,
        "train_accuracy": float(backend.to_numpy(accuracy_sum)) / batches,
        "dev_accuracy": accuracy_of(setup.predict_labels, state.params, setup.splits["dev"]),
        "seconds": seconds,
    }
    if not math.isfinite(record["loss"]):
        raise _diverged(setup.config, state, f"the loss became {record['loss']}", saves)
    why = _why_not_kept(setup, state)
    if why:
        raise _diverged(setup.config, state, why, saves)
    state.history.append(record)
    bar.set_postfix(loss=f"{record['loss']:.4f}", dev=f"{record['dev_accuracy']:.4f}")
    state.seconds = record["seconds"]
    saves(state)
    if metrics_path:
        append_record(metrics_path, record)


def _clock(seconds_before: float):
    """``seconds()``: training time so far, this session's added to the sessions' before."""
    start = time.perf_counter()
    return lambda: seconds_before + time.perf_counter() - start


class _Saves:
    """``checkpoint`` (None: nothing is saved) plus a record of the last save: where, and
    at which epoch and step. ``target``: where ``checkpoint`` writes, if known."""

    def __init__(self, checkpoint, target=None):
        self.checkpoint = checkpoint
        self.target = None if checkpoint is None or target is None else Path(target)
        self.path = self.epoch = self.step = None

    def __call__(self, state) -> None:
        if self.checkpoint is None:
            return
        self.path = _saved(self.checkpoint(state)).path
        self.epoch, self.step = state.epoch, state.step

    def kept(self) -> str:
        """What a run that stops now leaves: its last checkpoint, or that it wrote none
        (and the file already at the target, if any, is as it was)."""
        if self.path is not None:
            return (f"the last checkpoint, {self.path}, is from epoch {self.epoch} (step "
                    f"{self.step})")
        if self.target is None:
            return "no checkpoint was written by this run"
        if self.target.exists():
            return (f"no checkpoint was written by this run: {self.target} was left as "
                    "it was")
        return f"no checkpoint was written by this run (nothing at {self.target})"


def _saved(result) -> Saved:
    return result if isinstance(result, Saved) else Saved(Path(result))


def _diverged(config: TrainConfig, state: TrainState, what: str, saves: _Saves):
    advice = f"a smaller {argument('lr')}" + (f" or {argument('momentum')}"
                                              if config.optimizer == "momentum" else "")
    if config.weight_decay and config.lr * config.weight_decay >= 1:
        advice += (f" or {argument('weight_decay')} (lr x weight decay >= 1 overshoots "
                   "every step)")
    kept = saves.kept() + (", before it diverged, and evaluates" if saves.path else "")
    return TrainingDiverged(f"training diverged: {what} by epoch {state.epoch} (step "
                            f"{state.step}) with {config.describe_step()}; start a new run "
                            f"with {advice} ({argument('resume')} keeps the saved settings); "
                            f"{kept}")


def _interrupted(setup: Setup, state: TrainState, signum: int, saves: _Saves,
                 rescue) -> MultinetError:
    """The error for a run a signal stopped, after saving its state (unless the last
    log point saved this very state already)."""
    name = signal.Signals(signum).name
    why = _why_not_kept(setup, state)
    if why:
        return _diverged(setup.config, state, f"{why} (found on {name})", saves)
    if saves.step == state.step:
        saved = Saved(saves.path)
    else:
        saved = _saved(rescue(state)) if rescue else None
    return TrainingInterrupted(
        f"interrupted ({name}) at epoch {state.epoch}, step {state.step}"
        + (f"; checkpoint saved to {_continue_from(saved)}" if saved
           else f"; nothing was saved (no {argument('save')})"),
        saved and saved.path, signum)


def _stopped(exc, setup: Setup, state: TrainState, saves: _Saves,
             rescue) -> TrainingStopped:
    """The error for a run that cannot go on, after saving its state through ``rescue``
    where it evaluates."""
    backend = setup.backend
    if isinstance(exc, MemoryError):
        split = setup.train_split
        _, estimate = memory_message(setup.config, split.images.shape[1], len(split), backend)
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
        why_not = _why_not_kept(setup, state)
        if why_not:
            return TrainingStopped(f"{why}; {where} was not saved: {why_not}; "
                                   f"{saves.kept()}")
        saved = _saved(rescue(state))
    except (OSError, MemoryError, MultinetError) as second:
        return TrainingStopped(f"{why}; {where} could not be saved either ({second})")
    return TrainingStopped(f"{why}; {where} was saved to {_continue_from(saved)}")


def _continue_from(saved: Saved) -> str:
    """``"PATH (why there); continue with --resume PATH"``: where a stopped run's state
    went, and how to go on from it."""
    return (f"{saved.path}" + (f" ({saved.note})" if saved.note else "")
            + f"; continue with {argument('resume', str(saved.path))}")


def summarize(config: TrainConfig, backend: Backend, state: TrainState, splits: dict,
              predict_labels) -> dict:
    """The summary of a run (``multinet train --json``): configuration, accuracies on
    every split, time and speed."""
    accuracies = {f"{name}_accuracy": accuracy_of(predict_labels, state.params, split)
                  for name, split in splits.items()}
    seconds = state.seconds
    samples = state.step * (len(splits["train"]) if config.batch_size == 0
                            else min(config.batch_size, len(splits["train"])))
    return {
        "backend": backend.name,
        "device": describe_device(backend.device, backend.platform),
        **config.to_dict(),
        "iterations": state.step,
        **network_fields(config),
        "train_samples": len(splits["train"]),
        **accuracies,
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "seconds": seconds,
        "samples_per_second": samples / seconds if seconds else None,
    }


def network_fields(config: TrainConfig) -> dict:
    """What a summary says of the network: ``network``, its description
    (``TrainConfig.describe_network``), and ``sizes``, a perceptron's widths (inputs to
    classes), None for any other network."""
    return {"sizes": [FEATURES, *config.hidden, CLASSES] if config.hidden else None,
            "network": config.describe_network()}


def _why_not_kept(setup: Setup, state: TrainState) -> str | None:
    """Why ``state`` must not be kept (``state.why_not_kept``), checked on this run's
    images: the test split first (what ``evaluate`` reads), then those it trains on."""
    return why_not_kept(setup.backend, state, setup.config.dtype,
                        {name: setup.splits[name].host_images
                         for name in ("test", "dev", "train")}, setup.layers)
