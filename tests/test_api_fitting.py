"""``multinet.fit`` (``multinet/api/fitting.py``): what a notebook user calls to train, its
errors named as Python arguments (never as flags), and a summary that is what the command
prints."""

import json
import os
import re

import numpy as np
import pytest

import helpers
import multinet
from helpers import data_args, is_sample, small
from multinet import InvalidArgument, MultinetError
from multinet.cli import main
from multinet.errors import BackendUnavailable
from multinet.layers import param_shapes, parse_layer
from multinet.training.config import PRESETS


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
    (dict(iterations=-1), "iterations= must be an integer >= 0, got -1"),  # not "epochs="
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


# --- The dataset, devices and flags given to fit; the results a saved run keeps ----------

def _bad(data, **arrays):
    import dataclasses

    return dataclasses.replace(data, **arrays)


@pytest.mark.parametrize("case", ["label 10", "label -1", "float labels", "counts differ",
                                  "scaled images", "empty test set", "flat images",
                                  "a list", "test labels 255"])
def test_fit_refuses_a_dataset_it_cannot_train_on_before_any_work(mnist, no_work, case):
    """Each was trained on without a word (labels 10, -1 or floats, counts that differ,
    images divided by 255 twice), gave ``test_accuracy=nan``, or a traceback from deep
    inside."""
    from multinet.errors import DatasetError

    data = small(mnist)
    labels, images = data.train_labels.astype(np.int64), data.train_images
    bad = {"label 10": dict(train_labels=np.where(labels == 0, 10, labels)),
           "label -1": dict(train_labels=np.where(labels == 0, -1, labels)),
           "float labels": dict(train_labels=labels.astype(float)),
           "counts differ": dict(train_labels=labels[:-1]),
           "scaled images": dict(train_images=images / 255.0),
           "empty test set": dict(test_images=data.test_images[:0],
                                  test_labels=data.test_labels[:0]),
           "flat images": dict(train_images=images.reshape(len(images), 784)),
           "a list": dict(train_images=list(images)),
           "test labels 255": dict(test_labels=np.full_like(data.test_labels, 255))}[case]
    with pytest.raises(DatasetError) as info:
        multinet.fit(_bad(data, **bad), iterations=1, dev_size=200, progress=False)
    message = str(info.value)
    assert f"dataset.{next(iter(bad))}" in message  # the array at fault, named
    assert "\n" not in message and "--" not in message


def test_a_training_set_too_small_for_the_dev_split_is_named(mnist):
    with pytest.raises(InvalidArgument, match=r"the training set holds 500 images: too few "
                                              r"to hold 1000 out as the dev set \(fit's "
                                              r"dev_size=1000\)"):
        multinet.fit(helpers.mnist_slice(mnist, 500, 100), iterations=1, progress=False)


def test_files_too_few_for_the_dev_split_are_one_line_from_the_command(tmp_path, capsys):
    """Eight images of one's own (``--no-verify``) were a ``ValueError`` traceback."""
    folder = helpers.write_files(tmp_path / "eight", helpers.TINY_FILES)
    code = main(["train", "--data-dir", str(folder), "--no-verify", "--iterations", "1"])
    helpers.one_line_error(code, capsys.readouterr(), "the training set holds 8 images: too "
                           "few to hold 1000 out as the dev set (fit's dev_size=1000)")


@pytest.mark.parametrize("arguments, message", [
    (dict(devices=0), "devices must be a number of devices >= 1, 'all' or None; got 0"),
    (dict(devices=-2), "got -2"),
    (dict(devices="two"), "got 'two'"),
    (dict(devices=1.5), "got 1.5"),
    (dict(devices=True), "got True"),
    (dict(compile="yes"), "compile must be True or False, got 'yes'"),
    (dict(save=3), "save must be a file name (a str or a pathlib.Path) or None, got int"),
    (dict(metrics=["m.jsonl"]), "metrics must be a file name (a str or a pathlib.Path) or "
                                "None, got list"),
    (dict(plots=b"plots"), "plots must be a file name"),
    (dict(force="no"), "force must be True or False, got 'no'"),
])
def test_devices_and_flags_that_mean_nothing_are_refused_before_any_work(
        mnist, no_work, arguments, message):
    """``fit(devices=0)`` trained on one device as if nothing had been asked."""
    with pytest.raises(InvalidArgument) as info:
        multinet.fit(small(mnist), iterations=1, progress=False, **arguments)
    assert message in str(info.value)


