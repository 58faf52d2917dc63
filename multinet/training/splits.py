"""The data of a run on the device: the train, dev and test splits as ``uint8`` images
and int32 labels (with host copies for accuracies), and a full-batch run's scaled
images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multinet.data import Dataset, flatten, scale_images, split_indices
from multinet.registry import Backend
from multinet.training.config import TrainConfig


def full_batch_inputs(backend: Backend, split: DeviceSplit, dtype: str, layers=None):
    """``(x, x_t)``: the scaled images, and for backends that do not process full batches
    in chunks a contiguous features-first copy, which makes the gradient's product fast
    (``network.backprop``). ``x_t`` is None for chunking backends, and where the first of
    ``layers`` (the network's ``Layer`` records; None: a perceptron) is not dense: only
    a dense layer's weight gradient reads it, so any other would pay for a copy of the
    images for nothing."""
    x = scale_images(split.images, backend.dtype(dtype))
    if backend.fuse_chunk or (layers is not None and layers[0].kind != "dense"):
        return x, None
    x_t = scale_images(backend.asarray(np.ascontiguousarray(split.host_images.T)),
                       backend.dtype(dtype))
    return x, x_t


@dataclass(frozen=True)
class DeviceSplit:
    """One split on the device: ``uint8`` images ``(n, features)`` and int32 labels."""

    images: object
    labels: object
    host_images: np.ndarray   # (n, features) uint8
    host_labels: np.ndarray

    @classmethod
    def from_host(cls, backend: Backend, images, labels) -> "DeviceSplit":
        flat = flatten(images)
        return cls(images=backend.asarray(flat), labels=backend.asarray(labels, "int32"),
                   host_images=flat, host_labels=np.asarray(labels))

    def __len__(self) -> int:
        return self.images.shape[0]


def splits_on_device(backend: Backend, config: TrainConfig, dataset: Dataset) -> dict:
    train_idx, dev_idx = split_indices(len(dataset.train_labels), config.dev_size, config.seed)
    return {
        "train": DeviceSplit.from_host(backend, dataset.train_images[train_idx],
                                       dataset.train_labels[train_idx]),
        "dev": DeviceSplit.from_host(backend, dataset.train_images[dev_idx],
                                     dataset.train_labels[dev_idx]),
        "test": DeviceSplit.from_host(backend, dataset.test_images, dataset.test_labels),
    }
