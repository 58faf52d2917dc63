"""``train`` (``multinet/training/loop.py``): it learns on every backend, with every
optimizer; a run of no steps evaluates the initial weights; and a run that goes wrong (it
diverges, a NaN hides from the loss, its outputs overflow the dtype, memory runs out in
the middle of an update) stops and keeps only checkpoints that evaluate. The full-size
runs are opt-in (``--runslow``)."""

import dataclasses
import re
import signal

import numpy as np
import pytest

import helpers
from helpers import mnist_slice, small_config
from multinet import checkpoint as ckpt
from multinet import optim, parity
from multinet.errors import MultinetError, OutputsNotFinite, TrainingDiverged, TrainingStopped
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import initial_state, train
from multinet.training.prediction import check_finite


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


def test_divergence_advises_a_new_run_because_resume_keeps_the_settings(sample):
    config = small_config(optimizer="sgd", lr=1e15, schedule="constant", epochs=1)
    with pytest.raises(TrainingDiverged) as info, np.errstate(all="ignore"):
        train(config, get_backend("numpy"), mnist_slice(sample), progress=False)
    message = str(info.value)
    assert "start a new run with a smaller lr= (resume= keeps the saved settings)" in message
    assert "try" not in message


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


# --- Only a state that evaluates is kept ------------------------------------------------

def _saving_to(path, config, backend):
    def save(state):
        return ckpt.save(path, config, state, backend=backend, dataset_name="mnist",
                         dataset_sha256={})

    return save


def _notebook(**overrides):
    return TrainConfig.from_preset("notebook", dev_size=200, **{"log_every": 1, **overrides})


def test_a_state_whose_outputs_overflow_is_never_saved_and_the_previous_file_survives(
        sample, tmp_path):
    """lr 1e30: after one step every weight is finite but about 5e29, so the forward pass
    overflows float32 (``evaluate`` would refuse it). That state is a divergence at the
    first log point: it is not written, and the good file already at the path stays."""
    numpy = get_backend("numpy")
    data = mnist_slice(sample, 1200, 200)
    config = _notebook(lr=1e30, epochs=5)
    path = tmp_path / "b.st"
    _saving_to(path, _notebook(epochs=2), numpy)(
        train(_notebook(epochs=2), numpy, data, progress=False).state)
    before = path.read_bytes()
    with pytest.raises(TrainingDiverged) as info, np.errstate(all="ignore"):
        train(config, numpy, data, progress=False, checkpoint=_saving_to(path, config, numpy),
              checkpoint_path=path)
    message = str(info.value)
    assert re.search(r"the network's outputs overflow float32 on \d+ of 200 test images",
                     message)
    assert "by epoch 1 (step 1)" in message and "lr 1e+30" in message
    assert message.endswith(f"no checkpoint was written by this run: {path} was left as "
                            "it was")
    assert path.read_bytes() == before
    fresh = tmp_path / "new.st"
    with pytest.raises(TrainingDiverged, match=f"nothing at {fresh}"), np.errstate(all="ignore"):
        train(config, numpy, data, progress=False, checkpoint=_saving_to(fresh, config, numpy),
              checkpoint_path=fresh)
    assert not fresh.exists()


def test_a_run_that_overflows_later_keeps_its_last_state_that_evaluates(
        sample, tmp_path, monkeypatch):
    """Steps 0-2 train normally, step 3 takes lr 1e30: the loss logged at epoch 4 is still
    finite (it is taken before the update), but the state is not kept; the checkpoint is
    epoch 3's, and it evaluates."""
    numpy = get_backend("numpy")
    data = mnist_slice(sample, 1200, 200)
    config = _notebook(epochs=8)
    real_learning_rate = optim.learning_rate
    monkeypatch.setattr(optim, "learning_rate", lambda b, s, step, t:
                        1e30 if step == 3 else real_learning_rate(b, s, step, t))
    path = tmp_path / "c.st"
    with pytest.raises(TrainingDiverged) as info, np.errstate(all="ignore"):
        train(config, numpy, data, progress=False, checkpoint=_saving_to(path, config, numpy),
              checkpoint_path=path)
    message = str(info.value)
    assert "outputs overflow float32" in message and "by epoch 4 (step 4)" in message
    assert message.endswith(f"the last checkpoint, {path}, is from epoch 3 (step 3), before "
                            "it diverged, and evaluates")
    kept = ckpt.load(path)
    assert kept.metadata["progress"]["step"] == 3
    check_finite(kept.params, data.test_images, "float32")
    check_finite(kept.params, data.train_images, "float32")


