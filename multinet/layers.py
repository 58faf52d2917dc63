"""The layers of a network: what each one is, its shapes, and its forward and backward
passes as named pairs of small pure functions over arrays.

A network is a tuple of ``Layer`` records (``parse_layers`` reads them from text such
as ``"conv:6:5x5:same"``). Six kinds, each a pair ``<kind>_forward`` /
``<kind>_backward`` below, written against the Python array API standard alone (the
namespace comes from the arrays; this module imports no array library):

* ``dense``: ``a @ W + b``, ``W`` ``(fan_in, units)``, ``b`` ``(units,)``;
* ``conv``: 2-D cross-correlation, stride 1, ``valid`` or ``same`` zero padding, as an
  im2col matrix product (Chellapilla, Puri and Simard 2006, "High Performance
  Convolutional Neural Networks for Document Processing"): ``W`` ``(k, k, C_in, C_out)``
  (HWIO), ``b`` ``(C_out,)``;
* ``maxpool`` and ``avgpool``: non-overlapping ``s x s`` windows (stride ``s``); rows or
  columns left over are dropped, as in LeCun et al. 1998 and PyTorch's default;
* ``flatten``: ``(batch, h, w, c)`` to ``(batch, h * w * c)``, row-major;
* ``relu``: ``max(z, 0)``.

Images are channels-last, ``(batch, height, width, channels)`` (NHWC), so that the im2col
patches are a reshape away from a matrix product with no transposes. A spatial layer
(``conv`` or a pool) given flat rows reads them as square single-channel-or-more images
in row-major ``(h, w, c)`` order: MNIST's 784 pixels are 28 x 28 x 1.

The tie rule of max-pooling: the gradient of a window goes to its **first** maximum in
row-major order (top row first, left to right), and to no other. ReLU's zeros make ties
common (37% of the 2 x 2 windows of a trained MNIST network), so the rule is part of the
network's definition; ``argmax``'s guarantee in the standard (the first occurrence of the
maximum) is what picks it on every library.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from array_api_compat import array_namespace, device

KINDS = ("dense", "conv", "maxpool", "avgpool", "flatten", "relu")
PADDINGS = ("valid", "same")
#: The kinds that read images ``(batch, h, w, c)`` rather than rows ``(batch, features)``.
SPATIAL = ("conv", "maxpool", "avgpool")


class Layer(NamedTuple):
    """One layer: its ``kind`` and the numbers that fix it.

    ``size``: a dense layer's units, a convolution's output channels, a pool's window
    side (and stride). ``kernel``: a convolution's kernel side. ``padding``: a
    convolution's, ``"valid"`` (no padding) or ``"same"`` (zeros around, the output as
    large as the input).
    """

    kind: str
    size: int = 0
    kernel: int = 0
    padding: str = "valid"

    def __str__(self) -> str:
        if self.kind == "conv":
            return f"conv:{self.size}:{self.kernel}x{self.kernel}:{self.padding}"
        if self.kind in ("dense", "maxpool", "avgpool"):
            return f"{self.kind}:{self.size}"
        return self.kind

    @property
    def has_params(self) -> bool:
        return self.kind in ("dense", "conv")


_FORMS = {"dense": "dense:UNITS", "conv": "conv:CHANNELS:KxK[:valid|same]",
          "maxpool": "maxpool:SIZE", "avgpool": "avgpool:SIZE", "flatten": "flatten",
          "relu": "relu"}


def _positive(text: str, what: str, spec: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"layer {spec!r}: {what} must be an integer >= 1, got {text!r}")
    return int(text)


def parse_layer(spec) -> Layer:
    """A ``Layer`` from its text (``"dense:128"``, ``"conv:32:5x5:same"``,
    ``"maxpool:2"``, ``"avgpool:2"``, ``"flatten"``, ``"relu"``), or a ``Layer`` as it
    is. Raises ``ValueError`` naming the layer and what is wrong with it."""
    if isinstance(spec, Layer):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"a layer is text such as 'dense:128' or 'conv:32:5x5', got "
                         f"{spec!r}")
    kind, *fields = spec.strip().split(":")
    if kind not in KINDS:
        raise ValueError(f"unknown layer {spec!r}; the kinds are {', '.join(KINDS)}")
    form = _FORMS[kind]
    if kind in ("flatten", "relu"):
        if fields:
            raise ValueError(f"layer {spec!r} takes no numbers: write {form!r}")
        return Layer(kind)
    if kind in ("dense", "maxpool", "avgpool"):
        if len(fields) != 1:
            raise ValueError(f"layer {spec!r}: write {form!r}")
        return Layer(kind, _positive(fields[0], "its size", spec))
    if len(fields) not in (2, 3):
        raise ValueError(f"layer {spec!r}: write {form!r}, such as 'conv:32:5x5:same'")
    channels = _positive(fields[0], "its output channels", spec)
    sides = fields[1].split("x")
    if len(sides) > 2 or len(set(sides)) != 1:
        raise ValueError(f"layer {spec!r}: the kernel must be square, such as 5x5 or 5")
    kernel = _positive(sides[0], "its kernel side", spec)
    padding = fields[2] if len(fields) == 3 else "valid"
    if padding not in PADDINGS:
        raise ValueError(f"layer {spec!r}: padding must be valid or same, got {padding!r}")
    return Layer("conv", channels, kernel, padding)


def parse_layers(specs) -> tuple[Layer, ...]:
    """A tuple of ``Layer`` from a sequence of texts or ``Layer`` records (one string is
    split at commas). Raises ``ValueError`` for any that ``parse_layer`` refuses."""
    if isinstance(specs, str):
        specs = [part for part in specs.split(",") if part.strip()]
    try:
        return tuple(parse_layer(spec) for spec in specs)
    except TypeError:
        raise ValueError(f"layers must be a sequence of layers such as ['conv:6:5x5', "
                         f"'relu'], got {specs!r}") from None


def image_shape(features: int, channels: int = 1) -> tuple[int, int, int]:
    """``(side, side, channels)`` of the square images that flat rows of ``features``
    hold; raises ``ValueError`` where they cannot be square."""
    side = math.isqrt(features // channels) if features % channels == 0 else 0
    if side * side * channels != features:
        raise ValueError(f"{features} inputs are not square images of {channels} "
                         f"channel(s); a convolution or pool needs images")
    return (side, side, channels)


def output_shape(layer: Layer, shape: tuple) -> tuple:
    """The per-sample shape ``layer`` gives for input ``shape`` (``(features,)`` or
    ``(h, w, c)``). Raises ``ValueError`` where the layer cannot take that input."""
    if layer.kind in SPATIAL and len(shape) == 1:
        try:
            shape = image_shape(shape[0], 1)
        except ValueError as error:
            raise ValueError(f"layer {str(layer)!r}: {error}") from None
    if layer.kind == "dense":
        if len(shape) != 1:
            raise ValueError(f"layer {str(layer)!r} reads rows but gets images "
                             f"{'x'.join(map(str, shape))}: put 'flatten' before it")
        return (layer.size,)
    if layer.kind in ("relu",):
        return shape
    if layer.kind == "flatten":
        return (math.prod(shape),)
    h, w, c = shape
    if layer.kind == "conv":
        if layer.padding == "same":
            return (h, w, layer.size)
        if layer.kernel > min(h, w):
            raise ValueError(f"layer {str(layer)!r}: a {layer.kernel}x{layer.kernel} kernel "
                             f"does not fit {h}x{w} images without padding")
        return (h - layer.kernel + 1, w - layer.kernel + 1, layer.size)
    if layer.size > min(h, w):
        raise ValueError(f"layer {str(layer)!r}: a {layer.size}x{layer.size} window does "
                         f"not fit {h}x{w} images")
    return (h // layer.size, w // layer.size, c)


def shapes(layers, features: int) -> list[tuple]:
    """The per-sample shape after each layer, the input's first: ``len(layers) + 1``
    shapes. Raises ``ValueError`` for a stack that does not fit together."""
    out = [(features,)]
    rows_from = None  # the layer that last turned images into rows, if any
    for layer in layers:
        if layer.kind in SPATIAL and len(out[-1]) == 1 and rows_from is not None:
            raise ValueError(f"layer {str(layer)!r} reads images, but {str(rows_from)!r} "
                             f"before it gives rows: only the network's input is read as "
                             f"images (put convolutions and pools before flatten and dense)")
        if layer.kind in ("dense", "flatten"):
            rows_from = layer
        out.append(output_shape(layer, out[-1]))
    return out


def param_shapes(layers, features: int) -> dict[str, tuple]:
    """``{"W1": ..., "b1": ..., "W2": ...}``: the parameters of the dense and conv
    layers, numbered from 1 in order, ``W`` before ``b``. A dense layer's ``W`` is
    ``(fan_in, units)``, a convolution's ``(k, k, C_in, C_out)``."""
    sizes = shapes(layers, features)
    params, number = {}, 0
    for layer, shape in zip(layers, sizes):
        if not layer.has_params:
            continue
        number += 1
        if layer.kind == "dense":
            params[f"W{number}"] = (shape[0], layer.size)
        else:
            channels = shape[2] if len(shape) == 3 else 1
            params[f"W{number}"] = (layer.kernel, layer.kernel, channels, layer.size)
        params[f"b{number}"] = (layer.size,)
    return params


