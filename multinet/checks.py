"""Checks of values that the Python API, the command line and the file formats share:
what counts as an integer, and ranges, worded the same way wherever a value is refused.

A range reads the same from every side: ``TrainConfig(lr=-1)`` raises ``lr must be a
finite number > 0, got -1.0``, and ``multinet train --lr -1`` says ``argument --lr: must
be a finite number > 0, got -1``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


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
