"""Resuming from Python (``fit(resume=...)``, ``multinet/api/resume.py``): from a run or
from its checkpoint, a resumed run ends where an uninterrupted one ends, and a resume that
would change the run is refused."""

import pytest

import multinet
from helpers import small
from multinet import InvalidArgument, MultinetError
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
