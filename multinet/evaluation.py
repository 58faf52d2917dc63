"""Looking at a trained network: accuracy per class, the confusion matrix, probabilities."""

from __future__ import annotations

import numpy as np

from multinet import network
from multinet.catalog import CLASSES
from multinet.data import Dataset, flatten, scale_images
from multinet.errors import MultinetError
from multinet.initializers import to_backend
from multinet.registry import Backend
from multinet.training.prediction import CPU_PREDICT_CHUNK, make_predictor


class OutputsNotFinite(MultinetError, ArithmeticError):
    """The forward pass overflows the parameters' dtype: the network's outputs are inf or
    NaN, so whatever it would predict means nothing."""


def check_finite(params_host: dict, images_uint8: np.ndarray, dtype: str) -> None:
    """Raise ``OutputsNotFinite`` if the forward pass of any of the ``uint8`` images
    ``(n, 28, 28)`` or ``(n, 784)`` overflows ``dtype``: a checkpoint may hold any finite
    weights, and from inf or NaN logits the labels are arbitrary (NumPy's argmax says 0).

    Weights that large are rare, so most networks are cleared without an image: with
    pixels in [0, 1], no pre-activation of layer ``l``, nor any partial sum of one, exceeds
    ``bound_l = |W_l|^T bound_(l-1) + |b_l|`` (``bound_0 = 1``) in magnitude, and below
    half the dtype's largest number (room for rounding) nothing overflows. Otherwise the
    images are run on the host in ``dtype``, every layer checked: a NaN pre-activation
    becomes 0 in the next ReLU, so finite logits alone would not prove it.
    """
    count = network.layer_count(params_host)
    weights = [(np.asarray(params_host[f"W{i}"]), np.asarray(params_host[f"b{i}"]))
               for i in range(1, count + 1)]
    limit = float(np.finfo(dtype).max) / 2
    bound = np.ones(weights[0][0].shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for w, b in weights:
            bound = np.abs(w.astype(np.float64)).T @ bound + np.abs(b.astype(np.float64))
            if not bound.max() < limit:
                break
        else:
            return
        flat = flatten(images_uint8)
        bad = np.zeros(len(flat), dtype=bool)
        for start in range(0, len(flat), CPU_PREDICT_CHUNK):
            a = flat[start:start + CPU_PREDICT_CHUNK].astype(dtype) / 255.0
            rows = slice(start, start + len(a))
            for w, b in weights:
                z = a @ w.astype(dtype) + b.astype(dtype)
                bad[rows] |= ~np.isfinite(z).all(axis=1)
                a = np.where(z > 0, z, 0)
    if bad.any():
        largest = max(float(np.abs(w).max()) for w, _ in weights)
        raise OutputsNotFinite(
            f"the network's weights are too large for {dtype}: its forward pass overflows "
            f"to inf or NaN on {int(bad.sum())} of {len(bad)} images (largest weight "
            f"{largest:.3g}), so its predictions would mean nothing")


def confusion_matrix(predicted: np.ndarray, true: np.ndarray, classes: int = CLASSES):
    """``matrix[t, p]``: how many images of class ``t`` were predicted as ``p``."""
    return np.bincount(true.astype(np.int64) * classes + predicted.astype(np.int64),
                       minlength=classes * classes).reshape(classes, classes)


def evaluate(params_host: dict, backend: Backend, dataset: Dataset, dtype: str) -> dict:
    """Test-set predictions on ``backend`` and everything computed from them. Raises
    ``OutputsNotFinite`` for weights too large for ``dtype`` (``check_finite``)."""
    check_finite(params_host, dataset.test_images, dtype)
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


def probabilities(params_host: dict, backend: Backend, images_uint8: np.ndarray, dtype: str):
    """Softmax probabilities ``(n, classes)`` for host ``uint8`` images (n, 28, 28).
    Raises ``OutputsNotFinite`` for weights too large for ``dtype`` (``check_finite``)."""
    check_finite(params_host, images_uint8, dtype)
    backend.enable_dtype(dtype)
    params = to_backend(params_host, backend)
    x = scale_images(backend.asarray(flatten(images_uint8)), backend.dtype(dtype))
    logits = np.asarray(backend.to_numpy(network.forward(params, x)), dtype=np.float64)
    # Not in place: NumPy views of JAX arrays are read-only (and a float64 result is a view).
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exps / exps.sum(axis=1, keepdims=True)

