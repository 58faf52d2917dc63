"""The configuration of a run (``TrainConfig``, ``multinet/training/config.py``):
presets, overrides, and values refused."""

import pytest

from multinet.training.config import PRESETS, TrainConfig


def test_presets_and_overrides():
    assert TrainConfig.from_preset("notebook") == TrainConfig()
    mlp = TrainConfig.from_preset("mlp", lr=3e-4, hidden=None)
    assert mlp.hidden == PRESETS["mlp"]["hidden"] and mlp.lr == 3e-4
    assert mlp.optimizer == "adam" and mlp.init == "he" and mlp.batch_size == 128
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="rmsprop")


@pytest.mark.parametrize("field, value", [("epochs", -1), ("lr", 0.0), ("hidden", ()),
                                          ("hidden", (10, 0))])
def test_config_rejects_nonsense(field, value):
    with pytest.raises(ValueError):
        TrainConfig(**{field: value})