def test_a_signal_on_a_state_that_does_not_evaluate_saves_nothing(sample, tmp_path,
                                                                    monkeypatch):
    """Ctrl-C right after a step of lr 1e30, long before a log point: the state at the
    stop is finite but overflows, so neither the checkpoint nor the rescue file is
    written."""
    numpy = get_backend("numpy")
    data = mnist_slice(sample, 1200, 200)
    config = _notebook(lr=1e30, epochs=1000, log_every=100)

    def ctrl_c_at_the_first_step(base, schedule, step, total):
        if step == 0:
            signal.raise_signal(signal.SIGINT)
        return base

    monkeypatch.setattr(optim, "learning_rate", ctrl_c_at_the_first_step)
    path, rescued = tmp_path / "c.st", tmp_path / "rescue.st"
    with pytest.raises(TrainingDiverged) as info, np.errstate(all="ignore"):
        train(config, numpy, data, progress=False, checkpoint=_saving_to(path, config, numpy),
              on_interrupt=_saving_to(rescued, config, numpy), checkpoint_path=path)
    message = str(info.value)
    assert "outputs overflow float32" in message and "(found on SIGINT)" in message
    assert "by epoch 1 (step 1)" in message and f"nothing at {path}" in message
    assert not path.exists() and not rescued.exists()


def test_a_failed_write_rescues_no_state_that_does_not_evaluate(sample, tmp_path,
                                                                 monkeypatch):
    """Memory runs out in the step after one of lr 1e30 (on a backend whose updates make
    new arrays, so the state is whole): the state is not rescued, and the line says why
    and what was kept."""
    # NumPy as a library whose arrays cannot be written in place (as JAX's): every update
    # makes new arrays.
    immutable = dataclasses.replace(get_backend("numpy"), mutable_arrays=False)
    data = mnist_slice(sample, 1200, 200)
    config = _notebook(lr=1e30, epochs=1000, log_every=100)
    real_update = optim.update

    def out_of_memory_at_the_second_step(optimizer, params, grads, state, lr):
        if int(state["t"]) == 1:
            raise MemoryError
        return real_update(optimizer, params, grads, state, lr)

    monkeypatch.setattr(optim, "update", out_of_memory_at_the_second_step)
    path, rescued = tmp_path / "c.st", tmp_path / "rescue.st"
    with pytest.raises(TrainingStopped) as info, np.errstate(all="ignore"):
        train(config, immutable, data, progress=False,
              checkpoint=_saving_to(path, config, immutable),
              on_interrupt=_saving_to(rescued, config, immutable), checkpoint_path=path)
    message = str(info.value)
    assert message.startswith("out of memory")
    assert "the state at epoch 1, step 1 was not saved: the network's outputs overflow" \
        in message and message.endswith(f"nothing at {path})")
    assert not rescued.exists()


def test_a_state_to_continue_that_does_not_evaluate_is_refused_before_any_step(sample):
    """A checkpoint written before this check may hold such weights: resuming it would
    diverge at once, so it is refused, saying why."""
    numpy = get_backend("numpy")
    data = mnist_slice(sample, 1200, 200)
    config = _notebook(epochs=4)
    state = train(_notebook(epochs=2), numpy, data, progress=False).state
    state.params = {k: v * np.float32(1e30) if k.startswith("W") else v
                    for k, v in state.params.items()}
    with pytest.raises(OutputsNotFinite, match="cannot continue from this state: the "
                       r"network's outputs overflow float32 on \d+ of 200 test images"), \
            np.errstate(all="ignore"):
        train(config, numpy, data, progress=False, state=state)


# --- Networks of layers -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_a_cnn_trains_full_batch_and_in_minibatches(name, sample):
    """The layers reach every kind of step: full batch, in chunks (NumPy) or whole with no
    transposed copy of the images (PyTorch), and minibatches. (Every backend computes
    the CNN's steps as NumPy does: test_parity.py.)"""
    try:
        backend = get_backend(name)
    except MultinetError as exc:
        pytest.skip(str(exc))
    data = mnist_slice(sample, 300, 20)
    for batch_size in (0, 50):
        config = TrainConfig.from_preset("cnn", layers=helpers.TINY_CNN, epochs=2, lr=0.01,
                                         batch_size=batch_size, dev_size=100)
        result = train(config, backend, data, progress=False)
        losses = [record["loss"] for record in result.history]
        assert result.state.step == (2 if batch_size == 0 else 8)
        assert result.params["W1"].shape == (3, 3, 1, 2) and losses[1] < losses[0], losses


def test_a_state_of_another_network_is_refused_before_any_step(sample):
    """A state to continue must be the configured network's: each parameter's shape is
    checked against the layers."""
    numpy = get_backend("numpy")
    cnn = TrainConfig.from_preset("cnn", layers=helpers.TINY_CNN, epochs=1, dev_size=100)
    mlp_state = initial_state(small_config(), numpy, 784)
    with pytest.raises(MultinetError, match=re.escape(
            "the parameters (W1 784x32, b1 32, W2 32x10, b2 10) are not those of the network "
            "conv:2:3x3:valid, relu, maxpool:2, flatten, dense:10 on 784 pixels (W1 3x3x1x2, "
            "b1 2, W2 338x10, b2 10)")):
        train(cnn, numpy, mnist_slice(sample, 300, 20), progress=False, state=mlp_state)


# --- Full-batch runs in compiled chunks; captured steps -----------------------------------

def counting_scans(backend, lengths):
    """``backend`` running full-batch runs in chunks, each program's step count appended
    to ``lengths``."""
    def compile_scan(fn):
        run = backend.compile_scan(fn)

        def counted(carry, xs, *args):
            lengths.append(xs[0].shape[0])
            return run(carry, xs, *args)

        return counted

    return dataclasses.replace(backend, scan_full_batch=True, compile_scan=compile_scan)


