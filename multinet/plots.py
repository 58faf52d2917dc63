"""Figures (matplotlib, the optional extra ``plot``): training curves, a grid of test
images with predictions, the confusion matrix. Each function writes one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multinet.errors import MultinetError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MultinetError("plots need matplotlib: pip install 'multinet[plot]'") from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: list[dict], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    if not history:
        raise MultinetError("no training history to plot (was the run 0 epochs long?)")
    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["loss"] for r in history], marker=".")
    left.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log",
             title="loss")
    right.plot(epochs, [r["train_accuracy"] for r in history], marker=".", label="train")
    right.plot(epochs, [r["dev_accuracy"] for r in history], marker=".", label="dev")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def prediction_grid(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, path: Path,
                    class_names=None, count: int = 36) -> Path:
    """Test images with their predictions: the first ones in order, then the first
    mistakes (in red, with the true label), so both kinds are always on the page."""
    plt = _pyplot()
    names = class_names or [str(i) for i in range(10)]
    mistakes = np.flatnonzero(predicted != true)[: count // 3]
    shown = np.concatenate([np.setdiff1d(np.arange(min(count, len(images))), mistakes)
                            [: count - len(mistakes)], mistakes]).astype(int)
    side = int(np.ceil(np.sqrt(count)))
    fig, axes = plt.subplots(side, side, figsize=(1.6 * side, 1.8 * side))
    for ax, i in zip(axes.flat, list(shown) + [None] * (side * side - len(shown))):
        ax.axis("off")
        if i is None:
            continue
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        right = predicted[i] == true[i]
        label = names[predicted[i]] if right else f"{names[predicted[i]]} (true {names[true[i]]})"
        ax.set_title(f"#{i}: {label}", fontsize=7, color="black" if right else "red")
    fig.suptitle(f"test predictions ({int(np.sum(predicted != true))} mistakes in "
                 f"{len(true)}; mistakes in red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion(matrix: np.ndarray, path: Path, class_names=None) -> Path:
    plt = _pyplot()
    names = class_names or [str(i) for i in range(len(matrix))]
    fig, ax = plt.subplots(figsize=(7, 6))
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(out_dir, history, dataset, evaluation, title="") -> list[Path]:
    """The three figures into ``out_dir``."""
    from multinet.data import dataset_spec

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
