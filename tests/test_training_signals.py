"""A signal stops ``train`` between two steps (``multinet/training/signals.py``): the
state at the stop is handed over to be saved, and the resumed run ends where the
uninterrupted one ends, with the same history. Signals sent to real ``multinet train``
processes, their exit statuses and the line that says how to go on are in
test_cli_train.py."""

import dataclasses
import signal

import numpy as np
import pytest

import helpers
from helpers import assert_same_run, host, mnist_slice, small_config
from multinet import checkpoint as ckpt
from multinet import optim, parity
from multinet.errors import TrainingInterrupted
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import train
from multinet.training.steps import SCAN_STEPS


@pytest.mark.parametrize("stop_at_step", [70, 55])  # mid-epoch (28 batches an epoch); end
def test_resume_after_ctrl_c_ends_where_an_uninterrupted_run_ends(mnist, tmp_path,
                                                                 monkeypatch, stop_at_step):
    backend = get_backend("numpy")
    data = mnist_slice(mnist)
    config = small_config()
    reference = train(config, backend, data, progress=False)

    real_learning_rate = optim.learning_rate

    def ctrl_c_at(base, schedule, step, total):
        if step == stop_at_step:
            signal.raise_signal(signal.SIGINT)  # as a user pressing Ctrl-C
        return real_learning_rate(base, schedule, step, total)

    monkeypatch.setattr(optim, "learning_rate", ctrl_c_at)
    path = tmp_path / "run.safetensors"

    def save(state):
        return ckpt.save(path, config, state, backend=backend, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingInterrupted, match=f"step {stop_at_step + 1}") as info:
        train(config, backend, data, progress=False, checkpoint=save)
    assert info.value.path == path
    monkeypatch.setattr(optim, "learning_rate", real_learning_rate)

    loaded = ckpt.load(path)
    assert loaded.metadata["progress"]["step"] == stop_at_step + 1
    resumed = train(loaded.config, backend, data, progress=False,
                    state=loaded.state_on(backend))
    assert_same_run(host(resumed.params, backend), host(reference.params, backend),
                    config.dtype, resumed.state.step)
    assert resumed.summary["test_accuracy"] == reference.summary["test_accuracy"]


def test_an_epoch_interrupted_and_resumed_reports_the_loss_of_all_its_batches(
        sample, tmp_path, monkeypatch):
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("mlp", hidden=(16,), batch_size=50, epochs=2,
                                     dev_size=200, log_every=1)
    reference = train(config, numpy, data, progress=False)
    real = optim.learning_rate
    monkeypatch.setattr(optim, "learning_rate", lambda b, s, step, t: (
        signal.raise_signal(signal.SIGINT), real(b, s, step, t))[1] if step == 27
        else real(b, s, step, t))
    path = tmp_path / "c.st"

    def save(state):
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingInterrupted):
        train(config, numpy, data, progress=False, checkpoint=save)
    monkeypatch.setattr(optim, "learning_rate", real)
    loaded = ckpt.load(path)
    assert loaded.metadata["progress"]["batch"] == 8  # 20 batches an epoch: mid-epoch
    assert set(loaded.metadata["progress"]) >= {"loss_sum", "accuracy_sum"}
    resumed = train(config, numpy, data, progress=False, state=loaded.state_on(numpy))
    for got, want in zip(resumed.history, reference.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["train_accuracy"] == pytest.approx(want["train_accuracy"], rel=1e-5)


def test_a_scanned_jax_epoch_stops_within_one_program_and_resumes_exactly(sample,
                                                                          monkeypatch):
    """JAX runs an epoch as compiled programs of ``SCAN_STEPS`` steps: a signal while the
    second is being started stops the run at that program's end (mid-epoch, batch 128 of
    192), and the resumed run ends where the uninterrupted one does, with the same
    metrics."""
    pytest.importorskip("jax", reason="compiled epochs are JAX's")
    jax = get_backend("jax")
    data = helpers.mnist_slice(sample, 1352, 200)
    config = TrainConfig.from_preset("mlp", hidden=(16,), batch_size=6, epochs=1,
                                     dev_size=200, log_every=1)
    batches = 1152 // 6  # three whole programs: no single steps to compile as well
    assert batches == 3 * SCAN_STEPS
    # The uninterrupted run, on NumPy (quicker than compiling it all once more); JAX
    # matches it within the parity tolerance (docs/parity.md).
    reference = train(config, get_backend("numpy"), data, progress=False)
    real = optim.learning_rate
    signal_at = SCAN_STEPS + 6

    def sigterm_at(base, schedule, step, total):
        if step == signal_at:
            signal.raise_signal(signal.SIGTERM)
        return real(base, schedule, step, total)

    monkeypatch.setattr(optim, "learning_rate", sigterm_at)
    saved = []
    with pytest.raises(TrainingInterrupted, match="SIGTERM") as info:
        train(config, jax, data, progress=False, on_interrupt=lambda s: saved.append(s) or "x")
    monkeypatch.setattr(optim, "learning_rate", real)
    state = saved[0]
    # The program being queued when the signal came is the last one run.
    assert state.step == state.batch == 2 * SCAN_STEPS and info.value.signum == signal.SIGTERM
    resumed = train(config, jax, data, progress=False, state=state)
    params = {k: np.asarray(v) for k, v in resumed.params.items()}
    expected = {k: np.asarray(v) for k, v in reference.params.items()}
    bound = parity.tolerance("float32", batches)
    assert parity.max_relative_error(params, expected) <= bound
    assert parity.relative_error(resumed.history[-1]["loss"],
                                 reference.history[-1]["loss"]) <= bound


def test_a_full_batch_run_in_chunks_stops_at_the_end_of_a_chunk_and_resumes_exactly(
        sample, monkeypatch):
    """Where full-batch steps run in chunks up to the next log point (JAX on a GPU,
    forced here), a signal while a chunk is being started stops the run at that chunk's
    end, which is logged as always; the resumed run ends as the uninterrupted one."""
    pytest.importorskip("jax", reason="compiled chunks are JAX's")
    jax = dataclasses.replace(get_backend("jax"), scan_full_batch=True)
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig(epochs=30, log_every=10, dev_size=200)
    reference = train(config, jax, data, progress=False)
    real = optim.learning_rate

    def sigint_at(base, schedule, step, total):
        if step == 12:  # while the learning rates of the chunk of steps 10..19 are made
            signal.raise_signal(signal.SIGINT)
        return real(base, schedule, step, total)

    monkeypatch.setattr(optim, "learning_rate", sigint_at)
    saved = []
    with pytest.raises(TrainingInterrupted, match="SIGINT") as info:
        train(config, jax, data, progress=False, on_interrupt=lambda s: saved.append(s) or "x")
    monkeypatch.setattr(optim, "learning_rate", real)
    state = saved[0]
    assert state.step == state.epoch == 20 and info.value.signum == signal.SIGINT
    assert [record["step"] for record in state.history] == [10, 20]
    resumed = train(config, jax, data, progress=False, state=state)
    assert_same_run(host(resumed.params, jax), host(reference.params, jax), "float32", 30)
    assert [r["loss"] for r in resumed.history] == pytest.approx(
        [r["loss"] for r in reference.history], rel=parity.tolerance("float32", 30))
