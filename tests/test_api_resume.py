"""Resuming from Python (``fit(resume=...)``, ``multinet/api/resume.py``): from a run or
from its checkpoint, a resumed run ends where an uninterrupted one ends, and a resume that
would change the run is refused."""

import re

import pytest

import helpers
import multinet
from multinet.api.fitting import prepare_fit
from helpers import host, small
from multinet import InvalidArgument, MultinetError
from multinet.errors import BackendUnavailable
from multinet.parity import max_relative_error, tolerance


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
    # The count is named as it was given.
    with pytest.raises(InvalidArgument, match=r"already at epoch 20 \(step 20\); iterations=10"):
        multinet.fit(short_run.dataset, resume=short_run, iterations=10)
    with pytest.raises(InvalidArgument, match=r"already at epoch 20 \(step 20\); epochs=10"):
        multinet.fit(short_run.dataset, resume=short_run, epochs=10)
    with pytest.raises(MultinetError, match="trained on mnist, not fashion-mnist"):
        multinet.fit("fashion-mnist", resume=short_run)


def test_every_setting_given_with_its_saved_value_is_no_change(short_run, tmp_path):
    """A script may repeat its settings with ``resume`` added. Each is read as a new run
    reads it (``hidden=10`` is ``(10,)``), from a run in memory and from its checkpoint;
    a value of the wrong type is still refused as such."""
    config = short_run.config
    same = {name: getattr(config, name) for name in (
        "lr", "optimizer", "weight_decay", "schedule", "batch_size", "seed", "dtype",
        "init", "log_every", "dev_size")}
    path = short_run.save(tmp_path / "r.st")
    for source in (short_run, path):
        resumed = multinet.fit(short_run.dataset, resume=source, preset=config.preset,
                               hidden=config.hidden[0], iterations=25, progress=False,
                               **same)
        assert resumed.summary["iterations"] == 25
    with pytest.raises(InvalidArgument, match="log_every= cannot change .* the saved run "
                       "has log_every=5"):
        multinet.fit(short_run.dataset, resume=path, **same | {"log_every": 6})
    with pytest.raises(InvalidArgument, match="lr must be a number, got True"):
        multinet.fit(short_run.dataset, resume=path, lr=True)


def test_resume_continues_only_on_the_data_it_was_trained_on(mnist, tmp_path):
    """A run trained on a subset recorded the full files' checksums, so resuming went on
    over other images without a word. The record is of the arrays trained on: the same
    ones resume (with any test set), others are refused, from a run and a checkpoint."""
    import dataclasses

    from multinet import checkpoint
    from multinet.data import content_sha256s
    from multinet.errors import DatasetError

    data = small(mnist)
    half = multinet.fit(data, iterations=2, dev_size=200, progress=False)
    path = half.save(tmp_path / "half.st")
    record = checkpoint.load(path).metadata["dataset"]
    assert record["content_sha256"] == content_sha256s(data)
    assert record["samples"] == {"train": 1200, "test": 300}
    fewer = dataclasses.replace(data, train_images=data.train_images[:1100],
                                train_labels=data.train_labels[:1100])
    relabelled = dataclasses.replace(data, train_labels=(data.train_labels + 1) % 10)
    for other in (fewer, relabelled, mnist):
        for source in (half, path):
            with pytest.raises(DatasetError, match="the checkpoint was trained on a subset "
                               "or data of your own, .*; resume= continues a run only on "
                               "the images and labels it was trained on"):
                multinet.fit(other, resume=source, iterations=3, progress=False)
    other_tests = dataclasses.replace(data, test_images=data.test_images[:50],
                                      test_labels=data.test_labels[:50])
    assert multinet.fit(other_tests, resume=path, iterations=3,
                        progress=False).summary["iterations"] == 3


def test_a_cnn_checkpoint_from_numpy_resumes_on_another_backend_where_numpy_ends(
        mnist, tmp_path):
    """A convolutional network's checkpoint carries its layers: epoch 1 on NumPy, saved,
    then epoch 2 on PyTorch is the uninterrupted two epochs on NumPy. (PyTorch: JAX
    compiles each shape of a step and a prediction anew, seconds for a CNN; a checkpoint
    that loads on JAX computes there as on NumPy: test_api_run.py.)"""
    backend = "torch"
    data = helpers.mnist_slice(mnist, 400, 50)
    options = dict(preset="cnn", layers=helpers.TINY_CNN, batch_size=50, schedule="constant",
                   dev_size=100, progress=False)
    whole = multinet.fit(data, epochs=2, **options)
    half = multinet.fit(data, epochs=1, **options).save(tmp_path / "half.safetensors")
    try:
        resumed = multinet.fit(data, resume=half, epochs=2, backend=backend, progress=False)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    steps = resumed.summary["iterations"]
    assert resumed.backend.name == backend and resumed.config.layers == whole.config.layers
    assert steps == whole.summary["iterations"] == 12 and len(resumed.history) == 2
    assert max_relative_error(host(resumed.params, resumed.backend),
                              whole.params) <= tolerance("float32", steps)


def test_resume_keeps_a_cnns_layers_and_reads_them_as_given(cnn_checkpoint):
    """Other layers, or widths of a perceptron, cannot resume a convolutional network's
    checkpoint; its own layers, written another way, are no change."""
    with pytest.raises(InvalidArgument, match=re.escape(
            "layers= cannot change (only epochs= / iterations= can); the saved run has "
            "layers=('conv:2:3x3:valid', 'relu', 'maxpool:2', 'flatten')")):
        multinet.fit(resume=cnn_checkpoint, layers=["conv:4:3x3", "relu", "maxpool:2",
                                                    "flatten"])
    with pytest.raises(InvalidArgument, match=re.escape(
            "hidden= cannot change (only epochs= / iterations= can); the saved run has "
            "layers=('conv:2:3x3:valid',")):
        multinet.fit(resume=cnn_checkpoint, hidden=16)
    plan = prepare_fit(resume=cnn_checkpoint, layers="conv:2:3x3, relu, maxpool:2, flatten",
                       epochs=3)
    plan.release()
    assert plan.config.layers == ("conv:2:3x3:valid", "relu", "maxpool:2", "flatten")
    assert plan.config.epochs == 3 and plan.resume.step == 20
