"""multinet from Python: load a dataset, train, look at the result, save it, load it back.

Everything the ``multinet`` command does for training goes through these functions (the
CLI parses its options and calls them), so a notebook and the command line run the same
code. Names and defaults are the CLI's: ``fit(iterations=100)`` is ``multinet train
--iterations 100``. Errors name the Python arguments (``data_dir=``); the CLI spells them
as its flags.

Arrays: images are ``uint8`` pixel values 0-255, ``(n, 28, 28)`` or ``(n, 784)``, labels
integers 0-9; results come back as NumPy arrays on the host, whatever the backend.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from multinet.errors import InvalidArgument, MultinetError, argument
from multinet.registry import Backend, get_backend

if TYPE_CHECKING:  # for the annotations only: importing multinet stays light
    import numpy as np
    from matplotlib.figure import Figure

    from multinet.data import Dataset
    from multinet.train import TrainConfig, TrainState

#: The keyword arguments of ``fit`` that set a hyperparameter over the preset's value
#: (the ``multinet train`` options of the same names).
HYPERPARAMETERS = ("hidden", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                   "batch_size", "epochs", "iterations", "seed", "dtype", "init",
                   "log_every", "dev_size")
#: Where an interrupted run is saved when no ``save=`` path was given.
INTERRUPTED_CHECKPOINT = Path("multinet-interrupted.safetensors")
COORDINATOR_ENV_VAR = "MULTINET_COORDINATOR"


def load_dataset(name: str = "mnist", data_dir: str | os.PathLike | None = None, *,
                 download: bool = True, verify: bool = True, mirrors=None,
                 source: str = "multinet", progress: bool = True) -> Dataset:
    """Find, read and check an MNIST-format dataset; download it first if need be.

    Returns a ``multinet.data.Dataset`` on the host: ``train_images`` ``(60000, 28, 28)``
    and ``test_images`` ``(10000, 28, 28)`` uint8 (pixel values 0-255), ``train_labels``
    ``(60000,)`` and ``test_labels`` ``(10000,)`` uint8 (0-9), its ``name`` and the
    ``directory`` it was read from.

    ``name``: ``"mnist"`` or ``"fashion-mnist"``. ``data_dir``: the folder to read; None
    searches ``$MULTINET_DATA``, then the per-user cache, then system folders (see
    ``multinet.data``). When nothing is found and no folder was named, the files are
    downloaded into the cache (from ``mirrors``, a list of base URLs, else
    ``$MULTINET_MIRRORS``, else the dataset's known mirrors), unless ``download=False``.
    ``verify``: check every file's contents against the dataset's known SHA-256 (pass
    False only for MNIST-format files of your own). ``source="torchvision"`` loads
    through ``torchvision.datasets`` instead, as the original notebook did.

    Raises ``DatasetNotFound`` (files not found, saying where it looked), ``DatasetError``
    (a damaged, truncated or foreign file, naming it) and ``InvalidArgument``.
    """
    from multinet import data
    from multinet.download import ensure_dataset

    if source == "torchvision":
        return data.load_with_torchvision(name, data_dir, download=download)
    if source != "multinet":
        raise InvalidArgument(f"{argument('source', source)}: choose 'multinet' or "
                              "'torchvision'")
    if isinstance(mirrors, (str, os.PathLike)):
        mirrors = [mirrors]
    ensure_dataset(name, data_dir, offline=not download, mirrors=mirrors, progress=progress)
    return data.load_dataset(data_dir, name, verify=verify)


def fit(dataset: Dataset | str | None = None, *, preset: str | None = None,
        backend: Backend | str | None = None, progress: bool = True,
        resume: Run | str | os.PathLike | None = None, save: str | os.PathLike | None = None,
        metrics: str | os.PathLike | None = None, plots: str | os.PathLike | None = None,
        devices: int | str | None = None, **overrides) -> Run:
    """Train the network and evaluate it on the train, dev and test sets.

    ``dataset``: a ``Dataset`` from ``load_dataset``, or a dataset name to load, or None
    for MNIST (or, with ``resume``, the dataset the run was trained on). ``preset``:
    ``"notebook"`` (784-10-10, 500 full-batch gradient-descent iterations at lr 0.2; what
    None means, except with ``resume``, which keeps the saved one) or ``"mlp"``
    (784-512-256-10, Adam, batches of 128, 10 epochs). ``backend``:
    a name (``"numpy"``, ``"jax"``, ``"cupy"``, ``"torch"``, ...), a ``Backend``, or None
    for ``$MULTINET_BACKEND``, else numpy. ``progress``: a tqdm bar (a widget in Jupyter,
    text in a terminal).

    ``overrides`` set any hyperparameter over the preset's value, by the CLI's option
    names: ``hidden`` (an int or a sequence, one width per hidden layer), ``lr``,
    ``optimizer`` ("sgd", "momentum", "adam"), ``momentum``, ``weight_decay``,
    ``schedule`` ("constant", "cosine"), ``batch_size`` (0: the whole training set),
    ``epochs`` (passes over the training set) or, for full-batch runs, ``iterations``
    (the same count; give one), ``seed``, ``dtype`` ("float32", "float64"), ``init``
    ("uniform", "he"), ``log_every`` (epochs between the records of ``Run.history``),
    ``dev_size`` (training images held out as the dev set, 1000).

    ``resume``: a ``Run`` or a checkpoint path to continue; its configuration is kept
    (only ``epochs`` / ``iterations``, the new total, may be given) and the run ends
    where an uninterrupted one would. ``save``: write a checkpoint there at every log
    point. ``metrics``: append one JSON line per log point to that file. ``plots``: write
    the three figures as PNG files into that folder at the end (``Run.save_plots``).
    ``devices`` (JAX): split every batch over that many devices, or ``"all"``. Every
    output is checked writable before any data is read.

    Ctrl-C (or Jupyter's interrupt) stops between two steps, saves the state (to
    ``save``, else ``multinet-interrupted.safetensors``) and raises
    ``multinet.train.TrainingInterrupted`` naming the file; a loss that stops being finite
    raises ``multinet.train.TrainingDiverged``. Raises ``InvalidArgument`` for a bad value and ``TypeError``
    for an unknown keyword; data, backend and checkpoint problems raise the
    ``MultinetError`` subclass that names them; ``PlotsNotWritten`` (with the finished
    run as its ``run``) when only the plots failed.

    On glibc (Linux), the first run raises malloc's mmap and trim thresholds for the rest
    of the process, so each step reuses the memory of the step before, and a finished run
    ends with ``malloc_trim`` (``multinet.heap``; not where the user set them, ``MALLOC_*_``).
    """
    from multinet.data import Dataset

    if dataset is not None and not isinstance(dataset, (Dataset, str)):
        raise InvalidArgument(f"dataset must be a Dataset from multinet.load_dataset, a "
                              f"dataset name or None; got {type(dataset).__name__}")
    given = isinstance(dataset, Dataset)
    plan = prepare_fit(dataset.name if given else dataset, preset=preset, backend=backend,
                       resume=resume, save=save, metrics=metrics, plots=plots,
                       devices=devices, **overrides)
    return plan.run(dataset if given else load_dataset(plan.dataset_name), progress=progress)


def prepare_fit(dataset_name: str | None = None, *, preset: str | None = None,
                backend: Backend | str | None = None,
                resume: Run | str | os.PathLike | None = None, save=None, metrics=None,
                plots=None, devices: int | str | None = None, device: str | None = None,
                compile: bool = False, **overrides) -> FitPlan:
    """``fit`` up to the data: every argument checked, the checkpoint to resume read, the
    backend chosen (on ``device``, with its optional compiler if ``compile``), every
    output checked writable; nothing is loaded or trained yet.

    ``dataset_name``: the dataset that will be given to ``run`` (None: MNIST, or the
    resumed run's). The command line calls this, loads ``plan.dataset_name`` with its
    own data options, then ``plan.run(dataset)``; ``fit`` does the same. Raises as
    ``fit`` does.
    """
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}; the "
                        f"hyperparameters are {', '.join(HYPERPARAMETERS)}")
    source = _resumable(resume) if resume is not None else None
    if source is not None and dataset_name not in (None, source.dataset_name):
        raise MultinetError(f"the checkpoint was trained on {source.dataset_name}, "
                            f"not {dataset_name}")
    config = (_resumed_config(source, preset, overrides) if source is not None
              else _new_config(preset, overrides))
    _check_options(config, overrides, source, save=save, metrics=metrics, plots=plots)
    keep = (source is not None and source.backend is not None and backend is None
            and devices is None and device is None and not compile)
    chosen = source.backend if keep else resolve_backend(backend, devices, device=device,
                                                         compile=compile)
    if chosen.is_primary:  # in a multi-process run, process 0 writes
        _check_outputs(save, metrics, plots, resumed_from=source.path if source else None)
    return FitPlan(config=config, backend=chosen,
                   dataset_name=dataset_name or (source.dataset_name if source else "mnist"),
                   resume=source, save=Path(save) if save else None,
                   metrics=Path(metrics) if metrics else None,
                   plots=Path(plots) if plots else None)


def load(path: str | os.PathLike, backend: Backend | str | None = None, *,
         devices: int | str | None = None) -> Run:
    """A run from a checkpoint written by ``Run.save`` or ``multinet train --save``, on
    ``backend`` (any: checkpoints move between backends; None as for ``fit``).

    Its ``summary`` holds what the checkpoint records (configuration, steps, time, last
    loss), not accuracies: ``evaluate()`` measures them. Raises ``CheckpointError`` for a
    missing, unreadable or invalid file (naming what is wrong).
    """
    from multinet import checkpoint as ckpt
    from multinet.network import layer_sizes

    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgument(f"path must be a checkpoint's file name (a str or a "
                              f"pathlib.Path), got {type(path).__name__}")
    loaded = ckpt.load(path)
    chosen = resolve_backend(backend, devices)
    state = loaded.state_on(chosen)
    summary = {
        "backend": chosen.name, "device": str(chosen.device), **loaded.config.to_dict(),
        "iterations": state.step, "sizes": list(layer_sizes(loaded.params)),
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "seconds": state.seconds, "dataset": loaded.dataset,
        "devices": chosen.device_count, "processes": chosen.process_count,
        "checkpoint": str(path),
    }
    return Run(config=loaded.config, backend=chosen, state=state, summary=summary,
               dataset_name=loaded.dataset,
               dataset_sha256=dict(loaded.metadata["dataset"]["content_sha256"]))


def init_params(sizes, *, seed: int, backend: Backend | str | None = None,
                dtype: str = "float32", init: str = "uniform") -> dict:
    """Starting parameters ``{"W1", "b1", ..., "Wk", "bk"}`` on ``backend``, in ``dtype``.

    ``sizes``: layer widths, ``(784, 10, 10)`` for the notebook's network; ``Wi`` is
    ``(sizes[i-1], sizes[i])`` and ``bi`` ``(sizes[i],)``. They are drawn on the host with
    NumPy's ``default_rng(seed)`` and moved to the backend, so every backend and dtype
    starts from the same numbers. ``init``: ``"uniform"`` (U(-0.5, 0.5), the notebook's)
    or ``"he"`` (N(0, 2 / fan_in) weights, zero biases). On JAX, float64 needs
    ``backend.enable_dtype("float64")`` first. Raises ``ValueError`` for bad sizes or
    an unknown ``init``.
    """
    from multinet.initializers import init_params as draw

    return draw(sizes, seed=seed, backend=backend, dtype=dtype, init=init)


@dataclass(frozen=True, repr=False, eq=False)
class Run:
    """A trained network with what it was trained with, from ``fit`` or ``load``.

    ``summary``: the dict ``multinet train --json`` prints (backend, device, every
    hyperparameter, ``iterations``, ``sizes``, ``train_accuracy`` / ``dev_accuracy`` /
    ``test_accuracy`` (fractions 0-1), ``final_loss``, ``seconds`` of training,
    ``samples_per_second``, ``dataset``, ``checkpoint``). ``history``: one record per log
    point (``epoch``, ``step``, ``lr``, ``loss``, ``train_accuracy``, ``dev_accuracy``,
    ``seconds``). ``params``: the parameters on the backend (``W1`` ``(784, hidden)``,
    ``b1`` ``(hidden,)``, ...).
    """

    config: TrainConfig
    backend: Backend
    state: TrainState
    summary: dict
    dataset_name: str
    #: The known content checksums of the dataset's files, by role (checked on resume).
    dataset_sha256: dict
    #: The data it was trained on (``fit``), for ``evaluate`` and ``plot_predictions``;
    #: None after ``load``: they then load ``dataset_name`` when they need it.
    dataset: Dataset | None = None

    @property
    def params(self) -> dict:
        return self.state.params

    @property
    def history(self) -> list[dict]:
        return self.state.history

    def __repr__(self) -> str:
        accuracy = self.summary.get("test_accuracy")
        return (f"Run(preset={self.config.preset!r}, backend={self.backend.name!r}, "
                f"dtype={self.config.dtype!r}, sizes={'-'.join(map(str, self._sizes))}, "
                f"iterations={self.state.step}"
                + (f", test_accuracy={accuracy:.4f})" if accuracy is not None else ")"))

    @property
    def _sizes(self) -> tuple[int, ...]:
        from multinet.network import layer_sizes

        return tuple(int(s) for s in layer_sizes(self.params))

    @cached_property
    def _host_params(self) -> dict:
        from multinet.initializers import to_host

        return to_host(self.params, self.backend)

    @cached_property
    def _predictor(self):
        from multinet.train import make_predictor

        self.backend.enable_dtype(self.config.dtype)
        return make_predictor(self.backend)

    def _flat_images(self, images) -> np.ndarray:
        """``images`` as a ``(n, features)`` uint8 host array, or ``InvalidArgument``."""
        import numpy as np

        array = np.asarray(images)
        features = self._sizes[0]
        side = math.isqrt(features)
        if array.dtype != np.uint8:
            raise InvalidArgument(
                f"images must be uint8 pixel values 0-255, as load_dataset gives them; got "
                f"{array.dtype} (for floats in [0, 1]: (images * 255).round().astype("
                f"numpy.uint8))")
        if array.ndim == 3 and array.shape[1:] == (side, side) and side * side == features:
            return array.reshape(len(array), features)
        if array.ndim == 2 and array.shape[1] == features:
            return array
        hint = ("; for one image pass image[None]"
                if array.shape in ((side, side), (features,)) else "")
        raise InvalidArgument(f"images must have shape (n, {side}, {side}) or "
                              f"(n, {features}); got {array.shape}{hint}")

    def predict(self, images) -> np.ndarray:
        """Predicted labels ``(n,)`` int64 (0-9) for uint8 ``images`` ``(n, 28, 28)`` or
        ``(n, 784)`` (a NumPy array, a list of uint8 images, a device array).

        Runs on the run's backend, in chunks (``multinet.train.make_predictor``). Raises
        ``InvalidArgument`` for another dtype or shape, and
        ``multinet.evaluation.OutputsNotFinite`` for weights too large for the dtype."""
        import numpy as np

        from multinet.evaluation import check_finite

        flat = self._flat_images(images)
        check_finite(self._host_params, flat, self.config.dtype)
        labels = self._predictor(self.params, self.backend.asarray(flat))
        return np.asarray(labels, dtype=np.int64)

    def probabilities(self, images) -> np.ndarray:
        """Softmax probabilities ``(n, 10)`` float64 (rows sum to 1) for uint8 ``images``
        ``(n, 28, 28)`` or ``(n, 784)``; the logits come from the backend. Raises
        ``multinet.evaluation.OutputsNotFinite`` for weights too large for the dtype."""
        from multinet.evaluation import probabilities

        return probabilities(self._host_params, self.backend, self._flat_images(images),
                             self.config.dtype)

    def evaluate(self, dataset: Dataset | str | None = None) -> dict:
        """Test-set accuracy, per class, and the confusion matrix, on this run's backend.

        ``dataset``: a ``Dataset`` or name; None: the one it was trained on (loaded by
        name for a run from ``load``). Returns ``test_accuracy`` (fraction),
        ``test_samples``, ``per_class_accuracy`` (10 fractions), ``confusion_matrix``
        (10 x 10 lists, ``[true][predicted]`` counts), ``predictions`` (``(n,)`` NumPy
        labels), ``backend`` and ``dataset``. Raises ``multinet.evaluation.OutputsNotFinite``
        when the weights are too large for the dtype (its forward pass overflows)."""
        from multinet.evaluation import evaluate

        data = self._data(dataset)
        return evaluate(self._host_params, self.backend, data, self.config.dtype)

    def _data(self, dataset) -> Dataset:
        if dataset is not None:
            return _dataset(dataset)
        return self.dataset if self.dataset is not None else _dataset(self.dataset_name)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the run as a checkpoint (safetensors, atomically) that ``multinet.load``,
        ``fit(resume=...)`` and every ``multinet`` command read, on any backend.

        Returns the path. Raises ``CheckpointError`` for a state that is not finite and
        ``OutputError`` when the file cannot be written, or when ``path`` is an existing
        file that is not a safetensors file (it would be lost). In a multi-process run only
        process 0 writes."""
        from multinet import checkpoint as ckpt
        from multinet.files import check_replaceable

        if not self.backend.is_primary:
            return Path(path)
        check_replaceable(path, argument("path"), "checkpoint (safetensors)")
        return ckpt.save(path, self.config, self.state, backend=self.backend,
                         dataset_name=self.dataset_name, dataset_sha256=self.dataset_sha256)

    def plot_curves(self, title: str | None = None) -> Figure:
        """The training loss (log scale) and train/dev accuracy against the epoch, as a
        matplotlib ``Figure`` (shown inline in Jupyter; ``.savefig(path)`` elsewhere).
        Needs matplotlib; raises ``MultinetError`` without it or without history."""
        from multinet import plots

        return plots.curves_figure(
            self.history, self._title() if title is None else title,
            xlabel="iteration (full batch)" if self.config.batch_size == 0 else "epoch")

    def _title(self) -> str:
        return (f"{self.config.preset} preset on {self.backend.name}, {self.config.dtype}, "
                f"{'-'.join(map(str, self._sizes))}")

    def plot_predictions(self, images=None, labels=None, *, count: int = 8,
                         columns: int | None = None, title: str | None = None) -> Figure:
        """Images with the predicted class and its probability, as a ``Figure``.

        ``images``: uint8 ``(n, 28, 28)`` or ``(n, 784)``; None: the first ``count`` test
        images of the run's dataset, with their labels. ``labels``, optional ``(n,)``
        integers 0-9: a wrong prediction is then drawn in red with the true class.
        Raises ``InvalidArgument`` for no images, or labels of another shape or range."""
        from multinet import plots
        from multinet.data import dataset_spec

        import numpy as np

        if images is None:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidArgument(f"count must be an integer >= 1, got {count!r}")
            data = self._data(None)
            images, labels = data.test_images[:count], data.test_labels[:count]
        flat = self._flat_images(images)
        if len(flat) == 0:
            raise InvalidArgument("images holds no image to plot")
        classes = self._sizes[-1]
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(flat),) or labels.dtype.kind not in "iu":
                raise InvalidArgument(f"labels must be {len(flat)} integer labels, one per "
                                      f"image, shape ({len(flat)},); got {labels.dtype} "
                                      f"{labels.shape}")
            if labels.min() < 0 or labels.max() >= classes:
                raise InvalidArgument(f"labels must be classes 0-{classes - 1}, got "
                                      f"{labels.min()}..{labels.max()}")
        side = math.isqrt(flat.shape[1])
        probabilities = self.probabilities(flat)
        return plots.predictions_figure(
            flat.reshape(len(flat), side, side), probabilities.argmax(axis=1), labels,
            probabilities=probabilities, columns=columns,
            class_names=dataset_spec(self.dataset_name).classes,
            title=self._title() if title is None else title)

    def plot_confusion(self, dataset: Dataset | str | None = None) -> Figure:
        """The test set's confusion matrix (``evaluate(dataset)``) as a ``Figure``."""
        import numpy as np

        from multinet import plots
        from multinet.data import dataset_spec

        result = self.evaluate(dataset)
        return plots.confusion_figure(np.asarray(result["confusion_matrix"]),
                                      dataset_spec(result["dataset"]).classes)

    def save_plots(self, folder: str | os.PathLike, dataset: Dataset | str | None = None,
                   title: str | None = None) -> list[Path]:
        """The training curves, a grid of test predictions (mistakes in red) and the
        confusion matrix as PNG files in ``folder`` (created if need be), as ``multinet
        train --plots`` and ``multinet plot`` write them; returns their paths. Raises
        ``MultinetError`` without matplotlib and ``OSError`` when a file cannot be
        written (``OutputError``, before any work, when ``folder`` is a file or cannot be
        written at all)."""
        from multinet import plots
        from multinet.files import check_output_dir

        check_output_dir(folder, argument("folder"))
        data = self._data(dataset)
        return plots.write_all(folder, self.history, data, self.evaluate(data),
                               title=f"{self.config.preset} preset on {self.backend.name}"
                               if title is None else title)


class PlotsNotWritten(MultinetError):
    """Training finished (``run`` holds the run, its checkpoint is written) but the
    figures could not be written to the ``plots`` folder."""

    def __init__(self, message: str, run: Run):
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class FitPlan:
    """A training run ready to start, from ``prepare_fit``: what was checked and chosen."""

    config: TrainConfig
    backend: Backend
    #: The dataset ``run`` expects (its name).
    dataset_name: str
    resume: _Resumable | None
    save: Path | None
    metrics: Path | None
    plots: Path | None

    def run(self, dataset: Dataset, *, progress: bool = True) -> Run:
        """Train on ``dataset`` (host arrays, as ``load_dataset`` returns them) and
        evaluate; the rest of ``fit``."""
        if dataset.name != self.dataset_name:
            raise MultinetError(f"this run was prepared for {self.dataset_name}, "
                                f"not {dataset.name}")
        sha256 = _content_sha256(dataset.name)
        if self.resume is not None and dict(self.resume.dataset_sha256) != sha256:
            raise MultinetError("the checkpoint was trained on other data files "
                                "(checksums differ)")
        state = self.resume.state_on(self.backend) if self.resume is not None else None
        return _train(self, dataset, sha256, state, progress)


@dataclass(frozen=True)
class _Resumable:
    """What ``fit(resume=...)`` continues: a checkpoint's or a run's configuration,
    position and dataset, and its state on a given backend."""

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


def _resumable(resume) -> _Resumable:
    if isinstance(resume, Run):
        def state_on(backend: Backend) -> TrainState:
            if backend is resume.backend:
                return _copy_state(resume.state)
            return _moved_state(resume, backend)

        state = resume.state
        return _Resumable(resume.config, resume.dataset_name, resume.dataset_sha256,
                          state.epoch, state.batch, state.step, state_on, resume.backend)
    if isinstance(resume, (str, os.PathLike)):
        from multinet import checkpoint as ckpt

        loaded = ckpt.load(resume)
        progress = loaded.metadata["progress"]
        return _Resumable(loaded.config, loaded.dataset,
                          dict(loaded.metadata["dataset"]["content_sha256"]),
                          progress["epoch"], progress["batch"], progress["step"],
                          loaded.state_on, path=Path(resume))
    raise InvalidArgument(f"resume must be a Run or a checkpoint path, got "
                          f"{type(resume).__name__}")


def resolve_backend(backend: Backend | str | None = None, devices: int | str | None = None,
                    *, device: str | None = None, compile: bool = False) -> Backend:
    """The backend for ``backend`` (a name, a ``Backend`` or None: ``$MULTINET_BACKEND``,
    else numpy), on ``device`` (``"cuda"``, ``"cuda:1"``, ``"cpu"``...; None: its
    default) with its optional compiler if ``compile``, split over ``devices`` (an int
    or ``"all"``) when given. Raises ``UnknownBackend``, ``BackendUnavailable`` or
    ``MultinetError`` saying why it cannot."""
    if os.environ.get(COORDINATOR_ENV_VAR) and not devices:
        raise MultinetError(f"a multi-process run (${COORDINATOR_ENV_VAR}) needs "
                            f"{argument('devices', 'all')}")
    if backend is None or isinstance(backend, str):
        chosen = get_backend(backend)
    elif isinstance(backend, Backend):
        chosen = backend
    else:
        raise InvalidArgument(f"backend must be a name or a Backend, got "
                              f"{type(backend).__name__}")
    chosen = chosen.configured(device, compile)
    if not devices:
        return chosen
    if chosen.data_parallel is None:
        raise MultinetError(
            f"{argument('devices', devices)}: backend {chosen.name!r} runs on one device; "
            f"data parallelism over several devices and hosts is supported through JAX "
            f"({argument('backend', 'jax')})")
    return chosen.data_parallel(devices)


def _moved_state(run: Run, target: Backend) -> TrainState:
    """``run``'s state on ``target``, through the host (as a checkpoint takes it)."""
    import numpy as np

    target.enable_dtype(run.config.dtype)

    def move(tree):
        return {k: move(v) if isinstance(v, dict)
                else target.asarray(np.asarray(run.backend.to_numpy(v))) for k, v in tree.items()}

    def scalar(value):  # a sum of the epoch in progress: a number or a 0-d array
        return value if value is None or isinstance(value, (int, float)) else float(
            np.asarray(run.backend.to_numpy(value)))

    return dataclasses.replace(run.state, params=move(run.state.params),
                               opt_state=move(run.state.opt_state),
                               history=list(run.state.history),
                               loss_sum=scalar(run.state.loss_sum),
                               accuracy_sum=scalar(run.state.accuracy_sum))


def _copy_state(state: TrainState) -> TrainState:
    """A state ``train`` may advance without changing the run it came from (arrays are
    never modified in place; the containers are copied)."""
    def copy(tree):
        return {k: copy(v) if isinstance(v, dict) else v for k, v in tree.items()}

    return dataclasses.replace(state, params=copy(state.params),
                               opt_state=copy(state.opt_state), history=list(state.history))


def _epochs(overrides: dict) -> int | None:
    from multinet.train import is_integer

    epochs, iterations = overrides.get("epochs"), overrides.get("iterations")
    if epochs is not None and iterations is not None:
        raise InvalidArgument(f"{argument('iterations')} and {argument('epochs')} are the "
                              "same count (passes over the training set); give one")
    name, count = ("epochs", epochs) if epochs is not None else ("iterations", iterations)
    if count is not None and not is_integer(count):
        raise InvalidArgument(f"{argument(name)} must be an integer, got {count!r}")
    return count


def _new_config(preset: str | None, overrides: dict) -> TrainConfig:
    from multinet.train import PRESETS, TrainConfig

    preset = "notebook" if preset is None else preset
    if preset not in PRESETS:
        raise InvalidArgument(f"{argument('preset', preset)}: choose "
                              f"{' or '.join(map(repr, PRESETS))}")
    values = {k: v for k, v in overrides.items() if k not in ("epochs", "iterations")}
    if isinstance(values.get("hidden"), numbers.Integral):  # one hidden layer
        values["hidden"] = (values["hidden"],)
    try:
        return TrainConfig.from_preset(preset, epochs=_epochs(overrides), **values)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(str(exc)) from None


def _resumed_config(source: _Resumable, preset: str | None, overrides: dict) -> TrainConfig:
    config = source.config
    given = [name for name in ("preset", *HYPERPARAMETERS)
             if name not in ("epochs", "iterations", "dtype")
             and (preset if name == "preset" else overrides.get(name)) is not None]
    if given:
        raise InvalidArgument(
            f"{argument('resume')} continues the saved configuration; "
            f"{', '.join(argument(name) for name in given)} cannot change (only "
            f"{argument('epochs')} / {argument('iterations')} can)")
    dtype = overrides.get("dtype")
    if dtype is not None and dtype != config.dtype:
        raise InvalidArgument(f"the checkpoint was trained in {config.dtype}; "
                              f"{argument('dtype', dtype)} cannot resume it")
    total = _epochs(overrides)
    if total is not None:
        config = dataclasses.replace(config, epochs=total)
    if source.epoch > config.epochs or (source.epoch == config.epochs and source.batch):
        raise InvalidArgument(f"the checkpoint is already at epoch {source.epoch} (step "
                              f"{source.step}); {argument('epochs', config.epochs)} ends "
                              "before it")
    return config


def _check_options(config: TrainConfig, overrides: dict, source, *, save, metrics,
                   plots) -> None:
    """Refuse combinations that conflict or mean nothing, before any work."""
    if overrides.get("iterations") is not None and config.batch_size:
        raise InvalidArgument(
            f"{argument('iterations')} counts full-batch steps, but this run takes batches "
            f"of {config.batch_size} ({argument('batch_size')}, or "
            f"{argument('preset', config.preset)}): give {argument('epochs')}")
    if overrides.get("momentum") is not None and config.optimizer != "momentum":
        raise InvalidArgument(f"{argument('momentum')} is the coefficient of "
                              f"{argument('optimizer', 'momentum')}; this run uses "
                              f"{config.optimizer}")
    if source is None and config.epochs == 0:
        pointless = [name for name, value in (("save", save), ("metrics", metrics),
                                              ("plots", plots)) if value]
        if pointless:
            count = "iterations" if overrides.get("iterations") is not None else "epochs"
            raise InvalidArgument(f"{argument(count, 0)} trains nothing: there is nothing "
                                  f"to {' or '.join(map(argument, pointless))}")


def _check_outputs(save, metrics, plots, *, resumed_from: Path | None) -> None:
    """Every output, and matplotlib for the plots, checked before any work starts."""
    from multinet.files import (OutputError, check_appendable, check_output_dir,
                                check_output_file, check_replaceable, same_file)

    for name, value in (("save", save), ("metrics", metrics), ("plots", plots)):
        if isinstance(value, str) and not value:  # it would be ignored, or be "."
            raise OutputError(f"{argument(name)}: an empty path; name a "
                              f"{'folder' if name == 'plots' else 'file'}")
    if save is not None:
        in_place = resumed_from is not None and Path(save) == resumed_from
        try:
            check_output_file(save, argument("resume" if in_place else "save"))
        except OutputError as exc:
            if not in_place:
                raise
            raise OutputError(f"{exc}; the run's checkpoints go where it resumed from "
                              f"unless {argument('save', meta='PATH')} names another "
                              "place") from None
        check_replaceable(save, argument("save"), "checkpoint (safetensors)")
    if metrics is not None:
        check_output_file(metrics, argument("metrics"), append=True)
        if save is not None and same_file(save, metrics):
            raise OutputError(f"{argument('metrics')} {metrics}: is the checkpoint's file "
                              "too; give the metrics a file of their own")
        check_appendable(metrics, argument("metrics"), "metrics file")
    if plots is not None:
        try:
            import matplotlib.figure  # noqa: F401
        except ImportError:
            raise MultinetError("plots need matplotlib: pip install 'multinet[plot]'"
                                ) from None
        check_output_dir(plots, argument("plots"))


def _dataset(value) -> Dataset:
    from multinet.data import Dataset

    if isinstance(value, Dataset):
        return value
    if isinstance(value, str):
        return load_dataset(value)
    raise InvalidArgument(f"dataset must be a Dataset from multinet.load_dataset, a dataset "
                          f"name or None; got {type(value).__name__}")


def _content_sha256(name: str) -> dict:
    from multinet.data import dataset_spec

    return dict(dataset_spec(name).content_sha256)


def _train(plan: FitPlan, dataset: Dataset, sha256: dict, state, progress: bool) -> Run:
    """The one training path of ``fit`` (and so of ``multinet train``)."""
    import numpy as np

    from multinet import checkpoint as ckpt
    from multinet import files, heap
    from multinet.train import train

    config, backend, save = plan.config, plan.backend, plan.save

    def saver(path: Path):
        if not backend.is_primary:  # in a multi-process run, process 0 writes
            return lambda state: path
        return lambda state: ckpt.save(path, config, state, backend=backend,
                                       dataset_name=dataset.name, dataset_sha256=sha256)

    # On a signal or a failed write: ``save`` (else the interrupt file in the working
    # folder), and where that cannot be written, the system's temporary folder.
    rescue = ckpt.rescuing(lambda path, state: saver(path)(state),
                           save or INTERRUPTED_CHECKPOINT)
    # A diverging run is stopped with one line naming its cause; NumPy's overflow
    # warnings on the way there would only bury it.
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = train(config, backend, dataset,
                           progress=progress and backend.is_primary, state=state,
                           checkpoint=saver(save) if save else None, on_interrupt=rescue,
                           metrics_path=plan.metrics if backend.is_primary else None)
    finally:  # once the run's splits and temporaries are gone, however it ended
        heap.release_free_memory()
    summary = {**result.summary, "dataset": dataset.name, "devices": backend.device_count,
               "processes": backend.process_count,
               "checkpoint": str(save) if save else None}
    run = Run(config=config, backend=backend, state=result.state, summary=summary,
              dataset_name=dataset.name, dataset_sha256=sha256, dataset=dataset)
    if plan.plots is not None and backend.is_primary:
        try:  # the run is over and saved: a failure here loses nothing
            summary["plots"] = [str(p) for p in run.save_plots(plan.plots)]
        except (MultinetError, OSError, MemoryError) as exc:
            detail = (files.reason(exc) if isinstance(exc, OSError)
                      and not isinstance(exc, MultinetError) else str(exc) or "out of memory")
            raise PlotsNotWritten(f"training finished but the plots were not written to "
                                  f"{plan.plots}: {detail}", run) from None
    return run


__all__ = ["FitPlan", "PlotsNotWritten", "Run", "fit", "init_params", "load", "load_dataset",
           "prepare_fit", "resolve_backend"]
