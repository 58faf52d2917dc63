"""Figures (matplotlib, the optional extra ``plot``): training curves, test images with
their predictions, the confusion matrix, the weights of the first layer.

Each ``*_figure`` function returns a ``matplotlib.figure.Figure`` made without pyplot:
nothing global is touched (no backend is chosen, no window opens, nothing accumulates
in pyplot's list of open figures), so the same function serves a script that saves the
figure and a notebook that shows it. In a Jupyter kernel the figure is made by pyplot
and closed at once, which loads the kernel's backend (and with it the hook that shows
figures inline) without leaving the figure open: a returned figure shows once.
``training_curves``, ``prediction_grid`` and ``confusion`` write one PNG each (the CLI's
``--plots`` and ``plot``).
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np

from multinet.catalog import dataset_spec
from multinet.errors import MultinetError
from multinet.files import write_atomic

#: Dots per inch of the PNG files written.
DPI = 100


def require_matplotlib() -> None:
    """Raise ``MultinetError`` saying which extra to install unless matplotlib imports:
    called before any work that ends in a figure, so none is wasted."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise MultinetError("plots need matplotlib: pip install 'multinet[plot]'") from None


def _figure(**kwargs):
    """A new ``Figure`` (``kwargs`` as for it), or ``MultinetError`` without matplotlib."""
    require_matplotlib()
    from matplotlib.figure import Figure

    if "ipykernel" not in sys.modules:
        return Figure(**kwargs)
    # In a kernel, pyplot's first figure loads the kernel's backend, which registers how
    # figures display; closing it at once leaves it to show once, as the value returned.
    from matplotlib import pyplot

    figure = pyplot.figure(**kwargs)
    pyplot.close(figure)
    return figure


def _save(fig, path) -> Path:
    """Rendered whole in memory, then written atomically (``multinet.files``): a full
    disk leaves the previous picture, never a part of one."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format=path.suffix[1:].lower() or "png")
    return write_atomic(path, buffer.getvalue())


def curves_figure(history: list[dict], title: str = "", xlabel: str = "epoch"):
    """The training loss (log scale) and the train and dev accuracy against the epoch.

    ``history``: the records of ``multinet.fit(...).history`` (keys ``epoch``, ``loss``,
    ``train_accuracy``, ``dev_accuracy``); ``xlabel`` names the epoch (a full-batch
    epoch is one iteration). Raises ``MultinetError`` when it is empty."""
    if not history:
        raise MultinetError("no training history to plot (was the run 0 epochs long?)")
    fig = _figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    left.plot(epochs, [r["loss"] for r in history], marker=".")
    left.set(xlabel=xlabel, ylabel="training loss (cross-entropy)", yscale="log",
             title="loss")
    right.plot(epochs, [r["train_accuracy"] for r in history], marker=".", label="train")
    right.plot(epochs, [r["dev_accuracy"] for r in history], marker=".", label="dev")
    right.set(xlabel=xlabel, ylabel="accuracy", title="accuracy")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def predictions_figure(images: np.ndarray, predicted: np.ndarray, true=None, *,
                       probabilities=None, class_names=None, columns: int | None = None,
                       numbers=None, title: str = ""):
    """Each image with its predicted class, in the order given.

    ``images``: ``(n, 28, 28)`` uint8; ``predicted``: ``(n,)`` labels; ``true``, optional:
    ``(n,)`` labels, a wrong prediction is then drawn in red with the true class beside
    it; ``probabilities``, optional: ``(n, classes)``, the predicted class's probability
    is shown; ``numbers``, optional: what to call each image (its index in the test set).
    """
    names = list(class_names or [str(i) for i in range(10)])
    n = len(images)
    if n == 0:
        raise MultinetError("no images to plot")
    columns = columns or min(n, 8)
    rows = -(-n // columns)
    fig = _figure(figsize=(1.5 * columns, 1.75 * rows + (0.4 if title else 0)),
                  layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)
        p = int(predicted[k])
        label = names[p]
        if probabilities is not None:
            label += f" {float(probabilities[k][p]):.0%}"
        wrong = true is not None and int(true[k]) != p
        if wrong:
            label += f" (true {names[int(true[k])]})"
        if numbers is not None:
            label = f"#{numbers[k]}: {label}"
        ax.set_title(label, fontsize=8, color="red" if wrong else "black")
    if title:
        fig.suptitle(title)
    return fig


def confusion_figure(matrix: np.ndarray, class_names=None):
    """The confusion matrix ``(classes, classes)``, rows the true class, columns the
    predicted one, each cell's count written in it, colour on a log scale."""
    matrix = np.asarray(matrix)
    names = list(class_names or [str(i) for i in range(len(matrix))])
    fig = _figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    for t in range(len(matrix)):
        for p in range(len(matrix)):
            ax.text(p, t, str(matrix[t, p]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[t, p] > matrix.max() / 3 else "black")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted",
           ylabel="true", title="confusion matrix (test set)")
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    return fig