# -- helpers -----------------------------------------------------------------------------

def placement(x) -> dict:
    """Keyword arguments that create a new array on ``x``'s device; empty where arrays
    have no ``device`` (MLX). Inside ``jax.jit`` the device of a tracer is None, which
    means "the default device"."""
    try:
        return {"device": device(x)}
    except AttributeError:
        return {}


def zero(xp, like):
    """A 0-d zero of ``like``'s dtype, on its device, for ``where``: a 0-d array
    broadcasts like the Python scalar that only the 2024.12 standard allows there."""
    return xp.zeros((), dtype=like.dtype, **placement(like))


def _as_images(xp, a, channels: int):
    """``a`` as ``(batch, h, w, c)``: flat rows are read as square images."""
    if a.ndim == 4:
        return a
    return xp.reshape(a, (-1, *image_shape(a.shape[1], channels)))


def _zeros_beside(xp, a, count: int, axis: int) -> list:
    """``count`` zero slices shaped like one of ``a``'s along ``axis`` (1: a row, 2: a
    column), for ``concat``. Made from ``a`` (``zeros_like`` of one slice), so the batch
    size is never read: the standard lets a library leave it unknown (None), as ndonnx
    does when it traces an export, and an exported graph stores no zero tensors."""
    edge = xp.zeros_like(a[:, :1, :, :] if axis == 1 else a[:, :, :1, :])
    return [edge] * count


