"""Where a run is: ``TrainState`` is everything a checkpoint holds besides the
configuration (parameters, optimizer state, counters, time, history, the sums of the
epoch in progress), plus the checks and copies made of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multinet.errors import MultinetError
from multinet.layers import param_shapes
from multinet.registry import Backend
from multinet.training.prediction import largest_weight, overflowing


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
    """What ``train`` returns: the final state and the summary of the run."""

    state: TrainState
    summary: dict

    @property
    def params(self):
        return self.state.params

    @property
    def history(self):
        return self.state.history


@dataclass(frozen=True)
class Saved:
    """Where a state was saved, and why there if it is not where it was meant to go
    (what an ``on_interrupt`` callback may return instead of a bare path)."""

    path: Path
    note: str = ""


def own_copy(backend: Backend, tree: dict) -> dict:
    """A copy of every array of a (nested) dict, for steps that update in place."""
    return {k: own_copy(backend, v) if isinstance(v, dict) else
            backend.xp.asarray(v, copy=True) for k, v in tree.items()}


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


def why_not_kept(backend: Backend, state: TrainState, dtype: str, images: dict,
                 layers=None) -> str | None:
    """Why ``state`` must not be kept (saved, or trained on), or None where it evaluates:
    every parameter and optimizer-state array finite (``non_finite``), and the network's
    outputs finite in ``dtype``. For ordinary networks a bound from the weights proves
    that for any picture at once (``prediction.overflowing``); past the bound the
    ``uint8`` images of ``images`` (``{"test": ..., ...}``, checked in that order) are
    run on the host, every layer checked, until one set overflows. ``layers``: the
    network's ``Layer`` records (None: the perceptron the parameters hold)."""
    bad = non_finite(backend, state)
    if bad:
        return f"{', '.join(bad[:3])} stopped being finite numbers"
    params = {name: np.asarray(backend.to_numpy(value))
              for name, value in state.params.items()}
    for name, split in images.items():
        count = overflowing(params, split, dtype, layers)
        if count:
            return (f"the network's outputs overflow {dtype} on {count} of {len(split)} "
                    f"{name} images (largest weight {largest_weight(params):.3g})")
    return None


def check_position(state: TrainState, batches: int, features: int, layers) -> None:
    """A state to continue from must fit the data: its counters this epoch length, its
    parameters the shapes that ``layers`` (the network's ``Layer`` records) give on
    images of ``features`` pixels."""
    try:
        expected = param_shapes(layers, features)
    except ValueError as exc:
        raise MultinetError(f"the network does not fit the data's {features} pixels: "
                            f"{exc}") from None
    found = {name: tuple(value.shape) for name, value in state.params.items()}
    if found != expected:
        raise MultinetError(f"the parameters ({_shapes(found)}) are not those of the "
                            f"network {', '.join(map(str, layers))} on {features} pixels "
                            f"({_shapes(expected)})")
    if not 0 <= state.batch < batches or state.step != state.epoch * batches + state.batch:
        raise MultinetError(
            f"the saved position (epoch {state.epoch}, batch {state.batch}, step "
            f"{state.step}) does not fit this data's {batches} batch(es) per epoch")


def _shapes(params: dict) -> str:
    """``"W1 784x10, b1 10, ..."``."""
    return ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in params.items())
