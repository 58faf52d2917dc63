"""Checks of values that the Python API, the command line and the file formats share:
what counts as an integer, and ranges, worded the same way wherever a value is refused;
and how a device is named wherever one is shown (``describe_device``).

A range reads the same from every side: ``TrainConfig(lr=-1)`` raises ``lr must be a
finite number > 0, got -1.0``, and ``multinet train --lr -1`` says ``argument --lr: must
be a finite number > 0, got -1``.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass

#: A library's repr of a device object: ``array_api_strict.Device('CPU_DEVICE')``, MLX's
#: ``Device(cpu, 0)``. Its arguments are what a reader calls the device.
_DEVICE_REPR = re.compile(r"(?:\w+\.)*Device\((.+)\)")


def is_integer(value) -> bool:
    """Whether ``value`` is an integer of any kind (Python's, NumPy's), and not a bool.

    Parameters
    ----------
    value : object
        Anything a caller passed, or a value read from JSON.

    Returns
    -------
    bool
        True for ``3`` and ``numpy.int64(3)``; False for ``True``, ``3.0`` and ``"3"``.
    """
    # numbers.Integral includes bool; NumPy's bool is not registered with it.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite(value) -> bool:
    """Whether a real number is finite; an integer too large for a float is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True)
class Range:
    """The numbers a value may take: from ``low`` to ``high`` (None: no upper bound),
    each bound included or not; ``integer``: whole numbers only.

    ``str(range)`` is how every message words it: ``"a finite number > 0"``, ``"a number
    in [0, 1)"``, ``"an integer >= 1"``.
    """

    low: float
    high: float | None = None
    low_included: bool = True
    high_included: bool = False
    integer: bool = False

    def __str__(self) -> str:
        def bound(value):
            return f"{value:g}" if isinstance(value, float) else str(value)

        if self.high is None:
            kind = "an integer" if self.integer else "a finite number"
            return f"{kind} {'>=' if self.low_included else '>'} {bound(self.low)}"
        kind = "an integer" if self.integer else "a number"
        return (f"{kind} in {'[' if self.low_included else '('}{bound(self.low)}, "
                f"{bound(self.high)}{']' if self.high_included else ')'}")

    def __contains__(self, value) -> bool:
        if self.integer and not is_integer(value):
            return False
        if not is_finite(value):
            return False
        if not (value >= self.low if self.low_included else value > self.low):
            return False
        return self.high is None or (value <= self.high if self.high_included
                                     else value < self.high)

    def check(self, name: str, value) -> None:
        """Raise ``ValueError("{name} must be {self}, got {value}")`` unless ``value`` is
        in the range."""
        if value not in self:
            raise ValueError(f"{name} must be {self}, got {value}")


#: The ranges most options share.
POSITIVE = Range(0, low_included=False)
NON_NEGATIVE = Range(0)
POSITIVE_INTEGER = Range(1, integer=True)
NON_NEGATIVE_INTEGER = Range(0, integer=True)


def describe_device(device, platform: str = "cpu") -> str:
    """A backend's device as a reader names it: ``cpu``, ``cuda:0``, ``CPU_DEVICE``, or
    for a mesh of devices (JAX's data parallelism) ``4 CPU devices (mesh batch=4)``.

    Parameters
    ----------
    device : object
        ``Backend.device`` or an entry of ``Backend.devices``: a device object, a name,
        or a mesh with ``shape``, a mapping from axis name to size.
    platform : {"cpu", "gpu"}
        ``Backend.platform``, which names a mesh's devices.

    Returns
    -------
    str
        Never a library's repr of its device object.
    """
    shape = getattr(device, "shape", None)
    if isinstance(shape, Mapping) and hasattr(device, "devices"):
        count = math.prod(shape.values())
        axes = ", ".join(f"{axis}={size}" for axis, size in shape.items())
        return f"{count} {platform.upper()} device{'s' if count != 1 else ''} (mesh {axes})"
    if isinstance(getattr(device, "platform", None), str) and hasattr(device, "id"):
        return f"{device.platform}:{device.id}"  # a JAX device
    text = str(device)
    named = _DEVICE_REPR.fullmatch(text)
    if named is None:
        return text
    return ":".join(part.strip().strip("'\"") for part in named[1].split(","))