def _as_given(xp, d, flat: bool):
    """A gradient ``d`` ``(batch, h, w, c)`` shaped like the layer's input: back to rows
    where the layer was given flat rows."""
    return xp.reshape(d, (-1, math.prod(d.shape[1:]))) if flat else d


def _pad(xp, a, top: int, bottom: int, left: int, right: int):
    """``a`` ``(batch, h, w, c)`` with zero borders of the given widths (the standard
    has no ``pad``; ``concat`` with zeros does it). The reshape, a view, states the
    shape, which ndonnx cannot infer through ``zeros_like``, for the next layer."""
    _, h, w, c = a.shape
    if top or bottom:
        a = xp.concat([*_zeros_beside(xp, a, top, 1), a, *_zeros_beside(xp, a, bottom, 1)],
                      axis=1)
        h = h + top + bottom
    if left or right:
        a = xp.concat([*_zeros_beside(xp, a, left, 2), a, *_zeros_beside(xp, a, right, 2)],
                      axis=2)
        w = w + left + right
    return xp.reshape(a, (-1, h, w, c))


def _same_padding(kernel: int) -> tuple[int, int]:
    """Zeros before and after for a ``same`` output; an even kernel puts the extra one
    after, as TensorFlow and JAX do."""
    return (kernel - 1) // 2, kernel // 2


