"""Predicting labels on the device, in chunks of bounded memory, for accuracies during
training and for every trained network (``multinet.evaluation``, ``Run.predict``)."""

from __future__ import annotations

import functools
import math

import numpy as np

from multinet import layers as L
from multinet import network
from multinet.data import flatten, scale_images
from multinet.errors import OutputsNotFinite
from multinet.registry import Backend
from multinet.training.splits import DeviceSplit


@functools.lru_cache(maxsize=None)
def _predict_scaled(layers):
    """``predict(params, images)`` for the network of ``layers``: one function object per
    network, so a library that caches what it compiled by function (JAX) compiles each
    network's prediction once per process, however often a predictor is made."""
    def predict(params, images):
        return network.predict(params, scale_images(images, params["W1"].dtype), layers)

    return predict


#: Images per compiled prediction call (``make_predictor``) on a CPU: a 2,048 x 512
#: float32 hidden activation (4 MiB) stays in cache between the layers where one of
#: 10,000 images (20 MiB) does not: JAX predicts 10,000 images about a sixth faster in
#: such chunks on two CPU cores, NumPy as fast (measured in docs/performance.md).
CPU_PREDICT_CHUNK = 2048


#: ... and on a GPU, where every call costs a launch and the activations fit anyway.
GPU_PREDICT_CHUNK = 10000


def make_predictor(backend: Backend, chunk: int | None = None, *, layers=None):
    """``predict(params, images) -> host labels`` for device ``uint8`` images, compiled
    once and run ``chunk`` images at a time (bounded memory for the activations;
    default: ``CPU_PREDICT_CHUNK`` or ``GPU_PREDICT_CHUNK`` by ``backend.platform``).
    ``layers``: the network's ``Layer`` records (``TrainConfig.network_layers()``);
    None for the perceptron the parameters hold."""
    if chunk is None:
        chunk = CPU_PREDICT_CHUNK if backend.platform == "cpu" else GPU_PREDICT_CHUNK
    predict = backend.compile(_predict_scaled(layers))

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


def check_finite(params_host: dict, images_uint8: np.ndarray, dtype: str,
                 layers=None) -> None:
    """Raise ``OutputsNotFinite`` if the forward pass of any of the ``uint8`` images
    ``(n, 28, 28)`` or ``(n, 784)`` overflows ``dtype``: a checkpoint may hold any finite
    weights, and from inf or NaN logits the labels are arbitrary (NumPy's argmax says 0).
    ``layers`` as for ``make_predictor``. How it is decided, cheaply for ordinary
    networks: ``overflowing``."""
    bad = overflowing(params_host, images_uint8, dtype, layers)
    if bad:
        raise OutputsNotFinite(
            f"the network's weights are too large for {dtype}: its forward pass overflows "
            f"to inf or NaN on {bad} of {len(images_uint8)} images (largest weight "
            f"{largest_weight(params_host):.3g}), so its predictions would mean nothing")


def overflowing(params_host: dict, images_uint8: np.ndarray, dtype: str,
                layers=None) -> int:
    """How many of the ``uint8`` images' forward passes overflow ``dtype`` (to inf or NaN
    in any layer); 0 for every image when the weights' bound clears. ``layers`` as for
    ``make_predictor``.

    Weights that large are rare, so most networks are cleared without an image: with
    pixels in [0, 1], no output of any layer, nor any partial sum of one, exceeds in
    magnitude what the same network gives for an image of ones when every weight and
    bias is replaced by its magnitude. For dense layers that is ``bound_l = |W_l|^T
    bound_(l-1) + |b_l|`` (``bound_0 = 1``); a convolution is a dense layer over each
    window (zero padding only lowers it), ReLU leaves a bound as it is, a maximum or a
    mean of values is bounded by the largest of their bounds, and flattening moves
    bounds about. Below half the dtype's largest number (room for rounding) nothing
    overflows, whatever the picture. The bound is computed in ``dtype`` itself, whose
    rounding (relative, at most a layer's inputs times 6e-8 in float32) is far inside
    that factor of 2, and a bound past the range is inf, which fails: one image's
    forward pass, about 1 ms for the ``mlp`` network, where a float64 copy of float32
    weights cost 20 times that on a busy two-core machine. Otherwise the images are run
    on the host in ``dtype``, every layer checked: a NaN pre-activation becomes 0 in the
    next ReLU, so finite logits alone would not prove it.
    """
    layers = _network_layers(params_host, layers)
    params = {name: np.asarray(value).astype(dtype, copy=False)
              for name, value in params_host.items()}
    features = flatten(images_uint8[:1]).shape[1]
    limit = np.finfo(dtype).max / 2
    with np.errstate(over="ignore", invalid="ignore"):
        magnitudes = {name: np.abs(value) for name, value in params.items()}
        ones = np.ones((1, features), dtype=dtype)
        if all(out.max() < limit for out in _layer_outputs(magnitudes, ones, layers)):
            return 0
        flat = flatten(images_uint8)
        bad = np.zeros(len(flat), dtype=bool)
        for start in range(0, len(flat), CPU_PREDICT_CHUNK):
            a = flat[start:start + CPU_PREDICT_CHUNK].astype(dtype) / 255.0
            rows = slice(start, start + len(a))
            for out in _layer_outputs(params, a, layers):
                bad[rows] |= ~np.isfinite(out).reshape(len(a), -1).all(axis=1)
    return int(bad.sum())


def _network_layers(params_host: dict, layers):
    """``layers``, or where it is None the perceptron ``params_host`` holds."""
    if layers is not None:
        return tuple(layers)
    sizes = network.layer_sizes(params_host)
    return network.mlp_layers(sizes[1:-1], sizes[-1])


def _layer_outputs(params: dict, a, layers):
    """Each layer's output in turn, for host arrays: ``a`` through the forward function
    of every layer (``multinet.layers``), as ``network.forward`` runs them."""
    number = 0
    for layer in layers:
        if layer.has_params:
            number += 1
            weights = params[f"W{number}"], params[f"b{number}"]
            a = (L.dense_forward(a, *weights) if layer.kind == "dense" else
                 L.conv_forward(a, *weights, layer.padding))[0]
        elif layer.kind == "relu":
            a = L.relu_forward(a)[0]
        elif layer.kind in ("maxpool", "avgpool"):
            pool = L.maxpool_forward if layer.kind == "maxpool" else L.avgpool_forward
            a = pool(a, layer.size)[0]
        else:
            a = L.flatten_forward(a)[0]
        yield a


def largest_weight(params_host: dict) -> float:
    """The largest magnitude among the weights (``W1``, ``W2``...: matrices and
    convolution kernels)."""
    return max(float(np.abs(np.asarray(params_host[f"W{i}"])).max())
               for i in range(1, network.layer_count(params_host) + 1))
