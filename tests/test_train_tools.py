"""Training as a tool: optimizers, presets, checkpoints, resume, divergence, evaluate,
predict and plots."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers
from helpers import data_args
from helpers import run_cli as cli
from multinet import checkpoint as ckpt
from multinet import optim, parity
from multinet.errors import MultinetError
from multinet.registry import get_backend
from multinet.errors import TrainingDiverged, TrainingInterrupted
from multinet.training.config import PRESETS, TrainConfig
from multinet.training.loop import train

SMALL = dict(preset="mlp", hidden=(32,), batch_size=64, epochs=4, dev_size=200, log_every=1)


def mnist_slice(dataset):
    """2,048 training images (the committed sample's all, the full files' first), so a run
    is the same with either: less the dev split, 1,848 images, 28 batches of 64 an epoch."""
    return helpers.mnist_slice(dataset, 2048, 500)


def small_config(**overrides):
    return TrainConfig.from_preset(**{**SMALL, **overrides})


def assert_same_run(actual, expected, dtype, steps):
    """Equal within the parity policy's tolerance for ``steps`` steps. Not bit for bit:
    BLAS may round differently depending on where arrays happen to sit in memory, which
    differs between a resumed process and an uninterrupted one."""
    error = parity.max_relative_error(actual, expected)
    assert error <= parity.tolerance(dtype, steps), error


def trained_checkpoint(mnist, tmp_path, epochs, dataset_sha256=None):
    """A short numpy run on the MNIST slice, saved: ``(path, result)``."""
    numpy = get_backend("numpy")
    config = small_config(epochs=epochs)
    result = train(config, numpy, mnist_slice(mnist), progress=False)
    path = ckpt.save(tmp_path / "c.safetensors", config, result.state, backend=numpy,
                     dataset_name="mnist", dataset_sha256=dataset_sha256 or {})
    return path, result


def host(params, backend):
    return {k: np.asarray(backend.to_numpy(v)) for k, v in params.items()}


def test_presets_and_overrides():
    assert TrainConfig.from_preset("notebook") == TrainConfig()
    mlp = TrainConfig.from_preset("mlp", lr=3e-4, hidden=None)
    assert mlp.hidden == PRESETS["mlp"]["hidden"] and mlp.lr == 3e-4
    assert mlp.optimizer == "adam" and mlp.init == "he" and mlp.batch_size == 128
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="rmsprop")


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("momentum", 0.05), ("adam", 2e-3)])
def test_every_optimizer_learns_on_every_backend(backend, optimizer, lr, mnist):
    config = small_config(optimizer=optimizer, lr=lr, epochs=3, weight_decay=1e-4)
    result = train(config, backend, mnist_slice(mnist), progress=False)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0] and result.summary["test_accuracy"] > 0.75


def test_optimizer_state_is_new_arrays_and_adam_matches_the_formula():
    xp = get_backend("numpy").xp
    params = {"W1": xp.asarray([[1.0, -2.0]]), "b1": xp.asarray([0.5])}
    grads = {"W1": xp.asarray([[0.1, 0.2]]), "b1": xp.asarray([-0.3])}
    opt = optim.Optimizer("adam")
    state = optim.init_state(opt, params)
    new, new_state = optim.update(opt, params, grads, state, 0.01)
    assert float(state["t"]) == 0 and float(new_state["t"]) == 1
    # First Adam step moves each parameter by lr * sign(g) (up to eps).
    np.testing.assert_allclose(new["W1"], [[0.99, -2.01]], rtol=1e-6)
    np.testing.assert_allclose(new["b1"], [0.51], rtol=1e-6)
    assert params["W1"][0, 0] == 1.0  # nothing mutated


def test_cosine_schedule():
    assert optim.learning_rate(1.0, "cosine", 0, 100) == 1.0
    assert optim.learning_rate(1.0, "cosine", 50, 100) == pytest.approx(0.5)
    assert optim.learning_rate(1.0, "constant", 99, 100) == 1.0


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


def test_a_checkpoint_evaluates_the_same_on_every_backend(mnist, tmp_path):
    from multinet.evaluation import evaluate

    path, _ = trained_checkpoint(mnist, tmp_path, epochs=2)
    loaded = ckpt.load(path)
    accuracies = set()
    for name in ("numpy", "strict", "jax"):
        try:
            backend = get_backend(name)
        except MultinetError:
            continue
        accuracies.add(evaluate(loaded.params, backend, mnist, loaded.config.dtype)
                       ["test_accuracy"])
    assert len(accuracies) == 1


def test_checkpoint_holds_everything_a_resume_needs(mnist, tmp_path):
    path, result = trained_checkpoint(mnist, tmp_path, epochs=1,
                                      dataset_sha256={"train_images": "abc"})
    loaded = ckpt.load(path)
    assert loaded.config == small_config(epochs=1)
    assert set(loaded.opt_state) == {"t", "m", "v"} and set(loaded.opt_state["m"]) == {
        "W1", "b1", "W2", "b2"}
    meta = loaded.metadata
    assert meta["progress"] == {"epoch": 1, "batch": 0, "step": 28,
                                "seconds": result.state.seconds}
    assert meta["dataset"]["content_sha256"] == {"train_images": "abc"}
    assert "epoch_order" in meta["rng"] and len(meta["history"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left


def test_bad_checkpoint_files_are_clear_errors(tmp_path):
    with pytest.raises(MultinetError, match="no such checkpoint"):
        ckpt.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MultinetError, match="not a readable safetensors"):
        ckpt.load(junk)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(MultinetError, match="not a multinet checkpoint"):
        ckpt.load(tmp_path / "other.safetensors")


def test_train_save_evaluate_predict_plot_from_the_command_line(mnist, tmp_path):
    data = [*data_args(mnist)]
    # One epoch of the full files is 461 steps; the committed sample leaves 1,048 training
    # images after the dev split, 8 steps an epoch, and only 512 test images.
    epochs, least = (20, 0.8) if helpers.is_sample(mnist) else (1, 0.9)
    tested = len(mnist.test_labels)
    path = tmp_path / "mlp.safetensors"
    trained = cli("train", "--preset", "mlp", "--hidden", "32", "--epochs", str(epochs),
                  "--save", str(path), "--metrics", str(tmp_path / "m.jsonl"), "--plots",
                  str(tmp_path / "plots"), "--json", "--no-progress", *data)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["test_accuracy"] > least and summary["checkpoint"] == str(path)
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == epochs
    for name in ("training_curves.png", "predictions.png", "confusion_matrix.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    evaluated = cli("evaluate", str(path), "--backend", "strict", "--json", *data)
    report = json.loads(evaluated.stdout)
    assert report["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == tested
    assert np.trace(matrix) / tested == pytest.approx(report["test_accuracy"])
    text = cli("evaluate", str(path), *data)
    assert "confusion matrix" in text.stdout and text.returncode == 0

    shown = cli("predict", str(path), "--index", "0", *data)
    assert shown.returncode == 0 and "label: 7" in shown.stdout and "@@" in shown.stdout

    plotted = cli("plot", str(path), "--out", str(tmp_path / "again"), *data)
    assert plotted.returncode == 0 and len(list((tmp_path / "again").glob("*.png"))) == 3


def test_predict_an_image_file(mnist, tmp_path):
    pytest.importorskip("PIL", reason="Pillow is not installed")
    from PIL import Image

    path, _ = trained_checkpoint(mnist, tmp_path, epochs=2)
    digit = mnist.test_images[0]  # a 7
    # Dark ink on white paper, four times the size: it is inverted and resized back.
    Image.fromarray(255 - digit).resize((112, 112)).save(tmp_path / "seven.png")
    result = cli("predict", str(path), "--image", str(tmp_path / "seven.png"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["prediction"] == 7
    bad = cli("predict", str(path), "--image", str(tmp_path / "c.safetensors"))
    assert bad.returncode == 2 and "cannot read the picture" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["evaluate", "nowhere.safetensors"], "no such checkpoint"),
    (["train", "--resume", "nowhere.safetensors"], "no such checkpoint"),
    (["predict", "nowhere.safetensors"], "exactly one of --index"),
])
def test_cli_errors_are_one_line(args, message):
    result = cli(*args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_refuses_to_change_the_configuration(mnist, tmp_path):
    path, _ = trained_checkpoint(mnist, tmp_path, epochs=1)
    refused = cli("train", "--resume", str(path), "--lr", "0.5",
                  *data_args(mnist))
    assert refused.returncode == 2 and "--lr" in refused.stderr


def test_ctrl_c_from_the_command_line_saves_and_resume_finishes(mnist, tmp_path):
    """A real SIGINT to a running ``multinet train``, then ``--resume``: the result is the
    uninterrupted run's."""
    data = [*data_args(mnist), "--no-progress"]
    args = ["train", "--preset", "mlp", "--hidden", "16", "--epochs", "6", *data]
    full = tmp_path / "full.safetensors"
    assert cli(*args, "--save", str(full)).returncode == 0

    part = tmp_path / "part.safetensors"
    metrics = tmp_path / "m.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "multinet", *args, "--save", str(part),
                                "--metrics", str(metrics)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (not metrics.exists() or not metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 130, stderr
    assert "checkpoint saved to" in stderr and "Traceback" not in stderr
    assert cli("train", "--resume", str(part), *data).returncode == 0
    a, b = ckpt.load(full), ckpt.load(part)
    assert b.metadata["progress"]["epoch"] == 6
    assert_same_run(b.params, a.params, "float32", b.metadata["progress"]["step"])


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_mlp_preset_reaches_98_percent(backend_name, mnist):
    result = train(TrainConfig.from_preset("mlp"), get_backend(backend_name), mnist,
                   progress=False)
    assert result.summary["test_accuracy"] >= 0.98


def test_a_whole_epoch_compiled_as_one_program_matches_step_by_step(rng):
    """JAX runs a minibatch epoch as one ``lax.scan``; the result is the step-by-step one."""
    pytest.importorskip("jax", reason="compile_scan is JAX's")
    from multinet.initializers import init_params
    from multinet.training.steps import make_epoch_runner, make_minibatch_step

    jax = get_backend("jax")
    optimizer = optim.Optimizer("adam")
    params = init_params((20, 16, 10), seed=0, backend=jax, dtype="float32", init="he")
    state = optim.init_state(optimizer, params)
    images = jax.asarray(rng.integers(0, 256, (96, 20), dtype=np.uint8))
    labels = jax.asarray(rng.integers(0, 10, 96), "int32")
    rows = jax.asarray(rng.permutation(96).reshape(6, 16), "int32")
    lrs = [optim.learning_rate(1e-2, "cosine", s, 6) for s in range(6)]

    scanned, _, loss_sum, _ = make_epoch_runner(jax, optimizer, "float32")(
        params, state, images, labels, rows, lrs)
    step = jax.compile(make_minibatch_step(optimizer))
    p, s, total = params, state, 0.0
    for i, lr in enumerate(lrs):
        p, s, loss, _ = step(p, s, images, labels, rows[i, :], lr)
        total += float(loss)
    assert parity.max_relative_error(host(scanned, jax), host(p, jax)) \
        <= parity.tolerance("float32", 6)
    assert float(loss_sum) == pytest.approx(total, rel=1e-5)
    assert make_epoch_runner(get_backend("numpy"), optimizer, "float32") is None
