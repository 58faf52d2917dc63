"""Looking at a trained network: accuracy per class, the confusion matrix, single images."""

from __future__ import annotations

import numpy as np

from multinet.data import CLASSES, Dataset, flatten
from multinet.initializers import to_backend
from multinet.registry import Backend
from multinet.train import make_predictor

#: Dark to bright, for drawing a 28x28 image in a terminal.
SHADES = " .:-=+*#%@"


def confusion_matrix(predicted: np.ndarray, true: np.ndarray, classes: int = CLASSES):
    """``matrix[t, p]``: how many images of class ``t`` were predicted as ``p``."""
    return np.bincount(true.astype(np.int64) * classes + predicted.astype(np.int64),
                       minlength=classes * classes).reshape(classes, classes)


def evaluate(params_host: dict, backend: Backend, dataset: Dataset, dtype: str) -> dict:
    """Test-set predictions on ``backend`` and everything computed from them."""
    backend.enable_dtype(dtype)
    params = to_backend(params_host, backend)
    images = backend.asarray(flatten(dataset.test_images))
    predicted = make_predictor(backend)(params, images)
    return {"backend": backend.name, **report(predicted, dataset)}


def report(predicted: np.ndarray, dataset: Dataset) -> dict:
    """What test-set predictions ``(n,)`` say: accuracy, per class and as a confusion
    matrix (rows: true class), with the predictions themselves."""
    true = dataset.test_labels
    matrix = confusion_matrix(predicted, true)
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    return {
        "dataset": dataset.name,
        "test_samples": int(len(true)),
        "test_accuracy": float(np.mean(predicted == true)),
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": matrix.tolist(),
        "predictions": predicted,
    }


def render(image: np.ndarray) -> str:
    """A 28x28 ``uint8`` image as text, two characters per pixel so it keeps its shape."""
    levels = (image.astype(np.int64) * len(SHADES)) // 256
    return "\n".join("".join(SHADES[v] * 2 for v in row) for row in levels)


def probabilities(params_host: dict, backend: Backend, images_uint8: np.ndarray, dtype: str):
    """Softmax probabilities ``(n, classes)`` for host ``uint8`` images (n, 28, 28)."""
    from multinet import network
    from multinet.data import scale_images

    backend.enable_dtype(dtype)
    params = to_backend(params_host, backend)
    x = scale_images(backend.asarray(flatten(images_uint8)), backend.dtype(dtype))
    logits = np.asarray(backend.to_numpy(network.forward(params, x)), dtype=np.float64)
    # Not in place: NumPy views of JAX arrays are read-only (and a float64 result is a view).
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exps / exps.sum(axis=1, keepdims=True)

