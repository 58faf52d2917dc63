"""Predicting labels on the device, in chunks of bounded memory, for accuracies during
training and for every trained network (``multinet.evaluation``, ``Run.predict``)."""

from __future__ import annotations

import math

import numpy as np

from multinet import network
from multinet.data import flatten, scale_images
from multinet.errors import OutputsNotFinite
from multinet.registry import Backend
from multinet.training.splits import DeviceSplit


def _predict_scaled(params, images):
    return network.predict(params, scale_images(images, params["W1"].dtype))


#: Images per compiled prediction call (``make_predictor``) on a CPU: a 2,048 x 512
#: float32 hidden activation (4 MiB) stays in cache between the layers where one of
#: 10,000 images (20 MiB) does not: JAX predicts 10,000 images about a sixth faster in
#: such chunks on two CPU cores, NumPy as fast (measured in docs/performance.md).
CPU_PREDICT_CHUNK = 2048


#: ... and on a GPU, where every call costs a launch and the activations fit anyway.
GPU_PREDICT_CHUNK = 10000


def make_predictor(backend: Backend, chunk: int | None = None):
    """``predict(params, images) -> host labels`` for device ``uint8`` images, compiled
    once and run ``chunk`` images at a time (bounded memory for the activations;
    default: ``CPU_PREDICT_CHUNK`` or ``GPU_PREDICT_CHUNK`` by ``backend.platform``)."""
    if chunk is None:
        chunk = CPU_PREDICT_CHUNK if backend.platform == "cpu" else GPU_PREDICT_CHUNK
    predict = backend.compile(_predict_scaled)

    def predict_labels(params, images) -> np.ndarray:
        n = images.shape[0]
        parts = [np.asarray(backend.to_numpy(predict(params, images[i:min(i + chunk, n), ...])))
                 for i in range(0, n, chunk)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    return predict_labels


def accuracy_of(predict_labels, params, split: DeviceSplit) -> float:
    if len(split) == 0:
        return math.nan
    return float(np.mean(predict_labels(params, split.images) == split.host_labels))


def check_finite(params_host: dict, images_uint8: np.ndarray, dtype: str) -> None:
    """Raise ``OutputsNotFinite`` if the forward pass of any of the ``uint8`` images
    ``(n, 28, 28)`` or ``(n, 784)`` overflows ``dtype``: a checkpoint may hold any finite
    weights, and from inf or NaN logits the labels are arbitrary (NumPy's argmax says 0).
    How it is decided, cheaply for ordinary networks: ``overflowing``."""
    bad = overflowing(params_host, images_uint8, dtype)
    if bad:
        raise OutputsNotFinite(
            f"the network's weights are too large for {dtype}: its forward pass overflows "
            f"to inf or NaN on {bad} of {len(images_uint8)} images (largest weight "
            f"{largest_weight(params_host):.3g}), so its predictions would mean nothing")


def overflowing(params_host: dict, images_uint8: np.ndarray, dtype: str) -> int:
    """How many of the ``uint8`` images' forward passes overflow ``dtype`` (to inf or NaN
    in any layer); 0 for every image when the weights' bound clears.

    Weights that large are rare, so most networks are cleared without an image: with
    pixels in [0, 1], no pre-activation of layer ``l``, nor any partial sum of one, exceeds
    ``bound_l = |W_l|^T bound_(l-1) + |b_l|`` in magnitude (``bound_0 = 1``), and below
    half the dtype's largest number (room for rounding) nothing overflows, whatever the
    picture. The bound is computed in ``dtype`` itself, whose rounding (relative, at most
    a layer's inputs times 6e-8 in float32) is far inside that factor of 2, and a bound
    past the range is inf, which fails: about 1 ms for the ``mlp`` network, where a
    float64 copy of float32 weights cost 20 times that on a busy two-core machine.
    Otherwise the images are run on the host in ``dtype``, every layer checked: a NaN
    pre-activation becomes 0 in the next ReLU, so finite logits alone would not prove
    it.
    """
    weights = _layers(params_host)
    limit = np.finfo(dtype).max / 2
    bound = np.ones(weights[0][0].shape[0], dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for w, b in weights:
            w, b = w.astype(dtype, copy=False), b.astype(dtype, copy=False)
            bound = np.abs(w).T @ bound + np.abs(b)
            if not bound.max() < limit:
                break
        else:
            return 0
        flat = flatten(images_uint8)
        bad = np.zeros(len(flat), dtype=bool)
        for start in range(0, len(flat), CPU_PREDICT_CHUNK):
            a = flat[start:start + CPU_PREDICT_CHUNK].astype(dtype) / 255.0
            rows = slice(start, start + len(a))
            for w, b in weights:
                z = a @ w.astype(dtype) + b.astype(dtype)
                bad[rows] |= ~np.isfinite(z).all(axis=1)
                a = np.where(z > 0, z, 0)
    return int(bad.sum())


def largest_weight(params_host: dict) -> float:
    """The largest magnitude among the weight matrices (``W1``, ``W2``...)."""
    return max(float(np.abs(w).max()) for w, _ in _layers(params_host))


def _layers(params_host: dict) -> list:
    """``[(W1, b1), (W2, b2), ...]`` as NumPy arrays."""
    return [(np.asarray(params_host[f"W{i}"]), np.asarray(params_host[f"b{i}"]))
            for i in range(1, network.layer_count(params_host) + 1)]
