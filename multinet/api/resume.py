"""What ``fit(resume=...)`` continues: a ``Run`` in memory or a checkpoint on disk, as
one record (configuration, position, dataset, and its state on any backend), and the
configuration the resumed run keeps (only the number of epochs may change)."""

from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from multinet import checkpoint
from multinet.api.run import Run
from multinet.errors import InvalidArgument, argument
from multinet.registry import Backend
from multinet.training.config import HYPERPARAMETERS, TrainConfig, epochs_given
from multinet.training.state import TrainState


@dataclass(frozen=True)
class Resumable:
    """A checkpoint's or a run's configuration, position and dataset, and its state on a
    given backend."""

    config: TrainConfig
    dataset_name: str
    dataset_sha256: dict
    epoch: int
    batch: int
    step: int
    #: ``state_on(backend) -> TrainState``: the state there, for ``train`` to advance.
    state_on: Callable[[Backend], TrainState]
    #: The run's backend (None for a checkpoint: ``fit`` chooses one as for a new run).
    backend: Backend | None = None
    #: The checkpoint file it was read from.
    path: Path | None = None


def resumable(resume: Run | str | os.PathLike) -> Resumable:
    """What ``resume`` (a ``Run``, or a checkpoint's path, read and checked here)
    continues. Raises ``CheckpointError`` for a bad file, ``InvalidArgument`` for
    anything else."""
    if isinstance(resume, Run):
        def state_on(backend: Backend) -> TrainState:
            if backend is resume.backend:
                return _copy_state(resume.state)
            return _moved_state(resume, backend)

        state = resume.state
        return Resumable(resume.config, resume.dataset_name, resume.dataset_sha256,
                         state.epoch, state.batch, state.step, state_on, resume.backend)
    if isinstance(resume, (str, os.PathLike)):
        loaded = checkpoint.load(resume)
        progress = loaded.metadata["progress"]
        return Resumable(loaded.config, loaded.dataset,
                         dict(loaded.metadata["dataset"]["content_sha256"]),
                         progress["epoch"], progress["batch"], progress["step"],
                         loaded.state_on, path=Path(resume))
    raise InvalidArgument(f"resume must be a Run or a checkpoint path, got "
                          f"{type(resume).__name__}")


def resumed_config(source: Resumable, preset: str | None, overrides: dict) -> TrainConfig:
    """The configuration a resumed run keeps: ``source``'s, with the new total of epochs
    if ``overrides`` give one. A setting given with the saved value is no change, so a
    job script may repeat its settings with ``resume`` added; any other value (of the
    preset, a hyperparameter, the dtype), or a total that ends before where the run
    stands, is ``InvalidArgument``."""
    config = source.config
    changed = [name for name in ("preset", *HYPERPARAMETERS)
               if name not in ("epochs", "iterations", "dtype")
               and _changes(config, name, preset if name == "preset" else overrides.get(name))]
    if changed:
        raise InvalidArgument(
            f"{argument('resume')} continues the saved configuration; "
            f"{', '.join(argument(name) for name in changed)} cannot change (only "
            f"{argument('epochs')} / {argument('iterations')} can); the saved run has "
            + ", ".join(_saved(config, name) for name in changed))
    dtype = overrides.get("dtype")
    if dtype is not None and dtype != config.dtype:
        raise InvalidArgument(f"the checkpoint was trained in {config.dtype}; "
                              f"{argument('dtype', dtype)} cannot resume it")
    total = epochs_given(overrides)
    if total is not None:
        config = dataclasses.replace(config, epochs=total)
    if source.epoch > config.epochs or (source.epoch == config.epochs and source.batch):
        count = "iterations" if overrides.get("iterations") is not None else "epochs"
        raise InvalidArgument(f"the checkpoint is already at epoch {source.epoch} (step "
                              f"{source.step}); {argument(count, config.epochs)} ends "
                              "before it")
    return config


def _saved(config: TrainConfig, name: str) -> str:
    """The saved setting ``name`` as the user would pass it; for the network, whichever
    of ``hidden`` and ``layers`` describes it (the other one is empty)."""
    if name in ("hidden", "layers") and not getattr(config, name):
        name = "layers" if name == "hidden" else "hidden"
    return argument(name, getattr(config, name))


def _changes(config: TrainConfig, name: str, value) -> bool:
    """Whether ``value`` given for the setting ``name`` (None: not given) differs from the
    saved one. It is read as a new run reads it (``hidden=16`` is ``(16,)``, ``lr=1`` is
    ``1.0``); a value of the wrong type (``lr=True``) is ``InvalidArgument``."""
    if value is None:
        return False
    if name == "preset":
        return value != config.preset
    if name == "hidden" and isinstance(value, numbers.Integral) and not isinstance(value,
                                                                                   bool):
        value = (value,)
    try:
        read = getattr(dataclasses.replace(config, **{name: value}), name)
    except TypeError as exc:
        raise InvalidArgument(str(exc)) from None
    except ValueError:  # out of range: not the saved value either
        return True
    return read != getattr(config, name)


def _moved_state(run: Run, target: Backend) -> TrainState:
    """``run``'s state on ``target``, through the host (as a checkpoint takes it)."""
    target.enable_dtype(run.config.dtype)

    def move(tree):
        return {k: move(v) if isinstance(v, dict)
                else target.asarray(np.asarray(run.backend.to_numpy(v)))
                for k, v in tree.items()}

    def scalar(value):  # a sum of the epoch in progress: a number or a 0-d array
        return value if value is None or isinstance(value, (int, float)) else float(
            np.asarray(run.backend.to_numpy(value)))

    return dataclasses.replace(run.state, params=move(run.state.params),
                               opt_state=move(run.state.opt_state),
                               history=list(run.state.history),
                               loss_sum=scalar(run.state.loss_sum),
                               accuracy_sum=scalar(run.state.accuracy_sum))


def _copy_state(state: TrainState) -> TrainState:
    """A state ``train`` may advance without changing the run it came from: the
    containers are copied, and ``train`` copies the arrays themselves before a backend
    with mutable arrays updates them in place."""
    def copy(tree):
        return {k: copy(v) if isinstance(v, dict) else v for k, v in tree.items()}

    return dataclasses.replace(state, params=copy(state.params),
                               opt_state=copy(state.opt_state), history=list(state.history))
