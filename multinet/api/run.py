"""``Run``: a trained network with what it was trained with, from ``fit`` or ``load``.

Everything a user does with a trained network goes through it, from Python and from the
command line alike (``multinet evaluate``, ``predict`` and ``plot`` load a ``Run``):
predictions, probabilities, the test-set report, the checkpoint, the figures (those are
``multinet.api.figures``). Arrays go in as ``uint8`` pixel values and come back as NumPy
arrays on the host, whatever the backend. Every computation runs the network of the
run's configuration (``TrainConfig.network_layers()``): a perceptron or any stack of
layers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from multinet import checkpoint, locks, pretrained
from multinet.api.arguments import as_dataset, check_devices, check_paths, flat_images
from multinet.api.figures import RunFigures
from multinet.data import Dataset, check_flags
from multinet.errors import InvalidArgument, argument
from multinet.evaluation import evaluate, probabilities
from multinet.files import check_output
from multinet.initializers import to_host
from multinet.registry import Backend, resolve_backend
from multinet.training.config import FEATURES, TrainConfig
from multinet.training.loop import network_fields
from multinet.training.prediction import check_finite, make_predictor
from multinet.training.state import TrainState


@dataclass(frozen=True, repr=False, eq=False)
class Run(RunFigures):
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
        hyperparameter, ``iterations``, ``network`` (``TrainConfig.describe_network``),
        ``sizes`` (a perceptron's widths, else None), ``train_accuracy`` / ``dev_accuracy``
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
        The parameters on the backend, ``W1``, ``b1``, ... for each dense or convolutional
        layer in order (``multinet.layers.param_shapes``): a perceptron's ``W1`` is
        ``(784, hidden)`` and ``b1`` ``(hidden,)``.
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
        # Named by the field of the configuration that describes the network.
        network = self.config.describe_network()
        network = f"sizes={network}" if self.config.hidden else f"layers={network!r}"
        return (f"Run(preset={self.config.preset!r}, backend={self.backend.name!r}, "
                f"dtype={self.config.dtype!r}, {network}, iterations={self.state.step}"
                + (f", test_accuracy={accuracy:.4f})" if accuracy is not None else ")"))

    @cached_property
    def _layers(self) -> tuple:
        """The network's ``Layer`` records, output layer included."""
        return self.config.network_layers()

    @cached_property
    def _host_params(self) -> dict:
        return to_host(self.params, self.backend)

    @cached_property
    def _predictor(self):
        self.backend.enable_dtype(self.config.dtype)
        return make_predictor(self.backend, layers=self._layers)

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
        flat = flat_images(images, FEATURES)
        check_finite(self._host_params, flat, self.config.dtype, self._layers)
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
        return probabilities(self._host_params, self.backend, flat_images(images, FEATURES),
                             self.config.dtype, self._layers)

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
                        self.config.dtype, self._layers)

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
        "iterations": state.step, **network_fields(loaded.config), **loaded.results,
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
