"""``Run``: a trained network with what it was trained with, from ``fit`` or ``load``.

Everything a user does with a trained network goes through it, from Python and from the
command line alike (``multinet evaluate``, ``predict`` and ``plot`` load a ``Run``):
predictions, probabilities, the test-set report, the checkpoint, the figures. Arrays go
in as ``uint8`` pixel values and come back as NumPy arrays on the host, whatever the
backend.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from multinet import checkpoint, locks, plots, pretrained
from multinet.api.arguments import as_dataset, check_devices, check_paths, flat_images
from multinet.catalog import dataset_spec
from multinet.data import Dataset, check_flags
from multinet.errors import InvalidArgument, argument
from multinet.evaluation import evaluate, probabilities
from multinet.files import FIGURES, check_output, check_output_dir
from multinet.initializers import to_host
from multinet.network import layer_sizes
from multinet.registry import Backend, resolve_backend
from multinet.training.config import TrainConfig
from multinet.training.prediction import check_finite, make_predictor
from multinet.training.state import TrainState

if TYPE_CHECKING:  # matplotlib is an optional extra; figures need it, annotations do not
    from matplotlib.figure import Figure


@dataclass(frozen=True, repr=False, eq=False)
class Run:
    """A trained network with what it was trained with, from ``fit`` or ``load``.

    Attributes
    ----------
    config : TrainConfig
        The preset and every hyperparameter.
    backend : Backend
        Where the parameters live and every method computes.
    state : TrainState
        Parameters, optimizer state, counters, history: what a checkpoint holds besides
        the configuration.
    summary : dict
        What ``multinet train --json`` prints: ``backend``, ``device``, every
        hyperparameter, ``iterations``, ``sizes``, ``train_accuracy`` / ``dev_accuracy``
        / ``test_accuracy`` (fractions 0-1), ``final_loss``, ``seconds`` of training,
        ``samples_per_second``, ``dataset``, ``checkpoint``; after ``load``, the results
        the checkpoint recorded when training ended (``evaluate()`` measures them anew).
    dataset_name : str
        The dataset it was trained on.
    dataset_sha256 : dict of str to str
        What it was trained and tested on, by role (``multinet.data.content_sha256s``,
        the files' own checksums for files read unchanged); checked on resume.
    dataset : Dataset or None
        The data it was trained on (after ``fit``); None after ``load``, when the methods
        that need it load ``dataset_name``.
    dataset_samples : dict or None
        How many ``train`` and ``test`` images it saw (None: not recorded).
    params : dict of str to array
        The parameters on the backend: ``W1`` ``(784, hidden)``, ``b1`` ``(hidden,)``, ...
    history : list of dict
        One record per log point: ``epoch``, ``step``, ``lr``, ``loss``,
        ``train_accuracy``, ``dev_accuracy``, ``seconds``.
    """

    config: TrainConfig
    backend: Backend
    state: TrainState
    summary: dict
    dataset_name: str
    dataset_sha256: dict
    dataset: Dataset | None = None
    dataset_samples: dict | None = None

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
        return tuple(int(s) for s in layer_sizes(self.params))

    @cached_property
    def _host_params(self) -> dict:
        return to_host(self.params, self.backend)

    @cached_property
    def _predictor(self):
        self.backend.enable_dtype(self.config.dtype)
        return make_predictor(self.backend)

    def predict(self, images) -> np.ndarray:
        """Predicted labels, computed on the run's backend in chunks.

        Parameters
        ----------
        images : array_like of uint8, shape (n, 28, 28) or (n, 784)
            Pixel values 0-255: a NumPy array, a list of images, or a device array.

        Returns
        -------
        numpy.ndarray of int64, shape (n,)
            Classes 0-9.

        Raises
        ------
        InvalidArgument
            For another dtype or shape.
        multinet.errors.OutputsNotFinite
            For weights too large for the dtype (the forward pass overflows).
        """
        flat = flat_images(images, self._sizes[0])
        check_finite(self._host_params, flat, self.config.dtype)
        labels = self._predictor(self.params, self.backend.asarray(flat))
        return np.asarray(labels, dtype=np.int64)

    def probabilities(self, images) -> np.ndarray:
        """Softmax probabilities of every class; the logits come from the backend.

        Parameters
        ----------
        images : array_like of uint8, shape (n, 28, 28) or (n, 784)
            Pixel values 0-255.

        Returns
        -------
        numpy.ndarray of float64, shape (n, 10)
            Rows sum to 1.

        Raises
        ------
        InvalidArgument
            For another dtype or shape.
        multinet.errors.OutputsNotFinite
            For weights too large for the dtype.
        """
        return probabilities(self._host_params, self.backend, flat_images(images, self._sizes[0]),
                             self.config.dtype)

    def evaluate(self, dataset: Dataset | str | None = None) -> dict:
        """Test-set accuracy, per class, and the confusion matrix, on this run's backend.

        Parameters
        ----------
        dataset : Dataset, str or None
            A ``Dataset`` or a dataset's name; None: the one it was trained on (loaded by
            name for a run from ``load``).

        Returns
        -------
        dict
            ``test_accuracy`` (a fraction), ``test_samples``, ``per_class_accuracy`` (10
            fractions), ``confusion_matrix`` (10 x 10 lists of counts,
            ``[true][predicted]``), ``predictions`` (``(n,)`` NumPy labels), ``backend``
            and ``dataset``.

        Raises
        ------
        multinet.errors.OutputsNotFinite
            When the weights are too large for the dtype (the forward pass overflows).
        DatasetError
            When the dataset cannot be loaded.
        """
        return evaluate(self._host_params, self.backend, self._data(dataset),
                        self.config.dtype)

    def _data(self, dataset) -> Dataset:
        if dataset is not None:
            return as_dataset(dataset)
        return self.dataset if self.dataset is not None else as_dataset(self.dataset_name)

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the run as a checkpoint (safetensors, atomically) that ``multinet.load``,
        ``fit(resume=...)`` and every ``multinet`` command read, on any backend. In a
        multi-process run only process 0 writes.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (its folder is created).
        force : bool
            Replace an existing file there that is not a checkpoint.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        InvalidArgument
            For a ``path`` that is not a file name, or a ``force`` that is not a bool.
        multinet.checkpoint.CheckpointError
            For a state that is not finite.
        multinet.files.OutputError
            When the file cannot be written, is a special file (a named pipe, a device),
            or (without ``force``) is an existing file that is not a checkpoint (it
            would be lost).
        multinet.locks.OutputBusy
            Another multinet run is writing ``path``.
        """
        check_paths({"path": path}, optional=False)
        check_flags(force=force)
        if not self.backend.is_primary:
            return Path(path)
        check_output(path, argument("path"), "checkpoint", force=force)
        with locks.hold({argument("path"): path}):
            return checkpoint.save(path, self.config, self.state, backend=self.backend,
                                   dataset_name=self.dataset_name,
                                   dataset_sha256=self.dataset_sha256,
                                   dataset_samples=self.dataset_samples,
                                   summary=self.summary)

    def plot_curves(self, title: str | None = None) -> Figure:
        """The training loss (log scale) and train/dev accuracy against the epoch.

        Parameters
        ----------
        title : str, optional
            The figure's title; None: the preset, backend, dtype and sizes.

        Returns
        -------
        matplotlib.figure.Figure
            Shown inline in Jupyter; ``.savefig(path)`` elsewhere.

        Raises
        ------
        MultinetError
            Without matplotlib, or without history.
        """
        return plots.curves_figure(
            self.history, self._title() if title is None else title,
            xlabel="iteration (full batch)" if self.config.batch_size == 0 else "epoch")

    def _title(self) -> str:
        return (f"{self.config.preset} preset on {self.backend.name}, {self.config.dtype}, "
                f"{'-'.join(map(str, self._sizes))}")

    def plot_predictions(self, images=None, labels=None, *, count: int = 8,
                         columns: int | None = None, title: str | None = None) -> Figure:
        """Images with the predicted class and its probability.

        Parameters
        ----------
        images : array_like of uint8, shape (n, 28, 28) or (n, 784), optional
            None: the first ``count`` test images of the run's dataset, with their labels.
        labels : array_like of int, shape (n,), optional
            The true classes 0-9: a wrong prediction is drawn in red with the true class.
        count : int
            How many test images, when ``images`` is None.
        columns : int, optional
            Images per row; None: as many as fit a square-ish grid.
        title : str, optional
            None: the preset, backend, dtype and sizes.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        InvalidArgument
            For no images, a bad ``count``, or labels of another shape or range.
        MultinetError
            Without matplotlib.
        """
        if images is None:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidArgument(f"count must be an integer >= 1, got {count!r}")
            test = self._data(None)
            images, labels = test.test_images[:count], test.test_labels[:count]
        flat = flat_images(images, self._sizes[0])
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
        probs = self.probabilities(flat)
        return plots.predictions_figure(
            flat.reshape(len(flat), side, side), probs.argmax(axis=1), labels,
            probabilities=probs, columns=columns,
            class_names=dataset_spec(self.dataset_name).classes,
            title=self._title() if title is None else title)

    def plot_confusion(self, dataset: Dataset | str | None = None) -> Figure:
        """The test set's confusion matrix (``evaluate(dataset)``) as a figure.

        Parameters
        ----------
        dataset : Dataset, str or None
            As for ``evaluate``.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        MultinetError
            Without matplotlib; as ``evaluate`` for weights too large for the dtype or a
            dataset that cannot be loaded.
        """
        result = self.evaluate(dataset)
        return plots.confusion_figure(np.asarray(result["confusion_matrix"]),
                                      dataset_spec(result["dataset"]).classes)

    def save_plots(self, folder: str | os.PathLike, dataset: Dataset | str | None = None,
                   title: str | None = None, *, force: bool = False) -> list[Path]:
        """The training curves, a grid of test predictions (mistakes in red) and the
        confusion matrix as PNG files, as ``multinet train --plots`` and ``multinet
        plot`` write them.

        Parameters
        ----------
        folder : str or os.PathLike
            Where to write ``training_curves.png``, ``predictions.png`` and
            ``confusion_matrix.png`` (created if need be).
        dataset : Dataset, str or None
            As for ``evaluate``.
        title : str, optional
            The curves' title; None: the preset and backend.
        force : bool
            Replace files of those names that are not PNG pictures.

        Returns
        -------
        list of pathlib.Path
            The files written.

        Raises
        ------
        InvalidArgument
            For a ``folder`` that is not a path, or a ``force`` that is not a bool.
        multinet.files.OutputError
            Before any work, when ``folder`` is a file or cannot be written at all, or
            (without ``force``) holds a file of those names that is not a PNG picture.
        multinet.locks.OutputBusy
            Another multinet run is writing into ``folder``.
        OSError
            When a file cannot be written.
        MultinetError
            Without matplotlib.
        """
        check_paths({"folder": folder}, optional=False)
        check_flags(force=force)
        check_output_dir(folder, argument("folder"), figures=FIGURES, force=force)
        with locks.hold({argument("folder"): folder}):
            dataset = self._data(dataset)
            return plots.write_all(folder, self.history, dataset, self.evaluate(dataset),
                                   title=f"{self.config.preset} preset on "
                                   f"{self.backend.name}" if title is None else title)


