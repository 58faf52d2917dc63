"""What a training run works with, prepared once before its first step: the splits on
the device, the state to start from (checked against the data), and the compiled step,
with the programs of several steps where the backend compiles them
(``Backend.compile_scan``) and the captured step where it captures one
(``Backend.capture_step``)."""

from __future__ import annotations

from dataclasses import dataclass

from multinet import heap, optim
from multinet.errors import MultinetError, argument
from multinet.initializers import draw_layer_params, to_backend
from multinet.registry import Backend
from multinet.training.config import TrainConfig
from multinet.training.memory import check_network_fits
from multinet.training.metrics import metrics_to_write_first
from multinet.training.prediction import make_predictor
from multinet.training.splits import DeviceSplit, full_batch_inputs, splits_on_device
from multinet.training.state import TrainState, check_position, own_copy
from multinet.training.steps import (capture, make_epoch_runner, make_full_batch_runner,
                                     make_minibatch_step, make_step)


@dataclass(frozen=True)
class Setup:
    """What the loop works with, prepared once: the data on the device, the compiled
    step (and program of several steps, where the backend compiles loops)."""

    config: TrainConfig
    backend: Backend
    layers: tuple         # the network's Layer records (config.network_layers())
    splits: dict
    full_batch: bool
    batches: int          # steps per epoch
    total_steps: int
    step: object          # the compiled (or captured) step
    run_steps: object     # a program of several steps (make_epoch_runner's, or
                          # make_full_batch_runner's for a full-batch run), or None
    x_all: object         # full batch: the scaled images (and their transpose, x_t)
    x_t: object
    predict_labels: object
    pending: list         # metrics records saved but never logged, to write first

    @property
    def train_split(self) -> DeviceSplit:
        return self.splits["train"]


def prepare(config: TrainConfig, backend: Backend, dataset, state: TrainState | None,
            metrics_path) -> tuple[Setup, TrainState]:
    """The data on the device and the compiled steps; the state to start from, checked
    against the data.

    Parameters
    ----------
    config : TrainConfig
    backend : Backend
    dataset : multinet.data.Dataset
    state : TrainState or None
        The state to continue from; None: a new run's (``initial_state``).
    metrics_path : path or None
        The metrics file, whose missing records are to be written first.

    Returns
    -------
    tuple
        ``(Setup, TrainState)``.

    Raises
    ------
    MultinetError
        Where the data, the network or the devices do not fit together.
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
    layers = config.network_layers()
    check_network_fits(config, backend, features, len(train_split))
    if state is None:
        state = initial_state(config, backend, features)
    full_batch = config.batch_size == 0 or config.batch_size >= len(train_split)
    if backend.device_count > 1 and (full_batch or config.batch_size % backend.device_count):
        raise MultinetError(
            f"splitting batches over {backend.device_count} devices needs minibatches "
            f"({argument('batch_size')}) that divide evenly by {backend.device_count}")
    batches = 1 if full_batch else len(train_split) // config.batch_size
    check_position(state, batches, features, layers)
    pending = metrics_to_write_first(metrics_path, state) if metrics_path else []
    optimizer = config.optimizer_spec()
    if backend.mutable_arrays:
        # The steps update in place: on arrays of this run's own, never the caller's.
        state.params = own_copy(backend, state.params)
        state.opt_state = own_copy(backend, state.opt_state)
    x_all = x_t = None
    if full_batch:
        step = backend.compile(make_step(optimizer, backend.fuse_chunk,
                                         backend.mutable_arrays, layers))
        run_steps = make_full_batch_runner(backend, optimizer, config.dtype, layers)
        x_all, x_t = full_batch_inputs(backend, train_split, config.dtype, layers)
        if backend.materialize:  # else a lazy library scales the images again every step
            x_all, x_t = backend.materialize((x_all, x_t))
    else:
        step = backend.compile(make_minibatch_step(optimizer, backend.mutable_arrays,
                                                   layers))
        run_steps = make_epoch_runner(backend, optimizer, config.dtype, layers)
    if backend.capture_step is not None:
        step = capture(backend, step, config.dtype)
    setup = Setup(config=config, backend=backend, layers=layers, splits=splits,
                  full_batch=full_batch, batches=batches,
                  total_steps=config.epochs * batches, step=step, run_steps=run_steps,
                  x_all=x_all, x_t=x_t, predict_labels=make_predictor(backend, layers=layers),
                  pending=pending)
    return setup, state


def initial_state(config: TrainConfig, backend: Backend, features: int) -> TrainState:
    """A new run's state: parameters drawn as ``config`` says (on the host, for the
    network of ``config.network_layers()`` on ``features`` inputs), a fresh optimizer
    state.

    Parameters
    ----------
    config : TrainConfig
    backend : Backend
    features : int
        Inputs of the first layer (pixels of an image).

    Returns
    -------
    TrainState
    """
    host = draw_layer_params(config.network_layers(), features, seed=config.seed,
                             init=config.init)
    params = to_backend(host, backend, config.dtype)
    return TrainState(params=params, opt_state=optim.init_state(config.optimizer_spec(), params))
