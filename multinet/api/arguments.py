"""The checks of the arguments that ``fit``, ``load`` and ``Run``'s methods share: a
dataset (given, or named and loaded), images to look at, output paths and a number of
devices. Each refuses what it cannot take with one ``MultinetError`` naming the argument,
before any work."""

from __future__ import annotations

import math
import os

import numpy as np

from multinet import data
from multinet.checks import is_integer
from multinet.data import Dataset
from multinet.errors import InvalidArgument


def check_devices(devices) -> None:
    """``InvalidArgument`` unless ``devices`` is what a ``devices`` argument may be: None
    (one device), ``"all"`` or a count >= 1."""
    if devices is None or isinstance(devices, str) and devices == "all":
        return
    if not (is_integer(devices) and devices >= 1):
        raise InvalidArgument(f"devices must be a number of devices >= 1, 'all' or None; "
                              f"got {devices!r}")


def check_paths(paths: dict, *, optional: bool = True) -> None:
    """``InvalidArgument`` naming the first of ``paths`` (an argument's name and value)
    that is not a file name (a str or an ``os.PathLike``), nor None where ``optional``."""
    for name, value in paths.items():
        if not (isinstance(value, (str, os.PathLike)) or optional and value is None):
            raise InvalidArgument(f"{name} must be a file name (a str or a pathlib.Path)"
                                  f"{' or None' if optional else ''}, got "
                                  f"{type(value).__name__}")


def check_dataset(value) -> None:
    """``InvalidArgument`` unless ``value`` is what a ``dataset`` argument may be: a
    ``Dataset`` (which must pass ``multinet.data.validate``: ``DatasetError`` naming what
    is wrong), a dataset's name or None."""
    if isinstance(value, Dataset):
        data.validate(value)
    elif value is not None and not isinstance(value, str):
        raise InvalidArgument(f"dataset must be a Dataset from multinet.load_dataset, a "
                              f"dataset name or None; got {type(value).__name__}")


def as_dataset(value: Dataset | str) -> Dataset:
    """A ``Dataset`` as given, checked, or loaded by its name (``check_dataset``)."""
    check_dataset(value)
    return value if isinstance(value, Dataset) else data.load_dataset(value)


def flat_images(images, features: int) -> np.ndarray:
    """``images`` (``(n, side, side)`` or ``(n, features)`` uint8) as a ``(n, features)``
    host array, or ``InvalidArgument`` naming what is wrong."""
    array = np.asarray(images)
    side = math.isqrt(features)
    if array.dtype != np.uint8:
        raise InvalidArgument(
            f"images must be uint8 pixel values 0-255, as load_dataset gives them; got "
            f"{array.dtype} (for floats in [0, 1]: (images * 255).round().astype("
            f"numpy.uint8))")
    if array.ndim == 3 and array.shape[1:] == (side, side) and side * side == features:
        return array.reshape(len(array), features)
    if array.ndim == 2 and array.shape[1] == features:
        return array
    hint = ("; for one image pass image[None]"
            if array.shape in ((side, side), (features,)) else "")
    raise InvalidArgument(f"images must have shape (n, {side}, {side}) or "
                          f"(n, {features}); got {array.shape}{hint}")
