"""MNIST-format datasets: finding the four IDX files, reading them, splitting, moving them.

Images stay ``uint8`` on the host. They travel to the device as ``uint8`` (a quarter of
float32's bytes) and are scaled to [0, 1] there, so every backend sees the same values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace

from multinet.errors import DatasetError
from multinet.idx import read_idx

ENV_VAR = "MULTINET_DATA"

#: The four files of an MNIST-format dataset, by role, without the ``.gz``.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = 10


@dataclass(frozen=True)
class Dataset:
    """Host copies of a dataset: images ``(n, 28, 28)`` uint8, labels ``(n,)`` uint8."""

    name: str
    directory: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _file_in(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def find_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The four files in ``directory`` (``.gz`` or raw), or None if any is missing."""
    directory = Path(directory)
    found = {role: _file_in(directory, stem) for role, stem in FILES.items()}
    return None if None in found.values() else found


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where to look, in order: ``data_dir`` (``--data-dir``), else ``MULTINET_DATA``."""
    chosen = data_dir or os.environ.get(ENV_VAR)
    return [Path(chosen).expanduser()] if chosen else []


def locate(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The dataset's four files, or a ``DatasetError`` saying where it looked."""
    dirs = search_dirs(data_dir)
    for directory in dirs:
        files = find_files(directory)
        if files is not None:
            return files
    names = ", ".join(f"{stem}.gz" for stem in FILES.values())
    where = ", ".join(str(d) for d in dirs) or f"nowhere (no --data-dir and no {ENV_VAR})"
    raise DatasetError(
        f"MNIST files not found; searched {where}. Put {names} in a folder and pass "
        f"--data-dir FOLDER or set {ENV_VAR}=FOLDER"
    )


def _check_pair(images: np.ndarray, labels: np.ndarray, image_path, label_path) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{image_path}: expected uint8 images of shape (n, rows, cols), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(
            f"{label_path}: expected uint8 labels of shape (n,), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= CLASSES:
        raise DatasetError(
            f"{label_path}: label {int(labels.max())} outside 0-{CLASSES - 1}"
        )


def load_dataset(data_dir: str | os.PathLike | None = None, name: str = "mnist") -> Dataset:
    """Read and validate the four files of an MNIST-format dataset."""
    files = locate(data_dir)
    arrays = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        _check_pair(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                    files[f"{split}_images"], files[f"{split}_labels"])
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(
            f"train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]}"
        )
    return Dataset(name=name, directory=files["train_images"].parent, **arrays)


def split_indices(n: int, dev_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, dev)`` index arrays: a seeded shuffle, the first ``dev_size`` for dev.

    This is the notebook's split (shuffle, then ``data[0:1000]`` is dev) with a seed.
    """
    if not 0 <= dev_size < n:
        raise ValueError(f"dev split of {dev_size} needs at least {dev_size + 1} samples, have {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[dev_size:]), np.sort(order[:dev_size])


def flatten(images: np.ndarray) -> np.ndarray:
    """``(n, rows, cols)`` -> ``(n, rows * cols)`` without copying."""
    return images.reshape(len(images), -1)


def scale_images(images, dtype):
    """uint8 pixel values -> ``dtype`` in [0, 1], on whatever device ``images`` live on."""
    xp = array_namespace(images)
    return xp.astype(images, dtype) / 255.0
