"""Predicting labels on the device, in chunks of bounded memory, for accuracies during
training and for every trained network (``multinet.evaluation``, ``Run.predict``)."""

from __future__ import annotations

import math

import numpy as np

from multinet import network
from multinet.data import scale_images
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
