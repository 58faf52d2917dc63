"""``multinet.Run`` and ``multinet.load`` (``multinet/api/run.py``): a trained run
predicts, evaluates, draws its figures and saves; a saved one loads on another backend;
bad arguments are named as Python arguments, and no other file is written over."""

import re

import numpy as np
import pytest

import helpers
import multinet
from multinet import InvalidArgument
from multinet.errors import BackendUnavailable

#: Figures are drawn off-screen in the tests.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:matplotlib")


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


def test_evaluate_agrees_with_the_summary(short_run):
    result = short_run.evaluate()
    assert result["test_accuracy"] == short_run.summary["test_accuracy"]
    assert np.asarray(result["confusion_matrix"]).sum() == result["test_samples"] == 300
    assert np.array_equal(result["predictions"],
                          short_run.predict(short_run.dataset.test_images))


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


def test_a_saved_run_loads_on_another_backend(short_run, tmp_path):
    path = short_run.save(tmp_path / "run.safetensors")
    again = multinet.load(path, backend="strict")
    assert again.backend.name == "strict" and again.dataset is None
    assert again.summary["checkpoint"] == str(path)
    images = short_run.dataset.test_images
    assert np.array_equal(again.predict(images), short_run.predict(images))
    assert again.evaluate(short_run.dataset)["test_accuracy"] == (
        short_run.summary["test_accuracy"])


def test_run_save_and_save_plots_refuse_to_destroy_another_file(sample, tmp_path):
    """``Run.save("notes.txt")`` replaced the file; ``Run.save_plots`` on a file raised a
    bare ``FileExistsError`` after evaluating."""
    import multinet
    from multinet.files import OutputError

    run = multinet.fit(helpers.mnist_slice(sample, 1200, 100), progress=False,
                       iterations=1, dev_size=200)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(OutputError, match=r"path='.*notes.txt': exists and is not a checkpoint"):
        run.save(notes)
    assert notes.read_text() == "my notes\n"
    with pytest.raises(OutputError, match=r"folder='.*notes.txt': is a file, not a folder"):
        run.save_plots(notes)
    assert run.save(tmp_path / "a.st") == run.save(tmp_path / "a.st")  # a checkpoint: replaced


def test_every_method_that_takes_a_dataset_checks_it(short_run):
    """``Run.evaluate`` on test labels of 255 was an ``IndexError`` from the confusion
    matrix; on an empty test set, an accuracy of nan."""
    import dataclasses

    from multinet.errors import DatasetError

    data = short_run.dataset
    bad = dataclasses.replace(data, test_labels=np.full_like(data.test_labels, 255))
    empty = dataclasses.replace(data, test_images=data.test_images[:0],
                                test_labels=data.test_labels[:0])
    for call in (short_run.evaluate, short_run.plot_confusion):
        with pytest.raises(DatasetError, match=r"dataset.test_labels: label 255 outside 0-9"):
            call(bad)
        with pytest.raises(DatasetError, match="dataset.test_images holds no images"):
            call(empty)
    with pytest.raises(InvalidArgument, match="dataset must be a Dataset .* got list"):
        short_run.evaluate([data.test_images, data.test_labels])


@pytest.mark.parametrize("devices", [0, -1, "2", 2.0, False])
def test_load_refuses_devices_that_are_no_count(short_run, tmp_path, devices):
    path = short_run.save(tmp_path / "run.st")
    with pytest.raises(InvalidArgument, match=re.escape(
            f"devices must be a number of devices >= 1, 'all' or None; got {devices!r}")):
        multinet.load(path, devices=devices)


def test_run_save_and_save_plots_name_a_path_of_the_wrong_type(short_run):
    with pytest.raises(InvalidArgument, match=r"path must be a file name \(a str or a "
                                              r"pathlib.Path\), got int"):
        short_run.save(3)
    with pytest.raises(InvalidArgument, match="folder must be a file name .* got NoneType"):
        short_run.save_plots(None)


@pytest.mark.parametrize("force", ["no", 0, None])
def test_run_save_and_save_plots_check_force_as_fit_does(short_run, tmp_path, force):
    """``force="no"`` is true to Python: it replaced an ONNX model with a checkpoint."""
    model = tmp_path / "w.onnx"
    model.write_bytes(b"\x08\x0a\x3a\x33\x0a\x0c\x0a\x01x" + bytes(20))
    before = model.read_bytes()
    with pytest.raises(InvalidArgument, match=f"force must be True or False, got {force!r}"):
        short_run.save(model, force=force)
    with pytest.raises(InvalidArgument, match=f"force must be True or False, got {force!r}"):
        short_run.save_plots(tmp_path / "figures", force=force)
    assert model.read_bytes() == before and sorted(tmp_path.iterdir()) == [model]


# --- A convolutional network -------------------------------------------------------------

def test_a_cnn_run_saved_and_loaded_is_the_same_run(cnn_checkpoint, tmp_path):
    run = multinet.load(cnn_checkpoint)
    again = multinet.load(run.save(tmp_path / "again.safetensors"))
    assert again.config == run.config and again.config.layers == (
        "conv:2:3x3:valid", "relu", "maxpool:2", "flatten")
    assert again.params.keys() == run.params.keys() == {"W1", "b1", "W2", "b2"}
    assert all(np.array_equal(again.params[k], run.params[k]) for k in run.params)
    assert again.summary["network"] == "conv:2:3x3:valid, relu, maxpool:2, flatten, dense:10"
    assert again.summary["sizes"] is None and again.history == run.history
    assert "layers='conv:2:3x3:valid, relu, maxpool:2, flatten, dense:10'" in repr(again)


@pytest.mark.parametrize("backend", ["jax", "torch", "strict"])
def test_a_cnn_checkpoint_computes_on_another_backend_as_on_numpy(cnn_checkpoint, mnist,
                                                                  backend):
    """Probabilities within float32 rounding of NumPy's, and so the same labels wherever
    the two largest are not within that rounding of each other."""
    reference = multinet.load(cnn_checkpoint)
    try:
        again = multinet.load(cnn_checkpoint, backend=backend)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    images = mnist.test_images[:200]
    expected, found = reference.probabilities(images), again.probabilities(images)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 1e-4
    assert clear.sum() > 150
    assert np.array_equal(again.predict(images)[clear], expected.argmax(axis=1)[clear])


def test_plot_weights_draws_a_cnns_filters_and_a_perceptrons_units(cnn_checkpoint, short_run):
    pytest.importorskip("matplotlib.figure")

    def pictures(figure):
        return [ax.images[0].get_array().shape for ax in figure.axes if ax.images]

    cnn = multinet.load(cnn_checkpoint)
    filters = cnn.plot_weights()
    assert pictures(filters) == [(3, 3), (3, 3)]
    assert "first layer: conv:2:3x3:valid" in filters.texts[0].get_text()
    assert pictures(short_run.plot_weights(count=3)) == [(28, 28)] * 3
    for count in (0, 2.0, True):
        with pytest.raises(InvalidArgument, match="count must be an integer >= 1"):
            cnn.plot_weights(count=count)
