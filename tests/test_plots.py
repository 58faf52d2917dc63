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
