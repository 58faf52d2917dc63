"""The figures of a ``Run``: its training curves, its predictions, its confusion matrix,
the weights of its first layer, and the PNG files ``multinet plot`` writes.

``RunFigures`` is the part of ``multinet.api.run.Run`` that draws (``multinet.plots``
makes each figure); it reads only what a ``Run`` holds and computes
(``config``, ``backend``, ``history``, ``params``, ``probabilities``, ``evaluate``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from multinet import locks, plots
from multinet.api.arguments import check_paths, flat_images
from multinet.catalog import CLASSES, dataset_spec
from multinet.data import Dataset, check_flags
from multinet.errors import InvalidArgument, argument
from multinet.files import FIGURES, check_output_dir
from multinet.training.config import FEATURES

if TYPE_CHECKING:  # matplotlib is an optional extra; figures need it, annotations do not
    from matplotlib.figure import Figure


class RunFigures:
    """The figures of a ``Run`` (its methods that draw)."""

    def plot_curves(self, title: str | None = None) -> Figure:
        """The training loss (log scale) and train/dev accuracy against the epoch.

        Parameters
        ----------
        title : str, optional
            The figure's title; None: the preset, backend, dtype and network.

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
                f"{self.config.describe_network()}")

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
            None: the preset, backend, dtype and network.

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
        flat = flat_images(images, FEATURES)
        if len(flat) == 0:
            raise InvalidArgument("images holds no image to plot")
        classes = CLASSES
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

    def plot_weights(self, count: int = 64, title: str | None = None) -> Figure:
        """The weights of the first layer with weights, one small picture per unit: a
        convolution's filters, or a dense layer's units over the whole image.

        Parameters
        ----------
        count : int
            How many units (filters) to draw, the first ones.
        title : str, optional
            None: the layer, and the preset, backend and dtype.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        InvalidArgument
            For a ``count`` that is not an integer >= 1.
        MultinetError
            Without matplotlib.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(f"count must be an integer >= 1, got {count!r}")
        first = next(layer for layer in self.config.network_layers() if layer.has_params)
        weights = np.asarray(self.backend.to_numpy(self.params["W1"]))
        return plots.weights_figure(
            weights, count=count,
            title=(f"first layer: {first}\n{self.config.preset} preset on "
                   f"{self.backend.name}, {self.config.dtype}") if title is None else title)

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
