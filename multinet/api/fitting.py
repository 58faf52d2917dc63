"""``fit``: train the network and evaluate it, the one training path of multinet.

``multinet train`` goes through here too: it calls ``prepare_fit`` (every argument
checked, the backend chosen, every output checked writable, before any data is read),
loads the data with its own options, then ``FitPlan.run``. ``fit`` does the same with
``multinet.load_dataset``.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multinet import checkpoint, data, files, heap, locks
from multinet.api.arguments import check_dataset, check_devices, check_paths
from multinet.api.resume import Resumable, resumable, resumed_config
from multinet.api.run import Run
from multinet.data import Dataset
from multinet.errors import InvalidArgument, MultinetError, argument
from multinet.plots import require_matplotlib
from multinet.registry import Backend, resolve_backend
from multinet.training.config import HYPERPARAMETERS, PRESETS, TrainConfig, epochs_given
from multinet.training.loop import train
from multinet.training.progress import BAR, LINES

#: Where an interrupted run is saved when no ``save=`` path was given.
INTERRUPTED_CHECKPOINT = Path("multinet-interrupted.safetensors")


def fit(dataset: Dataset | str | None = None, *, preset: str | None = None,
        backend: Backend | str | None = None, progress: bool | str = True,
        resume: Run | str | os.PathLike | None = None, save: str | os.PathLike | None = None,
        metrics: str | os.PathLike | None = None, plots: str | os.PathLike | None = None,
        devices: int | str | None = None, device: str | None = None, compile: bool = False,
        force: bool = False, **overrides) -> Run:
    """Train the network and evaluate it on the train, dev and test sets.

    Parameters
    ----------
    dataset : Dataset, str or None
        A ``Dataset`` from ``load_dataset`` (or of your own arrays, checked first by
        ``multinet.data.validate``: a ``DatasetError`` names what is wrong), or a
        dataset's name to load, or None for MNIST (or, with ``resume``, the dataset the
        run was trained on). With ``resume``, its training images and labels must be
        those the run was trained on.
    preset : {"notebook", "mlp", "cnn"}, optional
        ``"notebook"``: 784-10-10, 500 full-batch gradient-descent iterations at lr 0.2
        (what None means, except with ``resume``, which keeps the saved one). ``"mlp"``:
        784-512-256-10, Adam, batches of 128, 10 epochs. ``"cnn"``: a LeNet-like
        convolutional network (``multinet.training.config.CNN_LAYERS``), Adam, batches of
        128, 10 epochs.
    backend : Backend, str or None
        A backend's name (``"numpy"``, ``"jax"``, ``"cupy"``, ``"torch"``, ...), a
        ``Backend``, or None for ``$MULTINET_BACKEND``, else numpy.
    progress : bool, "lines" or "bar"
        True: a tqdm progress bar where it can redraw in place (a terminal, a widget in
        Jupyter with ipywidgets), else a plain line on stderr every 10 s (a log);
        ``"lines"`` or ``"bar"`` choose one; False: none.
    resume : Run, str, os.PathLike or None
        A ``Run`` or a checkpoint's path to continue. Its configuration is kept (only
        ``epochs`` / ``iterations``, the new total, may be given), and the run ends where
        an uninterrupted one would.
    save : str or os.PathLike, optional
        Write a checkpoint there at every log point and at the end.
    metrics : str or os.PathLike, optional
        Append one JSON line per log point to that file.
    plots : str or os.PathLike, optional
        Write the three figures as PNG files into that folder at the end
        (``Run.save_plots``; needs matplotlib).
    devices : int, "all" or None
        Split every batch over that many devices (JAX), or all of them.
    device : str, optional
        The device to train on, for backends with a choice (``"cuda"``, ``"cuda:1"``,
        ``"mps"``, ``"cpu"``); None: the backend's first.
    compile : bool
        Use the backend's optional compiler (``torch.compile``: about a minute to compile
        on two CPU cores); JAX and MLX always compile.
    force : bool
        Replace an existing ``save`` file, or figures in ``plots``, of another kind (a
        file that is not a checkpoint, a picture that is not a PNG). Never the checkpoint
        of ``resume`` (except by ``save``, its own lineage), never by appending
        ``metrics``.
    **overrides
        Any hyperparameter over the preset's value, by the ``multinet train`` options'
        names: ``hidden`` (an int, or one width per hidden layer: a perceptron) or
        ``layers`` (the hidden layers as text, a list such as ``["conv:8:5x5:same",
        "relu", "maxpool:2", "flatten"]`` or one string with commas; the output layer
        ``dense:10`` is added; ``multinet.layers.parse_layer`` reads each), ``lr``,
        ``optimizer`` ("sgd", "momentum", "adam"), ``momentum``, ``weight_decay``, ``schedule``
        ("constant", "cosine"), ``batch_size`` (0: the whole training set), ``epochs``
        (passes over the training set) or, for full-batch runs, ``iterations`` (the same
        count; give one), ``seed``, ``dtype`` ("float32", "float64"), ``init``
        ("uniform", "he"), ``log_every`` (epochs between the records of
        ``Run.history``), ``dev_size`` (training images held out as the dev set, 1000).
        Their ranges are ``multinet.training.config.RANGES``.

    Returns
    -------
    Run
        The trained network, its ``summary`` (accuracies, time) and ``history``.

    Raises
    ------
    InvalidArgument
        For a bad value or combination (naming the argument), before any work.
    TypeError
        For an unknown keyword.
    multinet.files.OutputError
        For an output that cannot be written, is a special file (a named pipe, a
        device), would destroy an input or (without ``force``) a file of another kind,
        before any work.
    multinet.locks.OutputBusy
        Another multinet run is writing ``save``, ``metrics`` or ``plots``; the message
        names its process. The run holds these while it runs.
    TrainingInterrupted
        Ctrl-C (or Jupyter's interrupt), SIGTERM or SIGHUP stopped the run between two
        steps; its state was saved (to ``save``, else
        ``multinet-interrupted.safetensors``), and the message names the file.
    TrainingDiverged
        The loss, or a parameter, stopped being finite; nothing more was saved.
    TrainingStopped
        A checkpoint or the metrics could not be written, or memory ran out; the state
        was saved elsewhere where possible, and the message says where.
    PlotsNotWritten
        Only the figures failed; the finished run is its ``run``.
    MultinetError
        Data, backend and checkpoint problems raise the subclass that names them.

    Notes
    -----
    On glibc (Linux), the first run raises malloc's mmap and trim thresholds for the rest
    of the process, so each step reuses the memory of the step before, and a finished
    run ends with ``malloc_trim`` (``multinet.heap``; not where the user set them,
    ``MALLOC_*_``).
    """
    check_dataset(dataset)
    if not (isinstance(progress, (bool, np.bool_)) or progress in (LINES, BAR)):
        raise InvalidArgument(f"progress must be True, False, {LINES!r} or {BAR!r}, got "
                              f"{progress!r}")
    given = isinstance(dataset, Dataset)
    plan = prepare_fit(dataset.name if given else dataset, preset=preset, backend=backend,
                       resume=resume, save=save, metrics=metrics, plots=plots,
                       devices=devices, device=device, compile=compile, force=force,
                       **overrides)
    with plan:
        return plan.run(dataset if given else data.load_dataset(plan.dataset_name),
                        progress=progress)


def prepare_fit(dataset_name: str | None = None, *, preset: str | None = None,
                backend: Backend | str | None = None,
                resume: Run | str | os.PathLike | None = None, save=None, metrics=None,
                plots=None, devices: int | str | None = None, device: str | None = None,
                compile: bool = False, force: bool = False, **overrides) -> FitPlan:
    """``fit`` up to the data: every argument checked, the checkpoint to resume read, the
    backend chosen (on ``device``, with its optional compiler if ``compile``), every
    output checked writable and locked for this run (``multinet.locks``, released when
    the plan has run, or by ``FitPlan.release``); nothing is loaded or trained yet.

    ``dataset_name``: the dataset that will be given to ``FitPlan.run`` (None: MNIST, or
    the resumed run's). The command line calls this, loads ``plan.dataset_name`` with its
    own data options, then ``plan.run(dataset)``; ``fit`` does the same. Raises as
    ``fit`` does.
    """
    check_devices(devices)
    check_paths({"save": save, "metrics": metrics, "plots": plots})
    data.check_flags(compile=compile, force=force)
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}; the "
                        f"hyperparameters are {', '.join(HYPERPARAMETERS)}")
    source = resumable(resume) if resume is not None else None
    if source is not None and dataset_name not in (None, source.dataset_name):
        raise MultinetError(f"the checkpoint was trained on {source.dataset_name}, "
                            f"not {dataset_name}")
    config = (resumed_config(source, preset, overrides) if source is not None
              else _new_config(preset, overrides))
    _check_options(config, overrides, source, save=save, metrics=metrics, plots=plots)
    keep = (source is not None and source.backend is not None and backend is None
            and devices is None and device is None and not compile)
    chosen = source.backend if keep else resolve_backend(backend, devices, device=device,
                                                         compile=compile)
    held = None
    if chosen.is_primary:  # in a multi-process run, process 0 writes
        resumed_from = source.path if source else None
        files.check_outputs(save, metrics, plots, resumed_from=resumed_from, force=force)
        if plots is not None:
            require_matplotlib()
        in_place = save is not None and resumed_from is not None and (
            Path(save) == resumed_from)
        held = locks.hold({argument("resume" if in_place else "save"): save,
                           argument("metrics"): metrics, argument("plots"): plots})
    return FitPlan(config=config, backend=chosen,
                   dataset_name=dataset_name or (source.dataset_name if source else "mnist"),
                   resume=source, save=Path(save) if save else None,
                   metrics=Path(metrics) if metrics else None,
                   plots=Path(plots) if plots else None, held=held)


class PlotsNotWritten(MultinetError):
    """Training finished (``run`` holds the run, its checkpoint is written) but the
    figures could not be written to the ``plots`` folder, or the results (the
    accuracies) could not be added to the checkpoint."""

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
    resume: Resumable | None
    save: Path | None
    metrics: Path | None
    plots: Path | None
    #: The locks on the outputs, held from ``prepare_fit`` to the end of ``run``.
    held: locks.Held | None = None

    def run(self, dataset: Dataset, *, progress: bool = True) -> Run:
        """Train on ``dataset`` (host arrays, as ``load_dataset`` returns them) and
        evaluate; the rest of ``fit``. The outputs' locks are released at the end (and
        taken again if the plan runs twice)."""
        if self.held is not None:
            self.held.acquire()
        with self:
            return self._run(dataset, progress)

    def release(self) -> None:
        """Let go of the outputs' locks without running (``run`` does at its end)."""
        if self.held is not None:
            self.held.release()

    def __enter__(self) -> FitPlan:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _run(self, dataset: Dataset, progress: bool) -> Run:
        if dataset.name != self.dataset_name:
            raise MultinetError(f"this run was prepared for {self.dataset_name}, "
                                f"not {dataset.name}")
        images, dev = len(data.validate(dataset).train_labels), self.config.dev_size
        if images <= dev:
            # Named as fit's argument: the command line has no flag for it.
            raise InvalidArgument(f"the training set holds {images} images: too few to hold "
                                  f"{dev} out as the dev set (fit's dev_size={dev}) and "
                                  "train on the rest")
        sha256 = data.content_sha256s(dataset)
        if self.resume is not None:
            checkpoint.check_training_data(self.resume.dataset_sha256, dataset, sha256)
        state = self.resume.state_on(self.backend) if self.resume is not None else None
        return _train(self, dataset, sha256, state, progress)


def _new_config(preset: str | None, overrides: dict) -> TrainConfig:
    preset = "notebook" if preset is None else preset
    if preset not in PRESETS:
        raise InvalidArgument(f"{argument('preset', preset)}: choose "
                              f"{' or '.join(map(repr, PRESETS))}")
    values = {k: v for k, v in overrides.items() if k not in ("epochs", "iterations")}
    if isinstance(values.get("hidden"), numbers.Integral):  # one hidden layer
        values["hidden"] = (values["hidden"],)
    try:
        return TrainConfig.from_preset(preset, epochs=epochs_given(overrides), **values)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(str(exc)) from None


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


def _train(plan: FitPlan, dataset: Dataset, sha256: dict, state, progress: bool) -> Run:
    """The one training path of ``fit`` (and so of ``multinet train``)."""
    config, backend, save = plan.config, plan.backend, plan.save

    samples = {"train": len(dataset.train_labels), "test": len(dataset.test_labels)}

    def saver(path: Path, summary=None):
        if not backend.is_primary:  # in a multi-process run, process 0 writes
            return lambda state: path
        return lambda state: checkpoint.save(path, config, state, backend=backend,
                                             dataset_name=dataset.name,
                                             dataset_sha256=sha256, dataset_samples=samples,
                                             summary=summary)

    # On a signal or a failed write: ``save`` (else the interrupt file in the working
    # folder), and where that cannot be written, the system's temporary folder.
    rescue = checkpoint.rescuing(lambda path, state: saver(path)(state),
                                 save or INTERRUPTED_CHECKPOINT)
    # A diverging run is stopped with one line naming its cause; NumPy's overflow
    # warnings on the way there would only bury it.
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = train(config, backend, dataset,
                           progress=progress if backend.is_primary else False,
                           state=state, checkpoint=saver(save) if save else None,
                           on_interrupt=rescue, checkpoint_path=save,
                           metrics_path=plan.metrics if backend.is_primary else None)
    finally:  # once the run's splits and temporaries are gone, however it ended
        heap.release_free_memory()
    summary = {**result.summary, "dataset": dataset.name, "devices": backend.device_count,
               "processes": backend.process_count,
               "checkpoint": str(save) if save else None}
    run = Run(config=config, backend=backend, state=result.state, summary=summary,
              dataset_name=dataset.name, dataset_sha256=sha256, dataset=dataset,
              dataset_samples=samples)
    if save is not None and backend.is_primary:
        try:  # the loop saved the final state before it was measured: add the results
            saver(save, summary)(result.state)
        except OSError as exc:  # the file still holds the final state
            raise PlotsNotWritten(f"training finished but its results were not added to "
                                  f"the checkpoint {save}, which holds the trained "
                                  f"network: {files.reason(exc)}", run) from None
    if plan.plots is not None and backend.is_primary:
        try:  # the run is over and saved: a failure here loses nothing
            summary["plots"] = [str(p) for p in run.save_plots(plan.plots)]
        except (MultinetError, OSError, MemoryError) as exc:
            detail = (files.reason(exc) if isinstance(exc, OSError)
                      and not isinstance(exc, MultinetError) else str(exc) or "out of memory")
            raise PlotsNotWritten(f"training finished but the plots were not written to "
                                  f"{plan.plots}: {detail}", run) from None
    return run