@pytest.mark.parametrize("progress", ["no", "widget", 2, None])
def test_a_progress_that_is_no_display_is_refused_before_any_work(mnist, no_work, progress):
    with pytest.raises(InvalidArgument, match=r"progress must be True, False, 'lines' or 'bar', got"):
        multinet.fit(small(mnist), iterations=1, progress=progress)


def test_a_saved_run_keeps_its_results_and_shows_them(mnist, tmp_path):
    """``multinet.load(...).summary["test_accuracy"]`` was a ``KeyError`` right after the
    README used that key on ``fit``'s run: both ``save=`` and ``Run.save`` keep them."""
    run = multinet.fit(small(mnist), iterations=3, dev_size=200, progress=False,
                       save=tmp_path / "during.st")
    run.save(tmp_path / "after.st")
    for name in ("during.st", "after.st"):
        again = multinet.load(tmp_path / name)
        for key in ("train_accuracy", "dev_accuracy", "test_accuracy", "train_samples"):
            assert again.summary[key] == run.summary[key], key
        assert f"test_accuracy={run.summary['test_accuracy']:.4f}" in repr(again)
        assert again.evaluate(run.dataset)["test_accuracy"] == again.summary["test_accuracy"]


def test_a_checkpoint_without_results_says_how_to_measure_them(mnist, tmp_path):
    from multinet import checkpoint

    run = multinet.fit(small(mnist), iterations=2, dev_size=200, progress=False)
    checkpoint.save(tmp_path / "old.st", run.config, run.state, backend=run.backend,
                    dataset_name="mnist", dataset_sha256=run.dataset_sha256)  # no summary
    again = multinet.load(tmp_path / "old.st")
    with pytest.raises(KeyError, match=r"records no results .* run.evaluate\(\) measures"):
        again.summary["test_accuracy"]
    with pytest.raises(KeyError):
        again.summary["no such key"]
    assert "test_accuracy" not in repr(again) and again.summary["iterations"] == 2


def test_fit_and_run_save_check_what_they_overwrite_and_take_force(sample, tmp_path):
    """From Python as from the command line: another kind of file is replaced only with
    ``force=True``, never a special file, never the checkpoint resumed by the metrics,
    and the refusals come before any work."""
    from multinet.files import OutputError

    data = helpers.mnist_slice(sample, 1200, 100)
    notes, picture = tmp_path / "notes.txt", tmp_path / "p.png"
    notes.write_text("my notes\n")
    os.mkfifo(tmp_path / "fifo")
    for kwargs, message in (
            ({"save": notes}, "save='.*notes.txt': exists and is not a checkpoint "
                              r"\(safetensors\) but a file multinet does not write; it "
                              "would be replaced: give another file name, or force=True"),
            ({"metrics": tmp_path / "fifo"}, r"metrics='.*fifo': is a named pipe \(FIFO\)"),
            ({"save": "/dev/null", "force": True}, "save='/dev/null': is a device")):
        with pytest.raises(OutputError, match=message):
            multinet.fit(data, progress=False, iterations=1, dev_size=200, **kwargs)
    assert notes.read_text() == "my notes\n"
    run = multinet.fit(data, progress=False, iterations=1, dev_size=200, save=notes,
                       force=True)
    assert multinet.load(notes).summary["iterations"] == 1
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(OutputError, match="is not a checkpoint .safetensors. but a PNG "
                                          "picture"):
        run.save(picture)
    assert run.save(picture, force=True) == picture
    with pytest.raises(OutputError, match="is the checkpoint the run resumes"):
        multinet.fit(data, resume=notes, iterations=2, save=tmp_path / "b.st",
                     metrics=notes, force=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "notes.txt", "p.png"]


