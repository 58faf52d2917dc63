"""Training learns on every backend; the full notebook run (opt-in) reaches its accuracy."""

import pytest

from helpers import mnist_slice
from multinet.training.config import TrainConfig
from multinet.training.loop import train


def test_short_run_learns_on_every_backend(backend_dtype, mnist):
    backend, dtype = backend_dtype
    config = TrainConfig(epochs=100, dtype=dtype, dev_size=500, log_every=20)
    # All of the committed sample (the full files' first images): the same run with either.
    result = train(config, backend, mnist_slice(mnist, 2048, 512), progress=False)
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < 0.6 * losses[0]
    summary = result.summary
    assert summary["backend"] == backend.name and summary["dtype"] == dtype
    assert summary["train_samples"] == 1548
    # Chance is 0.10; the notebook's net reaches about 0.7 after 100 steps.
    for split in ("train", "dev", "test"):
        assert summary[f"{split}_accuracy"] > 0.5, summary


def test_zero_iterations_is_an_evaluation_of_the_initial_weights(mnist):
    from multinet.registry import get_backend

    result = train(TrainConfig(epochs=0), get_backend("numpy"),
                   mnist_slice(mnist, 1100, 100), progress=False)
    assert result.history == [] and result.summary["final_loss"] is None


@pytest.mark.parametrize("field, value", [("epochs", -1), ("lr", 0.0), ("hidden", ()),
                                          ("hidden", (10, 0))])
def test_config_rejects_nonsense(field, value):
    with pytest.raises(ValueError):
        TrainConfig(**{field: value})


@pytest.mark.slow
@pytest.mark.parametrize("backend_name, dtype", [
    ("numpy", "float64"), ("numpy", "float32"), ("jax", "float32"), ("jax", "float64"),
    ("strict", "float32"),
])
def test_notebook_run_reaches_the_notebooks_accuracy(backend_name, dtype, mnist):
    from multinet.registry import get_backend

    result = train(TrainConfig(dtype=dtype), get_backend(backend_name), mnist, progress=False)
    assert result.summary["train_accuracy"] >= 0.86
    assert result.summary["dev_accuracy"] >= 0.84
