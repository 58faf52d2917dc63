"""``train`` (``multinet/training/loop.py``): it learns on every backend, with every
optimizer; a run of no steps evaluates the initial weights; and a run that goes wrong (it
diverges, a NaN hides from the loss, memory runs out in the middle of an update) stops and
keeps only good checkpoints. The full-size runs are opt-in (``--runslow``)."""

import numpy as np
import pytest

import helpers
from helpers import mnist_slice, small_config
from multinet import checkpoint as ckpt
from multinet import optim
from multinet.errors import TrainingDiverged
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import train


# --- Learning ---------------------------------------------------------------------------

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


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("momentum", 0.05), ("adam", 2e-3)])
def test_every_optimizer_learns_on_every_backend(backend, optimizer, lr, mnist):
    config = small_config(optimizer=optimizer, lr=lr, epochs=3, weight_decay=1e-4)
    result = train(config, backend, mnist_slice(mnist), progress=False)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0] and result.summary["test_accuracy"] > 0.75


def test_zero_iterations_is_an_evaluation_of_the_initial_weights(mnist):
    from multinet.registry import get_backend

    result = train(TrainConfig(epochs=0), get_backend("numpy"),
                   mnist_slice(mnist, 1100, 100), progress=False)
    assert result.history == [] and result.summary["final_loss"] is None


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


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_mlp_preset_reaches_98_percent(backend_name, mnist):
    result = train(TrainConfig.from_preset("mlp"), get_backend(backend_name), mnist,
                   progress=False)
    assert result.summary["test_accuracy"] >= 0.98


# --- A run that goes wrong stops and keeps its last good checkpoint ---------------------

def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
        mnist, tmp_path, monkeypatch):
    backend = get_backend("numpy")
    config = small_config()
    path = tmp_path / "run.safetensors"
    real_learning_rate = optim.learning_rate
    monkeypatch.setattr(optim, "learning_rate", lambda b, s, step, t:
                        1e30 if step >= 80 else real_learning_rate(b, s, step, t))

    def save(state):
        return ckpt.save(path, config, state, backend=backend, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingDiverged, match="diverged: .* with optimizer adam, lr 0.001 "
                       r"\(cosine schedule\), batch size 64; .*from epoch 2"), \
            np.errstate(all="ignore"):
        train(config, backend, mnist_slice(mnist), progress=False, checkpoint=save)
    good = ckpt.load(path)
    assert good.metadata["progress"]["epoch"] == 2  # epochs 1 and 2 ended before step 80
    assert all(np.all(np.isfinite(v)) for v in good.params.values())


def test_a_nan_hidden_from_the_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        sample, tmp_path, monkeypatch):
    """A NaN bias of a ReLU unit turns its activation into 0: the loss stays finite. The
    parameters themselves are checked, so the run stops, and the checkpoint on disk is
    the last finite one."""
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("notebook", epochs=8, dev_size=200, log_every=2,
                                     optimizer="momentum", momentum=0.5)
    def poisoned(real_update):
        def update(optimizer, params, grads, state, lr):
            params, state = real_update(optimizer, params, grads, state, lr)
            if float(state["t"]) == 5:
                params = {**params, "b1": np.where(np.arange(10) == 3, np.nan, params["b1"])}
            return params, state

        return update

    # NumPy's arrays are mutable, so training updates them in place (update_in_place).
    for name in ("update", "update_in_place"):
        monkeypatch.setattr(optim, name, poisoned(getattr(optim, name)))
    path = tmp_path / "c.st"

    def save(state):
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingDiverged) as info, np.errstate(invalid="ignore"):
        train(config, numpy, data, progress=False, checkpoint=save)
    message = str(info.value)
    assert "b1" in message and "by epoch 6" in message
    assert "optimizer momentum, lr 0.2 (constant schedule), momentum 0.5, full batch" in message
    assert f"the last checkpoint, {path}, is from epoch 4" in message
    assert ckpt.load(path).metadata["progress"]["epoch"] == 4


def test_memory_running_out_in_an_in_place_update_saves_nothing_half_updated(
        sample, tmp_path, monkeypatch):
    """On a backend whose arrays are updated in place (NumPy), memory running out between
    two writes of an update leaves a state that is neither step: the rescue file is not
    written, and the last checkpoint stays the last good one."""
    from multinet.errors import TrainingStopped

    numpy = get_backend("numpy")
    assert numpy.mutable_arrays
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("notebook", epochs=8, dev_size=200, log_every=2)
    real = optim.update_in_place

    def half_then_out_of_memory(optimizer, params, grads, state, lr):
        if int(state["t"]) == 5:
            params["W1"] -= lr * grads["W1"]  # one parameter written, the others not
            raise MemoryError
        return real(optimizer, params, grads, state, lr)

    monkeypatch.setattr(optim, "update_in_place", half_then_out_of_memory)
    path, rescued = tmp_path / "c.st", tmp_path / "rescue.st"

    def save(state):
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    def rescue(state):
        return ckpt.save(rescued, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingStopped, match="last checkpoint written is the last good"):
        train(config, numpy, data, progress=False, checkpoint=save, on_interrupt=rescue)
    assert not rescued.exists()
    assert ckpt.load(path).metadata["progress"]["epoch"] == 4