def load(path: str | os.PathLike | None = None, backend: Backend | str | None = None, *,
         devices: int | str | None = None) -> Run:
    """A run from a checkpoint written by ``Run.save`` or ``multinet train --save``; with
    no path, the pretrained network shipped with multinet.

    Parameters
    ----------
    path : str, os.PathLike or None
        The checkpoint file. None: the pretrained network in the package, a 784-256-10
        MLP trained on MNIST (``multinet.pretrained``, docs/pretrained.md), its bytes'
        SHA-256 checked first.
    backend : Backend, str or None
        Where to place it: any backend (checkpoints move between them); None:
        ``$MULTINET_BACKEND``, else numpy.
    devices : int, "all" or None
        Split over that many devices (JAX), as for ``fit``.

    Returns
    -------
    Run
        Its ``summary`` holds what the checkpoint records: configuration, steps, time,
        last loss, and the accuracies measured when training ended, if it ended.

    Raises
    ------
    multinet.checkpoint.CheckpointError
        For a missing, unreadable or invalid file (naming what is wrong).
    multinet.pretrained.PretrainedError
        With no path, for pretrained weights that are missing or altered.
    InvalidArgument
        For a ``path`` that is not a file name, or ``devices`` that are no count.
    UnknownBackend, BackendUnavailable
        For a backend that is not known, or cannot run here.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InvalidArgument(f"path must be a checkpoint's file name (a str or a "
                              f"pathlib.Path) or None, got {type(path).__name__}")
    check_devices(devices)
    if path is None:
        path = pretrained.path()
    loaded = checkpoint.load(path)
    chosen = resolve_backend(backend, devices)
    state = loaded.state_on(chosen)
    summary = _Summary({
        "backend": chosen.name, "device": str(chosen.device), **loaded.config.to_dict(),
        "iterations": state.step, "sizes": list(layer_sizes(loaded.params)), **loaded.results,
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "seconds": state.seconds, "dataset": loaded.dataset,
        "devices": chosen.device_count, "processes": chosen.process_count,
        "checkpoint": str(path),
    })
    record = loaded.metadata["dataset"]
    return Run(config=loaded.config, backend=chosen, state=state, summary=summary,
               dataset_name=loaded.dataset, dataset_sha256=dict(record["content_sha256"]),
               dataset_samples=record.get("samples"))


class _Summary(dict):
    """A loaded run's summary: a result the checkpoint lacks is a ``KeyError`` saying how
    to measure it."""

    def __missing__(self, key):
        if key in checkpoint.RESULTS:
            raise KeyError(f"{key!r}: the checkpoint records no results (it was written "
                           f"during training, or by an older multinet); run.evaluate() "
                           f"measures the test accuracy") from None
        raise KeyError(key)
