"""The metrics file (``multinet/training/metrics.py``): whatever stops a run, and
however it is resumed, the file holds each log point once, in order. The checkpoint is
written before its metrics line, and a resume writes what the file lacks first."""

import dataclasses
import signal

import pytest

import helpers
from helpers import records
from multinet import checkpoint as ckpt
from multinet import optim
from multinet.errors import TrainingInterrupted
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import train


@pytest.mark.parametrize("killed_in", ["checkpoint", "metrics"])
def test_a_kill_at_a_log_point_loses_and_repeats_no_metrics_line(sample, tmp_path,
                                                                 monkeypatch, killed_in):
    """The checkpoint is written before its metrics line: a run killed while saving
    epoch 3 has logged only epochs 1 and 2, and resumes from 2; one killed after saving
    epoch 3 but before logging it writes that line first when it resumes."""
    import multinet.training.loop as loop

    numpy = get_backend("numpy")
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("notebook", hidden=(8,), epochs=6, dev_size=200,
                                     log_every=1)
    path, metrics = tmp_path / "c.st", tmp_path / "m.jsonl"

    def save(state):
        if killed_in == "checkpoint" and state.epoch == 3 and not resuming:
            raise SystemExit("killed")
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    real_log = loop.append_record

    def log(target, record):
        if killed_in == "metrics" and record["epoch"] == 3 and not resuming:
            raise SystemExit("killed")
        real_log(target, record)

    monkeypatch.setattr(loop, "append_record", log)
    resuming = False
    with pytest.raises(SystemExit):
        train(config, numpy, data, progress=False, checkpoint=save, metrics_path=metrics)
    assert [r["epoch"] for r in records(metrics)] == [1, 2]
    loaded = ckpt.load(path)
    assert loaded.metadata["progress"]["epoch"] == (2 if killed_in == "checkpoint" else 3)
    resuming = True
    train(config, numpy, data, progress=False, state=loaded.state_on(numpy),
          checkpoint=save, metrics_path=metrics)
    assert [r["epoch"] for r in records(metrics)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("before", [0, 6], ids=["new-file", "after-a-longer-run"])
def test_a_run_killed_at_its_first_log_point_logs_it_when_resumed(sample, tmp_path,
                                                                 monkeypatch, before):
    """Killed after saving epoch 1, before its line: the file held no line of the run
    (none at all, or a longer earlier run's up to step 6). The line was lost; after a
    longer run, the resume was refused as if it would write steps 2-6 again."""
    import multinet.training.loop as loop

    numpy = get_backend("numpy")
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("notebook", hidden=(8,), epochs=4, dev_size=200,
                                     log_every=1)
    path, metrics = tmp_path / "c.st", tmp_path / "m.jsonl"
    if before:
        train(dataclasses.replace(config, epochs=before), numpy, data, progress=False,
              metrics_path=metrics)

    def save(state):
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    real_log = loop.append_record

    def killed(target, record):
        raise SystemExit("killed")

    monkeypatch.setattr(loop, "append_record", killed)
    with pytest.raises(SystemExit):
        train(config, numpy, data, progress=False, checkpoint=save, metrics_path=metrics)
    monkeypatch.setattr(loop, "append_record", real_log)
    loaded = ckpt.load(path)
    assert loaded.metadata["progress"]["epoch"] == 1
    train(config, numpy, data, progress=False, state=loaded.state_on(numpy),
          checkpoint=save, metrics_path=metrics)
    assert [r["epoch"] for r in records(metrics)] == [*range(1, before + 1), 1, 2, 3, 4]


def test_a_run_stopped_before_its_first_log_point_resumes_after_a_longer_run(
        sample, tmp_path, monkeypatch):
    """Appended to a file a longer run had logged to step 6 and stopped at step 2: the
    resume was refused as if it would write steps 3-6 again. Its own records follow."""
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("notebook", hidden=(8,), epochs=4, dev_size=200,
                                     log_every=3)
    metrics = tmp_path / "m.jsonl"
    train(dataclasses.replace(config, epochs=6, log_every=1), numpy, data, progress=False,
          metrics_path=metrics)
    real = optim.learning_rate
    monkeypatch.setattr(optim, "learning_rate", lambda b, s, step, t: (
        signal.raise_signal(signal.SIGINT), real(b, s, step, t))[1] if step == 1
        else real(b, s, step, t))
    with pytest.raises(TrainingInterrupted):
        train(config, numpy, data, progress=False, metrics_path=metrics,
              on_interrupt=lambda state: ckpt.save(tmp_path / "c.st", config, state,
                                                   backend=numpy, dataset_name="mnist",
                                                   dataset_sha256={}))
    monkeypatch.setattr(optim, "learning_rate", real)
    loaded = ckpt.load(tmp_path / "c.st")
    assert loaded.metadata["progress"]["step"] == 2 and not loaded.metadata["history"]
    train(config, numpy, data, progress=False, state=loaded.state_on(numpy),
          metrics_path=metrics)
    assert [r["step"] for r in records(metrics)] == [1, 2, 3, 4, 5, 6, 3, 4]


def test_a_run_resumed_in_the_same_process_with_nan_in_its_records_adds_none_twice(
        tmp_path):
    """Without a dev split the records hold NaN, which equals nothing, not even itself:
    the resumed run took none of the file's records for its own and wrote its whole
    history again (steps 1, 2, 1, 2, 3, 4)."""
    import multinet

    dataset = multinet.load_dataset(data_dir=helpers.SAMPLE_MNIST, verify=False)
    metrics = tmp_path / "m.jsonl"
    run = multinet.fit(dataset, iterations=2, log_every=1, dev_size=0, metrics=metrics,
                       progress=False)
    multinet.fit(dataset, resume=run, iterations=4, metrics=metrics, progress=False)
    assert [r["step"] for r in records(metrics)] == [1, 2, 3, 4]
