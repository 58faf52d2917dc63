"""Looking at a trained network: accuracy per class, the confusion matrix, probabilities."""

from __future__ import annotations

import numpy as np

from multinet import network
from multinet.catalog import CLASSES
from multinet.data import Dataset, flatten, scale_images
from multinet.initializers import to_backend
from multinet.registry import Backend
from multinet.training.prediction import check_finite, make_predictor


def confusion_matrix(predicted: np.ndarray, true: np.ndarray, classes: int = CLASSES):
    """``matrix[t, p]``: how many images of class ``t`` were predicted as ``p``."""
    return np.bincount(true.astype(np.int64) * classes + predicted.astype(np.int64),
                       minlength=classes * classes).reshape(classes, classes)


def evaluate(params_host: dict, backend: Backend, dataset: Dataset, dtype: str,
             layers=None) -> dict:
    """Test-set predictions on ``backend`` and everything computed from them. ``layers``:
    the network's ``Layer`` records (``TrainConfig.network_layers()``; None: the
    perceptron ``params_host`` holds). Raises ``OutputsNotFinite`` for weights too large
    for ``dtype`` (``check_finite``)."""
    check_finite(params_host, dataset.test_images, dtype, layers)
    backend.enable_dtype(dtype)
    params = to_backend(params_host, backend)
    images = backend.asarray(flatten(dataset.test_images))
    predicted = make_predictor(backend, layers=layers)(params, images)
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


def probabilities(params_host: dict, backend: Backend, images_uint8: np.ndarray, dtype: str,
                  layers=None):
    """Softmax probabilities ``(n, classes)`` for host ``uint8`` images (n, 28, 28);
    ``layers`` as for ``evaluate``. Raises ``OutputsNotFinite`` for weights too large for
    ``dtype`` (``check_finite``)."""
    check_finite(params_host, images_uint8, dtype, layers)
    backend.enable_dtype(dtype)
    params = to_backend(params_host, backend)
    x = scale_images(backend.asarray(flatten(images_uint8)), backend.dtype(dtype))
    return softmax(backend.to_numpy(network.forward(params, x, layers)))


def softmax(logits) -> np.ndarray:
    """Probabilities ``(n, classes)`` in float64 from host logits ``(n, classes)``: of
    multinet's network on a backend, or of an exported model in onnxruntime."""
    logits = np.asarray(logits, dtype=np.float64)
    # Not in place: NumPy views of JAX arrays are read-only (and a float64 result is a view).
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exps / exps.sum(axis=1, keepdims=True)