def test_a_full_batch_run_in_chunks_between_log_points_ends_as_step_by_step(sample, tmp_path):
    """A chunk runs the steps up to the next log point as one program: the log points,
    their metrics and the checkpoint at the end are the step-by-step run's, within the
    float32 tolerance; a run resumed off a log point first catches up to the next one."""
    pytest.importorskip("jax", reason="compile_scan is JAX's")
    jax = get_backend("jax")
    data = mnist_slice(sample, 1200, 200)
    config = TrainConfig(epochs=25, log_every=10, dev_size=200)
    runs, lengths = {}, []
    for name, backend in (("steps", dataclasses.replace(jax, scan_full_batch=False)),
                          ("chunks", counting_scans(jax, lengths))):
        path = tmp_path / f"{name}.safetensors"
        train(config, backend, data, progress=False,
              checkpoint=lambda state, path=path, backend=backend: ckpt.save(
                  path, config, state, backend=backend, dataset_name="mnist",
                  dataset_sha256={}))
        runs[name] = ckpt.load(path)
    assert lengths == [10, 10, 5]
    steps, chunks = runs["steps"], runs["chunks"]
    position = [{k: v for k, v in run.metadata["progress"].items() if k != "seconds"}
                for run in (chunks, steps)]
    assert position[0] == position[1] and position[0]["step"] == 25
    assert [r["step"] for r in chunks.metadata["history"]] == [10, 20, 25]
    for mine, theirs in zip(chunks.metadata["history"], steps.metadata["history"], strict=True):
        assert mine["lr"] == theirs["lr"] and mine["epoch"] == theirs["epoch"]
        assert parity.relative_error(mine["loss"], theirs["loss"]) <= parity.tolerance(
            "float32", mine["step"])
    helpers.assert_same_run(chunks.params, steps.params, "float32", 25)

    del lengths[:]
    early = train(dataclasses.replace(config, epochs=7), jax, data, progress=False).state
    resumed = train(config, counting_scans(jax, lengths), data, progress=False, state=early)
    assert lengths == [3, 10, 5]
    helpers.assert_same_run(helpers.host(resumed.params, jax), steps.params, "float32", 25)


def test_jax_runs_full_batch_steps_one_at_a_time_on_the_cpu_and_in_chunks_on_a_gpu():
    """The faster path where it was measured (backends/jax.py): equal on the CPU, where
    one step at a time answers a signal sooner."""
    pytest.importorskip("jax", reason="the choice is JAX's")
    jax = get_backend("jax")
    assert jax.scan_full_batch == (jax.platform != "cpu")
    assert get_backend("numpy").scan_full_batch is False


def graph_like_capture(captures, replays):
    """A ``capture_step`` that acts as a CUDA graph does, on NumPy: the step runs on
    static copies of the first call's arguments, each replay copies the new arguments in
    and its results into the first call's output buffers, which it returns."""
    def capture_step(fn, args):
        captures.append(len(args))
        # A graph reads arrays only: a number (the learning rate) would be baked in.
        assert all(isinstance(a, np.ndarray) for a in args), [type(a) for a in args]
        static = tuple(np.array(a, copy=True) for a in args)
        outputs = tuple(o if isinstance(o, np.ndarray) else np.array(o) for o in fn(*static))

        def replay(*new):
            replays.append(len(new))
            for buffer, value in zip(static, new, strict=True):
                if value is not buffer:
                    np.copyto(buffer, value)
            for buffer, value in zip(outputs, fn(*static), strict=True):
                if value is not buffer:
                    np.copyto(buffer, value)
            return outputs

        return replay

    return capture_step


@pytest.mark.parametrize("preset, steps, arrays", [
    ("notebook", 3, 4 + 1 + 3),       # W1 b1 W2 b2, SGD's t; images, labels, lr
    ("mlp", 3 * 15, 4 + 9 + 4),       # the same, Adam's m and v; images, labels, index, lr
])
def test_a_backend_that_captures_steps_trains_through_replays_to_the_eager_result(
        preset, steps, arrays, sample):
    """Where ``capture_step`` is set the loop captures its step once and replays it every
    step, and the run ends where the eager one does (the learning rate travels as a 0-d
    array the graph reads)."""
    numpy = get_backend("numpy")
    captures, replays = [], []
    backend = dataclasses.replace(numpy, capture_step=graph_like_capture(captures, replays))
    data = mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset(preset, hidden=(16,), batch_size=64 if preset == "mlp"
                                     else 0, epochs=3, dev_size=200, log_every=1)
    captured = train(config, backend, data, progress=False)
    eager = train(config, numpy, data, progress=False)
    assert captures == [arrays] and len(replays) == captured.state.step == steps
    helpers.assert_same_run(captured.params, eager.params, "float32", steps)
    for mine, theirs in zip(captured.history, eager.history, strict=True):
        assert parity.relative_error(mine["loss"], theirs["loss"]) <= parity.tolerance(
            "float32", mine["step"])
