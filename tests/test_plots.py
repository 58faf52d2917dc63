"""Figures (``multinet/plots.py``): a picture written over on a full disk stays the
previous picture."""

import os

import numpy as np
import pytest

import helpers


def test_a_plot_written_over_on_a_full_disk_stays_the_previous_picture(tmp_path):
    """PNGs were written in place: on a full disk the previous picture was cut to a part
    of the new one (``image file is truncated``)."""
    pytest.importorskip("matplotlib")
    from multinet import plots

    def history(epochs, noise):
        jitter = np.random.default_rng(0).random(epochs) * noise
        return [{"epoch": e, "step": e, "lr": 0.1, "loss": 2.0 / e * (1 + jitter[e - 1]),
                 "train_accuracy": 0.5, "dev_accuracy": 0.5 + jitter[e - 1] / 2, "seconds": e}
                for e in range(1, epochs + 1)]

    with helpers.unwritable_dir(tmp_path / "full", size=192 * 1024) as full:
        path = plots.training_curves(history(2, 0), full / "curves.png")  # about 44 KB
        before = path.read_bytes()
        info = os.statvfs(full)
        (full / "filler").write_bytes(b"\0" * max(0, info.f_bavail * info.f_frsize - 8192))
        with pytest.raises(OSError):  # a noisy curve: about 100 KB
            plots.training_curves(history(400, 1), path)
        assert path.read_bytes() == before
        assert sorted(p.name for p in full.iterdir()) == ["curves.png", "filler"]


def test_the_weights_figure_shows_each_unit_as_its_picture_on_one_shared_scale():
    """A convolution's ``(k, k, 1, filters)`` kernels and a dense layer's ``(pixels,
    units)`` columns are pictures of what each unit sees, row-major like the images;
    weights that are no square picture of one channel are one ``MultinetError``."""
    pytest.importorskip("matplotlib")
    from multinet import plots
    from multinet.errors import MultinetError

    kernels = np.arange(3 * 3 * 1 * 4, dtype=np.float32).reshape(3, 3, 1, 4) - 20
    figure = plots.weights_figure(kernels, count=3)
    shown = [ax.images[0] for ax in figure.axes if ax.images]
    assert [image.get_array().tolist() for image in shown] == [
        kernels[:, :, 0, k].tolist() for k in range(3)]
    assert {image.get_clim() for image in shown} == {(-20.0, 20.0)}  # one scale, 0 white
    dense = np.random.default_rng(0).standard_normal((784, 5))
    pictures = [ax.images[0].get_array() for ax in plots.weights_figure(dense).axes
                if ax.images]
    assert len(pictures) == 5 and np.array_equal(pictures[4], dense[:, 4].reshape(28, 28))
    for weights in (np.ones((3, 3, 2, 4)), np.ones((20, 5)), np.ones(5)):
        with pytest.raises(MultinetError, match="not square pictures of one channel"):
            plots.weights_figure(weights)
