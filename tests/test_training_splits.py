"""The data of a run on the device (``multinet/training/splits.py``): a full-batch run's
images are scaled once, with a features-first copy only for a network whose first layer
is dense (its weight gradient is the one that reads it)."""

import dataclasses

import numpy as np

import helpers
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.splits import DeviceSplit, full_batch_inputs


def test_only_a_dense_first_layer_gets_the_transposed_copy_of_the_images(sample):
    whole = dataclasses.replace(get_backend("numpy"), fuse_chunk=None)  # no chunks
    split = DeviceSplit.from_host(whole, sample.train_images[:30], sample.train_labels[:30])
    mlp = TrainConfig(hidden=(8,)).network_layers()
    cnn = TrainConfig(hidden=(), layers=helpers.TINY_CNN).network_layers()
    x, x_t = full_batch_inputs(whole, split, "float32", mlp)
    assert x.shape == (30, 784) and np.array_equal(x_t, x.T) and x_t.flags.c_contiguous
    x, x_t = full_batch_inputs(whole, split, "float32", cnn)
    assert x.shape == (30, 784) and x_t is None
    assert full_batch_inputs(whole, split, "float32")[1].shape == (784, 30)  # a perceptron
    chunked = get_backend("numpy")  # fuses chunks of rows: no copy for any network
    assert full_batch_inputs(chunked, split, "float32", mlp)[1] is None
