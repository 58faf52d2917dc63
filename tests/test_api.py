"""The Python API (``multinet.load_dataset``, ``fit``, ``Run``, ``load``): what a notebook
user calls, its errors in Python's words, and that the CLI prints the same results."""

import json
import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import multinet
import helpers
from helpers import data_args, is_sample, mnist_slice
from multinet import InvalidArgument, MultinetError
from multinet.cli import main
from multinet.errors import BackendUnavailable, DatasetNotFound
from multinet.parity import max_relative_error, tolerance

#: Figures are drawn off-screen in the tests.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:matplotlib")


def small(mnist):
    return mnist_slice(mnist, 1200, 300)


@pytest.fixture(scope="module")
def short_run(mnist):
    """A 20-step notebook run on a slice of MNIST, numpy."""
    return multinet.fit(small(mnist), iterations=20, dev_size=200, log_every=5,
                        progress=False)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_the_issues_example_works_as_written(backend, mnist, tmp_path, monkeypatch):
    """The "Done when" lines of issue 13, on the data the suite has (full or sample)."""
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


def test_predict_accepts_both_layouts_and_refuses_floats(short_run):
    images = short_run.dataset.test_images[:50]
    labels = short_run.predict(images)
    assert labels.shape == (50,) and labels.dtype == np.int64
    assert np.array_equal(short_run.predict(images.reshape(50, 784)), labels)
    assert np.array_equal(short_run.predict(list(images)), labels)
    probabilities = short_run.probabilities(images)
    assert probabilities.shape == (50, 10)
    assert np.allclose(probabilities.sum(axis=1), 1)
    assert np.array_equal(probabilities.argmax(axis=1), labels)
    with pytest.raises(InvalidArgument, match="uint8"):
        short_run.predict(images / 255.0)
    with pytest.raises(InvalidArgument, match=r"image\[None\]"):
        short_run.predict(images[0])
    with pytest.raises(InvalidArgument, match=r"\(n, 28, 28\) or \(n, 784\)"):
        short_run.predict(images[:, :20, :20])


def test_predict_refuses_784_pixels_that_are_no_28_by_28_image_and_takes_none(short_run):
    images = short_run.dataset.test_images[:4]
    with pytest.raises(InvalidArgument, match=r"\(n, 28, 28\) or \(n, 784\); got \(4, 14, 56\)"):
        short_run.predict(images.reshape(4, 14, 56))
    for empty in (images[:0], images[:0].reshape(0, 784)):
        assert short_run.predict(empty).shape == (0,)
        assert short_run.probabilities(empty).shape == (0, 10)


def test_plot_predictions_names_its_bad_arguments(short_run):
    pytest.importorskip("matplotlib")
    images = short_run.dataset.test_images[:4]
    for call, message in (
            (lambda: short_run.plot_predictions(count=0), "count must be an integer >= 1, "
                                                          "got 0"),
            (lambda: short_run.plot_predictions(count=-1), "got -1"),
            (lambda: short_run.plot_predictions(images[:0]), "no image to plot"),
            (lambda: short_run.plot_predictions(images, [7, 2, 1]),
             "labels must be 4 integer labels, one per image, shape (4,); got int64 (3,)"),
            (lambda: short_run.plot_predictions(images, [7.0, 2.0, 1.0, 0.0]), "got float64"),
            (lambda: short_run.plot_predictions(images, [7, 2, 1, 10]),
             "labels must be classes 0-9, got 1..10")):
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            call()


def test_evaluate_agrees_with_the_summary(short_run):
    result = short_run.evaluate()
    assert result["test_accuracy"] == short_run.summary["test_accuracy"]
    assert np.asarray(result["confusion_matrix"]).sum() == result["test_samples"] == 300
    assert np.array_equal(result["predictions"],
                          short_run.predict(short_run.dataset.test_images))


def test_a_saved_run_loads_on_another_backend(short_run, tmp_path):
    path = short_run.save(tmp_path / "run.safetensors")
    again = multinet.load(path, backend="strict")
    assert again.backend.name == "strict" and again.dataset is None
    assert again.summary["checkpoint"] == str(path) and "test_accuracy" not in again.summary
    images = short_run.dataset.test_images
    assert np.array_equal(again.predict(images), short_run.predict(images))
    assert again.evaluate(short_run.dataset)["test_accuracy"] == (
        short_run.summary["test_accuracy"])


@pytest.mark.parametrize("source", ["run", "path"])
def test_resume_ends_where_an_uninterrupted_run_ends(mnist, tmp_path, source):
    """With a constant learning rate (a cosine schedule spans the run's total steps, so
    asking for more epochs changes it), epochs 1 then 2 are epochs 0 to 2."""
    data = small(mnist)
    options = dict(preset="mlp", hidden=16, batch_size=64, schedule="constant", dev_size=200,
                   progress=False)
    whole = multinet.fit(data, epochs=2, **options)
    half = multinet.fit(data, epochs=1, **options)
    start = half if source == "run" else half.save(tmp_path / "half.safetensors")
    resumed = multinet.fit(data, resume=start, epochs=2, progress=False)
    steps = resumed.summary["iterations"]
    assert steps == whole.summary["iterations"] and len(resumed.history) == 2
    assert max_relative_error(resumed.params, whole.params) <= tolerance("float32", steps)
    assert len(half.history) == 1 and half.state.epoch == 1  # the first run is untouched