def test_results_that_cannot_be_added_to_the_checkpoint_lose_nothing(mnist, tmp_path,
                                                                      monkeypatch):
    """The loop saves the final state before the test set measures it; the results are
    added after. Where that write fails, the file holds the final state, and the error
    hands over the finished run as a failure of the plots does."""
    from multinet import checkpoint
    from multinet.api.fitting import PlotsNotWritten
    from multinet.files import OutputError

    real_save = checkpoint.save

    def disk_full_at_the_end(path, *args, summary=None, **kwargs):
        if summary is not None:
            raise OutputError(f"cannot write the checkpoint {path}: No space left on device",
                              cause="No space left on device")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", disk_full_at_the_end)
    with pytest.raises(PlotsNotWritten, match=r"training finished but its results were not "
                       r"added to the checkpoint .*a.st, which holds the trained network: "
                       r"No space left on device") as info:
        multinet.fit(small(mnist), iterations=3, dev_size=200, progress=False,
                     save=tmp_path / "a.st")
    again = multinet.load(tmp_path / "a.st")
    assert again.summary["iterations"] == 3 == info.value.run.summary["iterations"]
    assert "test_accuracy" not in again.summary


# --- Networks of layers ----------------------------------------------------------------

def test_fit_trains_the_cnn_preset_and_layers_given_from_python(mnist):
    """``preset="cnn"`` trains the preset's convolutional network (one step here);
    ``layers=`` (a list, or one string with commas) trains any stack, the output layer
    added, whatever the preset; the summary describes the network, which has no
    perceptron's ``sizes``."""
    data = helpers.mnist_slice(mnist, 250, 20)
    cnn = multinet.fit(data, preset="cnn", epochs=1, dev_size=100, progress=False)
    expected = param_shapes(cnn.config.network_layers(), 784)
    assert {k: tuple(v.shape) for k, v in cnn.params.items()} == expected
    assert cnn.summary["iterations"] == 1 and cnn.summary["sizes"] is None
    assert cnn.summary["network"] == ", ".join(
        [*(str(parse_layer(layer)) for layer in PRESETS["cnn"]["layers"]), "dense:10"])
    assert f"layers={cnn.summary['network']!r}" in repr(cnn)
    tiny = multinet.fit(data, layers=", ".join(helpers.TINY_CNN), iterations=2, dev_size=100,
                        progress=False)
    assert tiny.config.preset == "notebook" and tiny.config.hidden == ()
    assert tiny.config.layers == ("conv:2:3x3:valid", "relu", "maxpool:2", "flatten")
    assert tiny.params["W1"].shape == (3, 3, 1, 2) and tiny.params["W2"].shape == (338, 10)
    assert tiny.summary["network"].endswith("flatten, dense:10")
    assert len(tiny.history) == 1 and np.isfinite(tiny.history[-1]["loss"])


@pytest.mark.parametrize("overrides, fragment", [
    (dict(layers=["conv:0:3x3"]), "layer 'conv:0:3x3': its output channels must be"),
    (dict(layers=["conv:2:29x29"]), "a 29x29 kernel does not fit 28x28 images"),
    (dict(layers=["relu"], hidden=[8]), "hidden and layers both describe the network"),
    (dict(layers=5), "layers must be a list of layer texts"),
])
def test_bad_layers_from_python_are_one_invalid_argument_before_any_work(overrides, fragment,
                                                                          no_work):
    with pytest.raises(InvalidArgument, match=re.escape(fragment)):
        multinet.fit("mnist", progress=False, **overrides)
