"""How much memory a run needs, and how much this machine has: a network that cannot
fit is refused with what it needs, before anything is allocated."""

from __future__ import annotations

import math
import os
from pathlib import Path

from multinet.errors import MultinetError, argument
from multinet.layers import param_shapes, shapes
from multinet.registry import Backend
from multinet.training.config import TrainConfig


def human_size(size: float) -> str:
    """``"1.5 GiB"``: a number of bytes in the largest binary unit it fills."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 2**10:.1f} KiB"


def memory_needed(config: TrainConfig, features: int, n_train: int) -> tuple[int, int]:
    """``(host_bytes, device_bytes)`` a run needs at least: the float64 draw of the weights
    and their cast on the host; parameters, gradients, the updated copy and the optimizer
    state (old and new), activations of one batch and the images on the device. An
    estimate for the message that refuses a run that cannot fit, not an accounting.

    Activations are counted per sample from ``multinet.layers.shapes``: each layer's
    output, three times (its value, what the next layer makes of it, its gradient),
    except ReLU's (counted in the layer before it) and flatten's (a reshape); and each
    convolution's im2col patches, ``k * k * C_in`` values per output position, kept for
    its weight gradient."""
    layers = config.network_layers()
    count = sum(math.prod(shape) for shape in param_shapes(layers, features).values())
    sizes = shapes(layers, features)
    outputs = sum(math.prod(shape) for layer, shape in zip(layers, sizes[1:])
                  if layer.kind not in ("relu", "flatten"))
    patches = sum(math.prod(after[:2]) * layer.kernel ** 2 * _channels(before)
                  for layer, before, after in zip(layers, sizes, sizes[1:])
                  if layer.kind == "conv")
    item = 8 if config.dtype == "float64" else 4
    copies = {"sgd": 0, "momentum": 1, "adam": 2}[config.optimizer]
    rows = n_train if not config.batch_size else min(config.batch_size, n_train)
    host = count * (8 + item)
    device = (count * item * (3 + 2 * copies) + rows * (outputs * 3 + patches) * item
              + n_train * features * (1 + (0 if config.batch_size else 2 * item)))
    return host, device


def _channels(shape: tuple) -> int:
    """The channels of a per-sample shape: flat rows read as images have one."""
    return shape[2] if len(shape) == 3 else 1


def physical_memory() -> int | None:
    """This machine's memory, or the container's limit (cgroup v2) where that is lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def memory_message(config: TrainConfig, features: int, n_train: int, backend: Backend):
    """``(bytes, text)``: what the run needs where it is checked (the host, and on a GPU
    the host only), and a sentence saying so for an error message."""
    host, device = memory_needed(config, features, n_train)
    needed = host + device if backend.platform == "cpu" else host
    where = ("" if backend.platform == "cpu"
             else f" on the host, plus {human_size(device)} on the device")
    return needed, (f"the network {config.describe_network()} needs about "
                    f"{human_size(needed)} of memory{where} (parameters, optimizer state "
                    f"and activations in {config.dtype} with {config.optimizer})")


def check_network_fits(config: TrainConfig, backend: Backend, features: int,
                       n_train: int) -> None:
    """Refuse a network that cannot fit in this machine's memory, before allocating."""
    needed, message = memory_message(config, features, n_train, backend)
    total = physical_memory()
    if total is not None and needed > total:
        smaller = (f"smaller {argument('hidden')} widths" if config.hidden else
                   f"fewer channels and units in {argument('layers')}, or a smaller "
                   f"{argument('batch_size')}")
        raise MultinetError(f"{message}; this machine has {human_size(total)}: choose "
                            f"{smaller}")