def _window_index(xp, shape, kernel: int, like):
    """Flat indices into one image of ``shape`` ``(h, w, c)``, ordered ``(row, column,
    i, j, channel)``: the ``k x k`` window of every ``valid`` output position."""
    h, w, c = shape
    ho, wo = h - kernel + 1, w - kernel + 1
    where = placement(like)
    rows, columns = xp.arange(ho, **where), xp.arange(wo, **where)
    offsets, channels = xp.arange(kernel, **where), xp.arange(c, **where)
    row = rows[:, None, None, None, None] + offsets[None, None, :, None, None]
    column = columns[None, :, None, None, None] + offsets[None, None, None, :, None]
    return xp.reshape((row * w + column) * c + channels[None, None, None, None, :], (-1,))


def _patches(xp, a, kernel: int):
    """im2col: ``(batch * h_out * w_out, k * k * c)``, each row one window of ``a``
    ``(batch, h, w, c)`` (already padded), ordered ``(i, j, channel)`` like a reshaped
    HWIO kernel. One ``take`` along each flattened image: XLA runs it at about four
    times the speed of ``k * k`` slices joined by ``concat`` (docs/cnn.md)."""
    _, h, w, c = a.shape
    index = _window_index(xp, (h, w, c), kernel, a)
    flat = xp.take(xp.reshape(a, (-1, h * w * c)), index, axis=1)
    return xp.reshape(flat, (-1, kernel * kernel * c)), (h - kernel + 1, w - kernel + 1)


def _col2im(xp, d_patches, kernel: int, channels: int):
    """The transpose of ``_patches``: ``(batch, h_out, w_out, k * k * c)`` window
    gradients summed back onto ``(batch, h_out + k - 1, w_out + k - 1, c)``, one
    zero-bordered slice per kernel offset."""
    total = None
    for i in range(kernel):
        for j in range(kernel):
            start = (i * kernel + j) * channels
            piece = _pad(xp, d_patches[..., start:start + channels], i, kernel - 1 - i,
                         j, kernel - 1 - j)
            total = piece if total is None else total + piece
    return total


def blocked_sum(xp, delta):
    """The sum of ``delta`` ``(batch, h, w, c)`` over all but the last axis, as sums per
    image first and then over the batch: float32 rounding then grows with ``h * w +
    batch`` additions rather than ``batch * h * w`` (docs/parity.md measures it)."""
    per_image = xp.sum(xp.reshape(delta, (-1, math.prod(delta.shape[1:-1]),
                                          delta.shape[-1])), axis=1)
    return xp.sum(per_image, axis=0)


# -- the pairs -------------------------------------------------------------------------
# Each ``<kind>_forward`` returns ``(output, saved)``: ``saved`` is what its backward
# needs and nothing more, so an eager library frees everything else. Each
# ``<kind>_backward(saved, delta, ..., need_input=True)`` returns ``(d_input, grads)``;
# ``d_input`` is None when not needed (the first layer).

def dense_forward(a, W, b):
    return a @ W + b, a


def dense_backward(a, delta, W, *, need_input=True, a_t=None):
    """``a_t``: ``a`` already transposed into its own array (``network.backprop``)."""
    xp = array_namespace(delta)
    grads = ((a_t if a_t is not None else a.T) @ delta, xp.sum(delta, axis=0))
    return (delta @ W.T if need_input else None), grads


def relu_forward(z):
    xp = array_namespace(z)
    out = xp.where(z > 0, z, zero(xp, z))
    return out, out


def relu_backward(out, delta):
    """ReLU's derivative is where its output is > 0 (the same set as its input's)."""
    xp = array_namespace(delta)
    return xp.where(out > 0, delta, zero(xp, delta)), ()


def conv_forward(a, W, b, padding: str):
    """``a`` ``(batch, h, w, C_in)`` (or flat rows), ``W`` ``(k, k, C_in, C_out)``:
    ``(batch, h_out, w_out, C_out)``; saves the patches for the weight gradient."""
    xp = array_namespace(a)
    kernel, _, channels, out_channels = W.shape
    flat = a.ndim == 2
    a = _as_images(xp, a, channels)
    n, h, w, _ = a.shape
    if padding == "same":
        low, high = _same_padding(kernel)
        a = _pad(xp, a, low, high, low, high)
    patches, (ho, wo) = _patches(xp, a, kernel)
    out = patches @ xp.reshape(W, (-1, out_channels)) + b
    return xp.reshape(out, (-1, ho, wo, out_channels)), (patches, (h, w), padding, flat)