def weights_figure(weights: np.ndarray, *, count: int = 64, title: str = ""):
    """The weights of a network's first layer with weights, one small picture per unit:
    a convolution's filters (each ``k x k`` kernel) or a dense layer's units (each its
    weights over the whole image), red positive and blue negative on one scale shared by
    all, so their strengths compare.

    ``weights``: that layer's ``W1``, ``(k, k, 1, filters)`` or ``(pixels, units)``; what
    each unit sees must be a square of one channel (as the first layer of any network on
    28 x 28 images sees it). ``count``: the first so many units are drawn. Raises
    ``MultinetError`` for weights that are not such pictures."""
    weights = np.asarray(weights, dtype=np.float64)
    units = weights.shape[-1]
    rows = weights.size // units if units else 0
    side = math.isqrt(rows)
    if weights.ndim not in (2, 4) or side * side != rows or weights.ndim == 4 and (
            weights.shape[2] != 1):
        raise MultinetError(f"weights of shape {weights.shape} are not square pictures of "
                            "one channel per unit")
    shown = min(units, count)
    pictures = weights.reshape(side, side, units)[:, :, :shown]
    scale = float(np.abs(pictures).max()) or 1.0
    columns = min(shown, 8)
    grid = -(-shown // columns)
    fig = _figure(figsize=(max(1.2 * columns + 1, 4.5), 1.2 * grid + (0.8 if title else 0.2)),
                  layout="constrained")
    axes = np.atleast_1d(fig.subplots(grid, columns, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k < shown:
            image = ax.imshow(pictures[:, :, k], cmap="RdBu_r", vmin=-scale, vmax=scale)
            ax.set_title(f"{k}", fontsize=7)
    fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label="weight")
    if title:
        fig.suptitle(title)
    return fig


def training_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """``curves_figure`` as a PNG at ``path``."""
    return _save(curves_figure(history, title), path)


def prediction_grid(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, path: Path,
                    class_names=None, count: int = 36) -> Path:
    """Test images with their predictions: the first ones in order, then the first
    mistakes (in red, with the true label), so both kinds are always on the page."""
    mistakes = np.flatnonzero(predicted != true)[: count // 3]
    shown = np.concatenate([np.setdiff1d(np.arange(min(count, len(images))), mistakes)
                            [: count - len(mistakes)], mistakes]).astype(int)
    fig = predictions_figure(
        images[shown], predicted[shown], true[shown], class_names=class_names,
        columns=int(np.ceil(np.sqrt(count))), numbers=shown,
        title=f"test predictions ({int(np.sum(predicted != true))} mistakes in "
              f"{len(true)}; mistakes in red)")
    return _save(fig, path)


def confusion(matrix: np.ndarray, path: Path, class_names=None) -> Path:
    """``confusion_figure`` as a PNG at ``path``."""
    return _save(confusion_figure(matrix, class_names), path)


def write_all(out_dir, history, dataset, evaluation, title="") -> list[Path]:
    """The three figures into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(dataset_spec(dataset.name).classes)
    return [
        training_curves(history, out / "training_curves.png", title),
        prediction_grid(dataset.test_images, dataset.test_labels, evaluation["predictions"],
                        out / "predictions.png", names),
        confusion(np.asarray(evaluation["confusion_matrix"]), out / "confusion_matrix.png",
                  names),
    ]
