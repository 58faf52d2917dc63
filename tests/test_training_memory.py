"""The memory a run needs (``multinet/training/memory.py``): the perceptron's estimate
as it always was, a convolutional network's counting its activations and im2col patches,
and the network named as the configuration describes it."""

import pytest

from helpers import NUMPY
from multinet.errors import MultinetError
from multinet.training import memory
from multinet.training.config import TrainConfig


def perceptron_estimate(config, features, n_train):
    """The estimate as multinet made it before there were layers."""
    sizes = (features, *config.hidden, 10)
    count = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    item = 8 if config.dtype == "float64" else 4
    copies = {"sgd": 0, "momentum": 1, "adam": 2}[config.optimizer]
    rows = n_train if not config.batch_size else min(config.batch_size, n_train)
    return (count * (8 + item),
            count * item * (3 + 2 * copies) + rows * sum(sizes[1:]) * item * 3
            + n_train * features * (1 + (0 if config.batch_size else 2 * item)))


@pytest.mark.parametrize("config", [
    TrainConfig(), TrainConfig.from_preset("mlp"),
    TrainConfig.from_preset("mlp", dtype="float64", optimizer="momentum", hidden=(300, 7)),
    TrainConfig(hidden=(100_000_000,), optimizer="sgd", batch_size=64),
])
@pytest.mark.parametrize("n_train", [59_000, 100])
def test_a_perceptron_needs_what_it_always_did(config, n_train):
    assert memory.memory_needed(config, 784, n_train) == perceptron_estimate(config, 784,
                                                                               n_train)


def test_a_convolution_counts_its_activations_and_its_im2col_patches():
    """28x28x1 -> conv 26x26x2 -> maxpool 13x13x2 -> flatten 338 -> dense 10, counted by
    hand: each output three times (ReLU's and flatten's are the layer's before them) and
    the patches once, 9 values per output position."""
    config = TrainConfig(hidden=(), layers=("conv:2:3x3", "relu", "maxpool:2", "flatten"),
                         optimizer="adam", batch_size=8)
    params = (3 * 3 * 1 * 2 + 2) + (338 * 10 + 10)
    outputs = 26 * 26 * 2 + 13 * 13 * 2 + 10
    patches = 26 * 26 * 9
    host, device = memory.memory_needed(config, 784, 100)
    assert host == params * (8 + 4)
    assert device == params * 4 * (3 + 4) + 8 * (3 * outputs + patches) * 4 + 100 * 784


def test_the_message_names_the_network_as_its_configuration_describes_it():
    config = TrainConfig(hidden=(), layers=("conv:2:3x3", "relu", "flatten"))
    _, text = memory.memory_message(config, 784, 100, NUMPY)
    assert text.startswith("the network conv:2:3x3:valid, relu, flatten, dense:10 needs "
                           "about ")
    _, text = memory.memory_message(TrainConfig(hidden=(16,)), 784, 100, NUMPY)
    assert text.startswith("the network 784-16-10 needs about ")


def test_a_network_of_layers_too_large_is_refused_naming_the_layers(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**30)
    config = TrainConfig(hidden=(), layers=("conv:512:5x5:same", "relu", "flatten"))
    with pytest.raises(MultinetError) as info:
        memory.check_network_fits(config, NUMPY, 784, 1000)
    assert "this machine has 1.0 GiB: choose fewer channels and units in layers=, or a " \
           "smaller batch_size=" in str(info.value)
