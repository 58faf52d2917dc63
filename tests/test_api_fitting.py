"""``multinet.fit`` (``multinet/api/fitting.py``): what a notebook user calls to train, its
errors named as Python arguments (never as flags), and a summary that is what the command
prints."""

import json
import re

import numpy as np
import pytest

import helpers
import multinet
from helpers import data_args, is_sample, small
from multinet import InvalidArgument, MultinetError
from multinet.cli import main
from multinet.errors import BackendUnavailable


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_the_readme_example_works_as_written(backend, mnist, tmp_path, monkeypatch):
    """The README's example (From Python), on the data the suite has (full or sample)."""
    try:
        multinet.get_backend(backend)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.chdir(tmp_path)
    data = mnist
    run = multinet.fit(data, preset="notebook", backend=backend, iterations=100,
                       progress=False)
    accuracy = run.summary["test_accuracy"]
    labels = run.predict(data.test_images[:10])
    run.save("run.safetensors")
    again = multinet.load("run.safetensors", backend="numpy")
    # 100 full-batch steps of the notebook's net: about 0.7 (chance is 0.1).
    assert 0.5 < accuracy <= 1 and run.summary["iterations"] == 100
    assert labels.shape == (10,) and labels.dtype == np.int64
    assert np.array_equal(again.predict(data.test_images[:10]), labels)
    assert again.backend.name == "numpy" and again.config == run.config
    assert again.summary["iterations"] == 100 and again.history == run.history


def test_summary_is_what_the_cli_prints_as_json(mnist, capsys):
    assert main(["train", *data_args(mnist), "--iterations", "3", "--hidden", "8",
                 "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    run = multinet.fit(mnist, iterations=3, hidden=8, progress=False)
    timing = {"seconds", "samples_per_second"}
    assert set(run.summary) == set(printed)
    assert {k: v for k, v in run.summary.items() if k not in timing} == {
        k: v for k, v in printed.items() if k not in timing}


def test_run_records_history_params_and_presets(short_run):
    run = short_run
    assert [r["epoch"] for r in run.history] == [5, 10, 15, 20]
    assert set(run.history[0]) >= {"epoch", "step", "lr", "loss", "train_accuracy",
                                   "dev_accuracy", "seconds"}
    assert run.params["W1"].shape == (784, 10) and run.params["b1"].shape == (10,)
    assert run.config.preset == "notebook" and run.config.lr == 0.2
    assert run.summary["sizes"] == [784, 10, 10] and run.summary["train_samples"] == 1000
    assert "notebook" in repr(run) and "test_accuracy=" in repr(run)
    mlp = multinet.fit(small(short_run.dataset), preset="mlp", hidden=32, epochs=1,
                       dev_size=200, progress=False)
    assert mlp.config.optimizer == "adam" and mlp.config.hidden == (32,)
    assert mlp.summary["sizes"] == [784, 32, 10]


def test_load_dataset_reads_a_folder_and_fit_loads_mnist_when_given_none(mnist, monkeypatch):
    sample = is_sample(mnist)
    data = multinet.load_dataset("mnist", mnist.directory, download=False, verify=not sample)
    assert data.train_images.shape[1:] == (28, 28) and data.train_images.dtype == np.uint8
    assert np.array_equal(data.test_labels, mnist.test_labels)
    asked = []

    def load_dataset(name="mnist", data_dir=None, **options):
        asked.append(name)
        return small(mnist)

    monkeypatch.setattr(multinet.data, "load_dataset", load_dataset)
    run = multinet.fit(iterations=1, dev_size=200, progress=False)
    assert asked == ["mnist"] and run.dataset_name == "mnist"


# --- Arguments refused before the work --------------------------------------------------

@pytest.mark.parametrize("arguments, error, message", [
    (dict(lr=-1.0), InvalidArgument, "lr must be a finite number > 0"),
    (dict(preset="resnet"), InvalidArgument, "preset='resnet'"),
    (dict(iterations=5, epochs=5), InvalidArgument, "are the same count (passes over the "
                                                     "training set); give one"),
    (dict(preset="mlp", iterations=5), InvalidArgument, "batch_size=, or preset='mlp'"),
    (dict(momentum=0.5), InvalidArgument, "momentum= is the coefficient of "
                                          "optimizer='momentum'; this run uses sgd"),
    (dict(iterations=0, metrics="m.jsonl"), InvalidArgument, "iterations=0 trains nothing"),
    (dict(learning_rate=0.1), TypeError, "unexpected keyword argument 'learning_rate'"),
    (dict(devices=2), MultinetError, "devices=2: backend 'numpy' runs on one device"),
    (dict(backend=3), InvalidArgument, "backend must be a name or a Backend"),
])
def test_bad_arguments_are_named_as_python_arguments(short_run, arguments, error, message):
    with pytest.raises(error, match=re.escape(message)) as info:
        multinet.fit(short_run.dataset, progress=False, **arguments)
    assert "--" not in str(info.value)


@pytest.mark.parametrize("overrides, fragment", [
    (dict(epochs=1.5), "epochs= must be an integer, got 1.5"),
    (dict(iterations=True), "iterations= must be an integer, got True"),
    (dict(iterations=2, lr="0.1"), "lr must be a number, got '0.1'"),
    (dict(iterations=2, lr=True), "lr must be a number, got True"),
    (dict(iterations=2, hidden="32"), "hidden must be a sequence of integers"),
    (dict(iterations=2, hidden=[32.7]), "hidden must be a sequence of integers"),
    (dict(iterations=2, seed=1.5), "seed must be an integer, got 1.5"),
    (dict(iterations=2, log_every=1.5), "log_every must be an integer, got 1.5"),
    (dict(iterations=2, optimizer=5), "optimizer must be a string, got 5"),
])
def test_hyperparameters_of_the_wrong_type_are_refused_before_the_work(
        sample, tmp_path, overrides, fragment):
    """``fit(epochs=1.5)`` trained and wrote a checkpoint that its own loader refuses;
    ``hidden="32"`` trained a 784-3-2-10 network; ``seed=1.5`` failed in NumPy."""
    import multinet
    from multinet.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=fragment.replace("(", r"\(")):
        multinet.fit(sample, progress=False, save=tmp_path / "a.st", **overrides)
    assert not (tmp_path / "a.st").exists()


def test_numpy_numbers_as_hyperparameters_train_and_save_a_loadable_checkpoint(sample,
                                                                               tmp_path):
    """``fit(iterations=np.int64(2), lr=np.float32(0.1))`` raised ``TypeError: Object of
    type int64 is not JSON serializable`` at the first save, after the training."""
    import multinet

    run = multinet.fit(helpers.mnist_slice(sample, 1200, 100), progress=False,
                       iterations=np.int64(2), lr=np.float32(0.1), hidden=np.int32(12),
                       seed=np.uint8(3), dev_size=np.int16(200), save=tmp_path / "a.st")
    config = multinet.load(tmp_path / "a.st").config
    assert config == run.config and config.epochs == 2 and config.hidden == (12,)
    assert type(config.epochs) is int and type(config.lr) is float