def test_resume_refuses_to_change_the_configuration(short_run):
    with pytest.raises(InvalidArgument) as info:
        multinet.fit(short_run.dataset, resume=short_run, lr=0.5, hidden=32)
    message = str(info.value)
    assert "lr=" in message and "hidden=" in message and "--" not in message
    with pytest.raises(InvalidArgument, match="dtype='float64' cannot resume"):
        multinet.fit(short_run.dataset, resume=short_run, dtype="float64")
    with pytest.raises(InvalidArgument, match=r"already at epoch 20 \(step 20\); epochs=10"):
        multinet.fit(short_run.dataset, resume=short_run, iterations=10)
    with pytest.raises(MultinetError, match="trained on mnist, not fashion-mnist"):
        multinet.fit("fashion-mnist", resume=short_run)


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


def test_missing_data_error_names_data_dir_not_a_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("MULTINET_DATA", raising=False)
    with pytest.raises(DatasetNotFound) as info:
        multinet.load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "data_dir=" in message and "--" not in message


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


def test_figures_show_the_run(short_run, tmp_path):
    figure = pytest.importorskip("matplotlib.figure")
    curves = short_run.plot_curves()
    assert isinstance(curves, figure.Figure) and len(curves.axes) == 2
    loss = curves.axes[0].lines[0].get_ydata()
    assert list(loss) == [r["loss"] for r in short_run.history]
    shown = short_run.plot_predictions()
    titles = [ax.get_title() for ax in shown.axes if ax.get_title()]
    predicted = short_run.predict(short_run.dataset.test_images[:8])
    assert len(titles) == 8
    assert [t.split()[0] for t in titles] == [str(p) for p in predicted]
    wrong = [t for t in titles if "true" in t]
    truth = short_run.dataset.test_labels[:8]
    assert len(wrong) == int(np.sum(predicted != truth))
    mine = short_run.plot_predictions(short_run.dataset.test_images[:3])
    assert sum(bool(ax.get_title()) for ax in mine.axes) == 3
    assert short_run.plot_confusion().axes[0].get_title() == "confusion matrix (test set)"
    written = short_run.save_plots(tmp_path / "plots")
    assert [p.name for p in written] == ["training_curves.png", "predictions.png",
                                         "confusion_matrix.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_help_lists_and_explains_the_api():
    text = pydoc.render_doc(multinet, renderer=pydoc.plaintext)
    for name in ("load_dataset", "fit", "load", "Run", "init_params", "backend_names"):
        assert name in text
    assert "__getattr__" not in text
    for name in multinet.__all__:
        assert getattr(multinet, name).__doc__, name
    for name in ("predict", "probabilities", "evaluate", "save", "plot_curves",
                 "plot_predictions", "plot_confusion"):
        assert getattr(multinet.Run, name).__doc__, name
    for function in (multinet.Run.predict, multinet.Run.probabilities):
        assert "(n, 28, 28)" in function.__doc__ and "uint8" in function.__doc__
    for function in (multinet.load_dataset, multinet.fit, multinet.load,
                     multinet.Run.predict, multinet.Run.save, multinet.init_params):
        assert "Raises" in function.__doc__, function.__name__


def test_a_name_multinet_lacks_is_an_attribute_error():
    """``hasattr(multinet, "a.b")`` raised ModuleNotFoundError: the name was looked up
    as a submodule's, ``multinet.a.b``."""
    for name in ("nonexistent", "a.b", "fit.x", "", "Run.predict", "_SOURCES.x"):
        assert not hasattr(multinet, name), name
    with pytest.raises(AttributeError, match="module 'multinet' has no attribute 'nope'"):
        multinet.nope  # noqa: B018


def test_importing_multinet_imports_nothing_and_its_api_no_array_library():
    """``import multinet`` imports neither NumPy nor any module of multinet (the command
    imports the package before it can catch a Ctrl-C); the API's names bring NumPy, the
    host's arrays, but no backend's array library, no optional extra, and no HTTP stack
    until a file is downloaded."""
    code = ("import sys, multinet\n"
            "print(sorted(m for m in sys.modules if m == 'numpy' or m == 'tqdm'\n"
            "             or m.startswith('multinet.') and m not in ('multinet._version', "
            "'multinet.backends')))\n"
            "multinet.fit, multinet.Run, multinet.load, multinet.load_dataset\n"
            f"multinet.load_dataset(data_dir={str(helpers.SAMPLE_MNIST)!r}, verify=False)\n"
            "print(sorted(m for m in ('jax', 'torch', 'mlx', 'cupy', 'array_api_strict', "
            "'matplotlib', 'PIL', 'onnx', 'ndonnx', 'pooch', 'requests') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "[]"], result.stdout


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_notebook.py"


def test_the_example_script_trains_and_says_one_line_without_data(mnist, tmp_path):
    def example(*args):
        return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "MULTINET_DATA": ""})

    trained = example("--iterations", "20", "--data-dir", str(mnist.directory),
                      *(["--no-verify"] if is_sample(mnist) else []))
    assert trained.returncode == 0, trained.stderr
    assert "numpy: accuracy train" in trained.stdout and "first four test images" in trained.stdout
    missing = example("--data-dir", str(tmp_path / "nothing"))
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(lines) == 1 and "Traceback" not in missing.stderr
    assert lines[0].startswith("train_notebook.py: error: mnist files not found")