def conv_backward(saved, delta, W, *, need_input=True):
    """The weight gradient is ``patches.T @ delta``; the input's is ``delta @ W.T``
    (one gradient per window entry) summed back onto the image (``_col2im``), then
    cropped back for ``same`` padding."""
    xp = array_namespace(delta)
    patches, (h, w), padding, flat = saved
    kernel, _, channels, out_channels = W.shape
    rows = xp.reshape(delta, (-1, out_channels))
    grads = (xp.reshape(patches.T @ rows, W.shape), blocked_sum(xp, delta))
    if not need_input:
        return None, grads
    d_patches = xp.reshape(rows @ xp.reshape(W, (-1, out_channels)).T,
                           (-1, delta.shape[1], delta.shape[2], kernel * kernel * channels))
    d_in = _col2im(xp, d_patches, kernel, channels)
    if padding == "same":
        low = _same_padding(kernel)[0]
        d_in = d_in[:, low:low + h, low:low + w, :]
    return _as_given(xp, d_in, flat), grads


def _windows(xp, a, size: int):
    """``a`` ``(batch, h, w, c)`` cropped to whole windows, as ``(batch, h', w', c,
    size * size)`` with each window's values in row-major order."""
    n, h, w, c = a.shape
    ho, wo = h // size, w // size
    a = a[:, :ho * size, :wo * size, :]
    a = xp.reshape(a, (-1, ho, size, wo, size, c))
    a = xp.permute_dims(a, (0, 1, 3, 5, 2, 4))
    return xp.reshape(a, (-1, ho, wo, c, size * size))


def _unwindows(xp, d, size: int, shape):
    """The inverse of ``_windows`` for a gradient: ``(batch, h', w', c, size * size)``
    back to ``shape`` ``(batch, h, w, c)``, zeros where ``_windows`` cropped."""
    n, h, w, c = shape
    ho, wo = h // size, w // size
    d = xp.reshape(d, (-1, ho, wo, c, size, size))
    d = xp.reshape(xp.permute_dims(d, (0, 1, 4, 2, 5, 3)), (-1, ho * size, wo * size, c))
    return _pad(xp, d, 0, h - ho * size, 0, w - wo * size)


def maxpool_forward(a, size: int):
    xp = array_namespace(a)
    flat = a.ndim == 2
    a = _as_images(xp, a, 1)
    windows = _windows(xp, a, size)
    # The reshape, a view, states the shape, which ndonnx loses through its ``max``.
    return (xp.reshape(xp.max(windows, axis=4), (-1, *windows.shape[1:4])),
            (windows, a.shape, flat))


def maxpool_backward(saved, delta, size: int):
    """Each window's gradient goes to its first maximum in row-major order (``argmax``
    returns the first occurrence), every other entry gets zero."""
    xp = array_namespace(delta)
    windows, shape, flat = saved
    first = xp.argmax(windows, axis=4)
    positions = xp.arange(size * size, dtype=first.dtype, **placement(first))
    chosen = first[..., None] == positions
    d = xp.where(chosen, delta[..., None], zero(xp, delta))
    return _as_given(xp, _unwindows(xp, d, size, shape), flat), ()


def avgpool_forward(a, size: int):
    xp = array_namespace(a)
    flat = a.ndim == 2
    a = _as_images(xp, a, 1)
    return xp.mean(_windows(xp, a, size), axis=4), (a.shape, flat)


def avgpool_backward(saved, delta, size: int):
    xp = array_namespace(delta)
    shape, flat = saved
    share = delta / (size * size)
    # Times ones, not broadcast_to: that needs the batch size, unknown to ndonnx.
    d = share[..., None] * xp.ones(size * size, dtype=share.dtype, **placement(share))
    return _as_given(xp, _unwindows(xp, d, size, shape), flat), ()


def flatten_forward(a):
    xp = array_namespace(a)
    return xp.reshape(a, (-1, math.prod(a.shape[1:]))), a.shape


def flatten_backward(shape, delta):
    xp = array_namespace(delta)
    return xp.reshape(delta, (-1, *shape[1:])), ()
