"""Training under faults and bad input: signals, divergence, outputs that cannot be
written, flags that conflict, memory, multi-process joins, metrics after a resume, logs.

The promise (docs/reliability.md): bad input is one line ``multinet: error: ...`` and exit
status 2; a stop for any reason keeps the work up to that point in a good checkpoint.
Signals are sent to real ``multinet train`` processes; everything else runs in this
process, on the committed MNIST sample, to keep the module quick.
"""

import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import helpers
from multinet import checkpoint as ckpt
from multinet import optim, parity
from multinet.cli import main
from multinet.data import load_dataset
from multinet.registry import get_backend
from multinet.errors import TrainingDiverged, TrainingInterrupted
from multinet.training.config import TrainConfig
from multinet.training.loop import train
from multinet.training.steps import SCAN_STEPS

#: The committed sample (2,048 training images, of which 1,000 are held out as dev).
DATA = ["--data-dir", str(helpers.SAMPLE_MNIST), "--no-verify"]
#: A run long enough to be interrupted, logging (and saving) every few steps.
LONG = ["train", *DATA, "--iterations", "1000000", "--log-every", "5"]


@pytest.fixture(scope="module")
def sample():
    return load_dataset(data_dir=helpers.SAMPLE_MNIST, verify=False)


def one_line_error(code, captured, *fragments):
    """``main``'s exit status 2 with one ``multinet: error:`` line naming the fragments."""
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("multinet: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def start(args, cwd, env=None):
    return subprocess.Popen([sys.executable, "-m", "multinet", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for_lines(path: Path, count: int, process, timeout=120):
    """Until ``path`` has ``count`` lines (the run is in its loop, past its log points)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} lines")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- 2. Signals --------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_save_and_say_how_to_resume(tmp_path, signum):
    """What SLURM, Kubernetes, systemd and ``timeout`` send before SIGKILL: the run stops
    between two steps, saves the state *at the stop* (not at the last log point) and
    exits 128 + the signal's number, with one line saying how to go on."""
    metrics = tmp_path / "m.jsonl"
    process = start([*LONG, "--save", "t.st", "--metrics", "m.jsonl"], tmp_path)
    wait_for_lines(metrics, 2, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    name = signal.Signals(signum).name
    assert len(lines) == 1 and lines[0].startswith(f"multinet: interrupted ({name}) at "), err
    assert lines[0].endswith("checkpoint saved to t.st; continue with --resume t.st")
    step = int(lines[0].split("step ")[1].split(";")[0])
    saved = ckpt.load(tmp_path / "t.st")
    assert saved.metadata["progress"]["step"] == step >= 10
    if signum != signal.SIGTERM:
        return
    # It goes on from there; its metrics continue the file without repeating a line.
    resumed = subprocess.run([sys.executable, "-m", "multinet", "train", *DATA, "--resume",
                              "t.st", "--iterations", str(step + 7), "--metrics", "m.jsonl",
                              "--json"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["iterations"] == step + 7
    steps = [r["step"] for r in records(metrics)]
    assert steps == sorted(set(steps)) and steps[-1] == step + 7


def test_without_save_a_signal_saves_the_interrupt_file(tmp_path):
    process = start([*LONG, "--metrics", "m.jsonl"], tmp_path)
    wait_for_lines(tmp_path / "m.jsonl", 1, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "saved to multinet-interrupted.safetensors; continue with --resume " \
           "multinet-interrupted.safetensors" in err
    assert ckpt.load(tmp_path / "multinet-interrupted.safetensors").metadata["progress"]["step"]


def test_in_a_read_only_folder_the_interrupt_save_goes_to_the_temporary_folder(tmp_path):
    """Ctrl-C where the working folder cannot be written: the state is not lost, it goes
    to the system's temporary folder, and the line says where and why."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    metrics = tmp_path / "m.jsonl"
    with helpers.unwritable_dir(tmp_path / "ro") as read_only:
        process = start([*LONG, "--metrics", str(metrics)], read_only,
                        env={"TMPDIR": str(scratch)})
        wait_for_lines(metrics, 1, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    rescued = list(scratch.glob("multinet-interrupted-*.safetensors"))
    assert len(rescued) == 1, err
    line = err.strip()
    assert f"checkpoint saved to {rescued[0]} (multinet-interrupted.safetensors could not " \
           f"be written: " in line and line.endswith(f"continue with --resume {rescued[0]}")
    assert ckpt.load(rescued[0]).metadata["progress"]["step"] >= 5


def test_a_scanned_jax_epoch_stops_within_one_program_and_resumes_exactly(sample,
                                                                          monkeypatch):
    """JAX runs an epoch as compiled programs of ``SCAN_STEPS`` steps: a signal while the
    second is being started stops the run at that program's end (mid-epoch, batch 128 of
    192), and the resumed run ends where the uninterrupted one does, with the same
    metrics."""
    pytest.importorskip("jax", reason="compiled epochs are JAX's")
    jax = get_backend("jax")
    data = helpers.mnist_slice(sample, 1352, 200)
    config = TrainConfig.from_preset("mlp", hidden=(16,), batch_size=6, epochs=1,
                                     dev_size=200, log_every=1)
    batches = 1152 // 6  # three whole programs: no single steps to compile as well
    assert batches == 3 * SCAN_STEPS
    # The uninterrupted run, on NumPy (quicker than compiling it all once more); JAX
    # matches it within the parity tolerance (docs/parity.md).
    reference = train(config, get_backend("numpy"), data, progress=False)
    real = optim.learning_rate
    signal_at = SCAN_STEPS + 6

    def sigterm_at(base, schedule, step, total):
        if step == signal_at:
            signal.raise_signal(signal.SIGTERM)
        return real(base, schedule, step, total)

    monkeypatch.setattr(optim, "learning_rate", sigterm_at)
    saved = []
    with pytest.raises(TrainingInterrupted, match="SIGTERM") as info:
        train(config, jax, data, progress=False, on_interrupt=lambda s: saved.append(s) or "x")
    monkeypatch.setattr(optim, "learning_rate", real)
    state = saved[0]
    # The program being queued when the signal came is the last one run.
    assert state.step == state.batch == 2 * SCAN_STEPS and info.value.signum == signal.SIGTERM
    resumed = train(config, jax, data, progress=False, state=state)
    params = {k: np.asarray(v) for k, v in resumed.params.items()}
    expected = {k: np.asarray(v) for k, v in reference.params.items()}
    bound = parity.tolerance("float32", batches)
    assert parity.max_relative_error(params, expected) <= bound
    assert parity.relative_error(resumed.history[-1]["loss"],
                                 reference.history[-1]["loss"]) <= bound


def console_script(folder: Path) -> Path:
    """The ``multinet`` script as an installer writes it from pyproject.toml's entry point
    (the one installed here may predate a change to it)."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    module, function = re.search(r'^multinet = "([\w.]+):(\w+)"$', text, re.M).groups()
    script = folder / "multinet-script.py"
    script.write_text(f"import sys\nfrom {module} import {function}\n"
                      f"if __name__ == '__main__':\n    sys.exit({function}())\n")
    return script


@pytest.mark.parametrize("entry", ["-m", "script"])
@pytest.mark.parametrize("imported", ["numpy", "multinet.registry", "multinet.cli"])
def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130(tmp_path, entry, imported):
    """The command's imports take tenths of a second: a Ctrl-C then is one line and 130,
    as later in the run, for ``python -m multinet`` and the installed script alike. Python
    reports each import as it ends (``PYTHONPROFILEIMPORTTIME``): the signal is sent when
    ``imported`` is, to land in the imports after it (or, on a slow reader, in the run)."""
    program = ["-m", "multinet"] if entry == "-m" else [str(console_script(tmp_path))]
    process = subprocess.Popen([sys.executable, *program, *LONG], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    watchdog = threading.Timer(120, process.kill)  # the import never reported: fail, not hang
    watchdog.start()
    try:
        for line in process.stderr:
            if line.startswith("import time:") and line.split("|")[-1].strip() == imported:
                process.send_signal(signal.SIGINT)
                break
        else:
            raise AssertionError(f"{imported} was never imported")
        err = process.stderr.read()
        process.wait()
    finally:
        watchdog.cancel()
    lines = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert "Traceback" not in err, err
    assert process.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("multinet: interrupted"), lines


# --- 11. Metrics after a resume ----------------------------------------------------------

def test_an_epoch_interrupted_and_resumed_reports_the_loss_of_all_its_batches(
        sample, tmp_path, monkeypatch):
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("mlp", hidden=(16,), batch_size=50, epochs=2,
                                     dev_size=200, log_every=1)
    reference = train(config, numpy, data, progress=False)
    real = optim.learning_rate
    monkeypatch.setattr(optim, "learning_rate", lambda b, s, step, t: (
        signal.raise_signal(signal.SIGINT), real(b, s, step, t))[1] if step == 27
        else real(b, s, step, t))
    path = tmp_path / "c.st"

    def save(state):
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingInterrupted):
        train(config, numpy, data, progress=False, checkpoint=save)
    monkeypatch.setattr(optim, "learning_rate", real)
    loaded = ckpt.load(path)
    assert loaded.metadata["progress"]["batch"] == 8  # 20 batches an epoch: mid-epoch
    assert set(loaded.metadata["progress"]) >= {"loss_sum", "accuracy_sum"}
    resumed = train(config, numpy, data, progress=False, state=loaded.state_on(numpy))
    for got, want in zip(resumed.history, reference.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["train_accuracy"] == pytest.approx(want["train_accuracy"], rel=1e-5)


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


@pytest.mark.slow
def test_sigkill_loops_during_training_keep_checkpoint_and_metrics_in_step(tmp_path):
    """SIGKILL at random moments (often during a save), then --resume, many times: the
    checkpoint always loads, no temporary file piles up, and the metrics hold each log
    point exactly once."""
    rng = np.random.default_rng(0)
    common = ["train", *DATA, "--iterations", "1200", "--save", "k.st", "--metrics",
              "m.jsonl", "--no-progress"]
    fresh = [*common, "--hidden", "256", "--log-every", "2"]
    first, kills = True, 0
    while kills < 20:
        process = start(fresh if first else [*common, "--resume", "k.st"], tmp_path)
        if first:
            wait_for_lines(tmp_path / "m.jsonl", 1, process)
        time.sleep(float(rng.uniform(0.5, 2.0)))
        if process.poll() is not None:  # the run ended before the kill: start over
            assert process.returncode == 0, process.communicate()
            break
        process.kill()
        process.communicate()
        kills += 1
        first = not (tmp_path / "k.st").exists()
        ckpt.load(tmp_path / "k.st")
        assert len(list(tmp_path.glob(".k.st.*"))) <= 1
    else:
        finished = start([*common, "--resume", "k.st"], tmp_path)
        assert finished.wait(timeout=600) == 0, finished.communicate()
    assert kills >= 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.st", "m.jsonl"]
    assert [r["step"] for r in records(tmp_path / "m.jsonl")] == list(range(2, 1201, 2))


# --- 1. Never keep a bad state -----------------------------------------------------------

def test_a_nan_hidden_from_the_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        sample, tmp_path, monkeypatch):
    """A NaN bias of a ReLU unit turns its activation into 0: the loss stays finite. The
    parameters themselves are checked, so the run stops, and the checkpoint on disk is
    the last finite one."""
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("notebook", epochs=8, dev_size=200, log_every=2,
                                     optimizer="momentum", momentum=0.5)
    def poisoned(real_update):
        def update(optimizer, params, grads, state, lr):
            params, state = real_update(optimizer, params, grads, state, lr)
            if float(state["t"]) == 5:
                params = {**params, "b1": np.where(np.arange(10) == 3, np.nan, params["b1"])}
            return params, state

        return update

    # NumPy's arrays are mutable, so training updates them in place (update_in_place).
    for name in ("update", "update_in_place"):
        monkeypatch.setattr(optim, name, poisoned(getattr(optim, name)))
    path = tmp_path / "c.st"

    def save(state):
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingDiverged) as info, np.errstate(invalid="ignore"):
        train(config, numpy, data, progress=False, checkpoint=save)
    message = str(info.value)
    assert "b1" in message and "by epoch 6" in message
    assert "optimizer momentum, lr 0.2 (constant schedule), momentum 0.5, full batch" in message
    assert f"the last checkpoint, {path}, is from epoch 4" in message
    assert ckpt.load(path).metadata["progress"]["epoch"] == 4


def test_memory_running_out_in_an_in_place_update_saves_nothing_half_updated(
        sample, tmp_path, monkeypatch):
    """On a backend whose arrays are updated in place (NumPy), memory running out between
    two writes of an update leaves a state that is neither step: the rescue file is not
    written, and the last checkpoint stays the last good one."""
    from multinet.errors import TrainingStopped

    numpy = get_backend("numpy")
    assert numpy.mutable_arrays
    data = helpers.mnist_slice(sample, 1200, 200)
    config = TrainConfig.from_preset("notebook", epochs=8, dev_size=200, log_every=2)
    real = optim.update_in_place

    def half_then_out_of_memory(optimizer, params, grads, state, lr):
        if int(state["t"]) == 5:
            params["W1"] -= lr * grads["W1"]  # one parameter written, the others not
            raise MemoryError
        return real(optimizer, params, grads, state, lr)

    monkeypatch.setattr(optim, "update_in_place", half_then_out_of_memory)
    path, rescued = tmp_path / "c.st", tmp_path / "rescue.st"

    def save(state):
        return ckpt.save(path, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    def rescue(state):
        return ckpt.save(rescued, config, state, backend=numpy, dataset_name="mnist",
                         dataset_sha256={})

    with pytest.raises(TrainingStopped, match="last checkpoint written is the last good"):
        train(config, numpy, data, progress=False, checkpoint=save, on_interrupt=rescue)
    assert not rescued.exists()
    assert ckpt.load(path).metadata["progress"]["epoch"] == 4


def test_divergence_from_the_command_line_names_the_settings_and_keeps_a_good_file(
        tmp_path, capsys):
    path = tmp_path / "b.st"
    code = main(["train", *DATA, "--lr", "1e30", "--iterations", "5", "--log-every", "1",
                 "--save", str(path)])
    line = one_line_error(code, capsys.readouterr(), "diverged", "lr 1e+30", "full batch",
                          f"the last checkpoint, {path}, is from epoch 1")
    assert "Warning" not in line
    good = ckpt.load(path)
    assert good.metadata["progress"]["step"] == 1
    assert all(np.all(np.isfinite(v)) for v in good.params.values())


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "inf"], "finite"), (["--lr", "nan"], "finite"), (["--lr", "1e400"], "finite"),
    (["--momentum", "1"], "[0, 1)"), (["--momentum", "-0.1"], "[0, 1)"),
    (["--weight-decay", "inf"], "finite"),
])
def test_hyperparameters_out_of_range_are_refused_when_parsed(args, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *args])
    assert info.value.code == 2 and fragment in capsys.readouterr().err


# --- 3. Outputs checked before the work starts ---------------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any data is loaded or any training starts."""
    import multinet.api.fit as fit
    import multinet.commands.options as options

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the outputs were checked")

    monkeypatch.setattr(options, "load_data", forbidden)
    monkeypatch.setattr(fit, "train", forbidden)


@pytest.mark.parametrize("option, target, fragment", [
    ("--save", "folder", "is a folder"),
    ("--save", "file/x.st", "is not a folder"),
    ("--metrics", "folder", "is a folder"),
    ("--plots", "file", "is a file"),
])
def test_outputs_that_cannot_be_written_are_refused_before_the_work(
        tmp_path, capsys, no_work, option, target, fragment):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    code = main(["train", *DATA, option, str(tmp_path / target)])
    one_line_error(code, capsys.readouterr(), option, fragment)


@pytest.mark.parametrize("option", ["--save", "--metrics", "--plots"])
def test_a_read_only_destination_is_refused_before_the_work(tmp_path, capsys, no_work,
                                                           option):
    with helpers.unwritable_dir(tmp_path / "ro") as read_only:
        code = main(["train", *DATA, option, str(read_only / "out")])
    one_line_error(code, capsys.readouterr(), option, "cannot write in")


def test_plot_out_naming_a_file_and_plots_without_matplotlib(tmp_path, capsys, no_work,
                                                             monkeypatch):
    (tmp_path / "file").write_text("x")
    code = main(["plot", "no-checkpoint-needed.st", "--out", str(tmp_path / "file")])
    one_line_error(code, capsys.readouterr(), "--out", "is a file")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    code = main(["train", *DATA, "--plots", str(tmp_path / "plots")])
    one_line_error(code, capsys.readouterr(), "matplotlib")


def test_the_summary_is_printed_when_the_plots_fail_after_training(tmp_path, capsys,
                                                                   monkeypatch):
    pytest.importorskip("matplotlib")
    from multinet import plots

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plots, "write_all", disk_full)
    code = main(["train", *DATA, "--iterations", "2", "--plots", str(tmp_path / "p"),
                 "--save", str(tmp_path / "a.st")])
    captured = capsys.readouterr()
    assert "accuracy: train" in captured.out and "checkpoint:" in captured.out
    one_line_error(code, captured, "training finished", "No space left on device")
    assert ckpt.load(tmp_path / "a.st").metadata["progress"]["step"] == 2


def test_a_full_disk_during_a_save_stops_with_one_line_and_rescues_the_state(
        tmp_path, capsys, monkeypatch):
    """The third checkpoint write fails (ENOSPC): the run stops, the file on disk is the
    previous good checkpoint, and the state at the stop goes to the temporary folder."""
    from multinet import files

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)
    real_replace, calls = os.replace, []

    def full_disk(src, dst):
        calls.append(dst)
        if len(calls) >= 3 and Path(dst).name == "a.st":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", full_disk)
    path = tmp_path / "a.st"
    code = main(["train", *DATA, "--iterations", "100", "--log-every", "2", "--save",
                 str(path)])
    line = one_line_error(code, capsys.readouterr(), f"cannot write the checkpoint {path}: "
                          "No space left on device", "the state at epoch 6, step 6 was "
                          "saved to")
    rescued = list((tmp_path / "tmp").glob("multinet-interrupted-*.safetensors"))
    assert len(rescued) == 1 and f"--resume {rescued[0]}" in line
    assert ckpt.load(path).metadata["progress"]["step"] == 4
    assert ckpt.load(rescued[0]).metadata["progress"]["step"] == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_full_tmpfs_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    """The same on a real full file system (a 48 KiB tmpfs: room for one 33 KB checkpoint,
    not for the next one beside it)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with helpers.unwritable_dir(tmp_path / "full", size=48 * 1024) as full:
        result = helpers.run_cli("train", *DATA, "--iterations", "20", "--log-every", "2",
                                 "--save", str(full / "a.st"), env={"TMPDIR": str(scratch)})
        helpers.assert_one_line_error(result, "No space left on device", "was saved to")
        assert ckpt.load(full / "a.st").metadata["progress"]["step"] == 2
        assert sorted(p.name for p in full.iterdir()) == ["a.st"]
    assert len(list(scratch.glob("multinet-interrupted-*.safetensors"))) == 1


# --- 8. Flags and pipes --------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--iterations", "10", "--epochs", "3"], "give one"),
    (["--preset", "mlp", "--iterations", "1"], "give --epochs"),
    (["--iterations", "0", "--save", "a.st"], "nothing to --save"),
    (["--epochs", "0", "--metrics", "m.jsonl"], "nothing to --metrics"),
    (["--optimizer", "adam", "--momentum", "0.5"], "this run uses adam"),
])
def test_conflicting_or_meaningless_flags_are_refused(args, fragment, capsys, no_work):
    one_line_error(main(["train", *DATA, *args]), capsys.readouterr(), fragment)


def test_resuming_with_fewer_epochs_than_done_is_refused(tmp_path, capsys):
    path = tmp_path / "a.st"
    assert main(["train", *DATA, "--iterations", "3", "--save", str(path), "--json"]) == 0
    capsys.readouterr()
    one_line_error(main(["train", *DATA, "--resume", str(path), "--iterations", "2"]),
                   capsys.readouterr(), "already at epoch 3", "--epochs 2")


def test_bench_refuses_what_it_cannot_time(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--samples", "1"])
    assert info.value.code == 2 and "--samples: must be an integer >= 128" in capsys.readouterr().err
    one_line_error(main(["bench", "--backend", "bogus", "--workload", "floor"]),
                   capsys.readouterr(), "unknown backend 'bogus'")


@pytest.mark.parametrize("args", [["data", "where", *DATA[:2]],
                                  ["train", *DATA, "--iterations", "2", "--json"]])
def test_a_closed_pipe_ends_quietly(args):
    """``multinet ... | head -c 10``: the reader goes away before the output is written
    (block-buffered, as Python buffers a pipe unless told otherwise)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen([sys.executable, "-m", "multinet", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert err == ""


# --- 6. Resources, 9. read-only arrays, 12. logs -------------------------------------------

def test_a_network_too_large_for_memory_is_one_line_with_what_it_needs(capsys, monkeypatch):
    import multinet.training.memory as memory

    monkeypatch.setattr(memory, "physical_memory", lambda: 16 * 2**30)  # any machine
    code = main(["train", *DATA, "--hidden", "100000000"])
    one_line_error(code, capsys.readouterr(), "784-100000000-10 needs about",
                   "TiB of memory", "this machine has 16.0 GiB", "--hidden")


def test_probabilities_of_a_float64_checkpoint_on_jax(sample):
    """NumPy views of JAX arrays are read-only: nothing may be written into them."""
    pytest.importorskip("jax")
    from multinet.evaluation import probabilities
    from multinet.initializers import draw_params

    jax = get_backend("jax")
    jax.enable_dtype("float64")
    params = draw_params((784, 10, 10), seed=0)
    probs = probabilities(params, jax, sample.test_images[:3], "float64")
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1)


def test_the_progress_bar_only_on_a_terminal_unless_forced(capsys):
    run = ["train", *DATA, "--iterations", "3", "--json"]
    assert main(run) == 0
    assert "train [numpy]" not in capsys.readouterr().err  # stderr is not a terminal here
    assert main([*run, "--progress"]) == 0
    assert "train [numpy]" in capsys.readouterr().err


# --- 10. Multi-process runs that cannot join -------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("process_id, fragment", [
    (1, "nothing answers at the coordinator 127.0.0.1:{port}"),
    (0, "the multi-process run at 127.0.0.1:{port} did not come together within 1 s"),
])
def test_a_process_that_cannot_join_says_what_it_waited_for_and_gives_up(process_id,
                                                                         fragment):
    pytest.importorskip("jax")
    port = free_port()
    result = helpers.run_cli(
        "train", *DATA, "--backend", "jax", "--devices", "all", "--coordinator",
        f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(process_id),
        "--init-timeout", "1", timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0] == (f"multinet: process {process_id} of 2: joining the run at "
                        f"127.0.0.1:{port}, waiting up to 1 s for all 2 processes "
                        "(--init-timeout)")
    assert len(lines) == 2 and lines[1].startswith("multinet: error: ")
    assert fragment.format(port=port) in lines[1]


# --- Found when the fixes were tried by someone else (issue 11) ----------------------------

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


@pytest.mark.parametrize("args, fragment", [
    (["--save", "{d}/a.st", "--metrics", "{d}/a.st"], "is the checkpoint's file too"),
    (["--resume", "{d}/good.st", "--metrics", "{d}/good.st"], "is the checkpoint's file too"),
    (["--save", "{d}/link.st", "--metrics", "{d}/good.st"], "is the checkpoint's file too"),
    (["--metrics", "{d}/other.st"], "is not a metrics file (JSON lines)"),
    (["--save", "{d}/m.jsonl"], "is not a checkpoint (safetensors)"),
    (["--save", "{d}/notes.txt"], "is not a checkpoint (safetensors)"),
    (["--save", ""], "--save: an empty path"),
    (["--plots", ""], "--plots: an empty path"),
    (["--resume", "{d}/good.st", "--save", ""], "--save: an empty path"),
])
def test_an_output_that_would_destroy_another_file_is_refused_before_the_work(
        tmp_path, capsys, args, fragment):
    """``--save a.st --metrics a.st`` appended JSON to the checkpoint (exit 0, the file
    unreadable); ``--metrics`` naming a checkpoint damaged it; ``--save`` naming a text
    file replaced it; ``--save ''`` saved nothing, silently."""
    assert main(["train", *DATA, "--iterations", "1", "--save", str(tmp_path / "good.st"),
                 "--json"]) == 0
    (tmp_path / "other.st").write_bytes((tmp_path / "good.st").read_bytes())
    (tmp_path / "link.st").symlink_to(tmp_path / "good.st")
    (tmp_path / "m.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    code = main(["train", *DATA, "--iterations", "2",
                 *(a.format(d=tmp_path) for a in args)])
    one_line_error(code, capsys.readouterr(), fragment)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_metrics_file_of_a_run_is_appended_to_by_the_next(tmp_path, capsys):
    """The checks above leave the usual case alone: a metrics file of JSON lines is
    appended to, a checkpoint is replaced."""
    args = ["train", *DATA, "--iterations", "2", "--log-every", "1", "--json",
            "--save", str(tmp_path / "a.st"), "--metrics", str(tmp_path / "m.jsonl")]
    assert main(args) == 0 and main(args) == 0
    assert [r["step"] for r in records(tmp_path / "m.jsonl")] == [1, 2, 1, 2]


def test_resuming_an_older_checkpoint_into_a_newer_metrics_file_is_refused(tmp_path,
                                                                          capsys, sample):
    """The file already holds the steps the run would take: they were appended a second
    time (steps 2, 4, 4). Nothing is trained or written then, from the command line or
    Python (which names its own argument); resuming the newest checkpoint into the same
    file goes on as before."""
    import multinet

    a, old, metrics = tmp_path / "a.st", tmp_path / "old.st", tmp_path / "m.jsonl"
    run = ["train", *DATA, "--json", "--metrics", str(metrics)]
    assert main([*run, "--iterations", "2", "--save", str(a)]) == 0
    shutil.copy(a, old)
    assert main([*run, "--resume", str(a), "--iterations", "4", "--save", str(a)]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    line = one_line_error(main([*run, "--resume", str(old), "--iterations", "4", "--save",
                                str(tmp_path / "b.st")]), capsys.readouterr(),
                          "already holds records up to step 4, past step 2")
    assert f"--metrics {metrics}: " in line
    with pytest.raises(multinet.MultinetError,
                       match=re.escape(f"metrics={str(metrics)!r}: already holds")):
        multinet.fit(sample, resume=old, iterations=4, metrics=metrics, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main([*run, "--resume", str(a), "--iterations", "6", "--save", str(a)]) == 0
    assert [r["step"] for r in records(metrics)] == [2, 4, 6]  # logged every 2 steps


def test_standard_output_that_cannot_be_written_is_one_line():
    """``multinet ... > /dev/full``: a traceback before."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "multinet", "backends", "--json"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    helpers.assert_one_line_error(result, "cannot write the output: No space left on device")


def test_a_failed_save_says_why_once_in_the_systems_words(tmp_path, capsys, monkeypatch):
    """The rescue's note read "(a.st could not be written: cannot write the checkpoint
    a.st: No space left on device)"."""
    from multinet import files

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "a.st":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", full_disk)
    path = tmp_path / "a.st"
    line = one_line_error(main(["train", *DATA, "--iterations", "4", "--save", str(path)]),
                          capsys.readouterr())
    assert f"({path} could not be written: No space left on device)" in line
    assert line.count("No space left on device") == 2  # the stop, and the rescue's note


def test_a_coordinator_port_out_of_range_is_refused_at_once():
    pytest.importorskip("jax")
    result = helpers.run_cli(
        "train", *DATA, "--backend", "jax", "--devices", "all", "--coordinator",
        "127.0.0.1:99999", "--num-processes", "2", "--process-id", "1",
        "--init-timeout", "30", timeout=120)
    helpers.assert_one_line_error(result, "127.0.0.1:99999", "port from 1 to 65535")


def test_a_metrics_record_cut_short_by_a_full_disk_is_taken_back(tmp_path, capsys,
                                                                  monkeypatch):
    """A nearly full disk takes part of a write without an error: the metrics file kept
    half a record, and the resumed run wrote the whole one after it."""
    real_write = os.write

    def nearly_full(fd, data):
        if bytes(data).startswith(b'{"epoch": 3,'):
            return real_write(fd, bytes(data)[:20])
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", nearly_full)
    path, metrics = tmp_path / "a.st", tmp_path / "m.jsonl"
    line = one_line_error(main(["train", *DATA, "--iterations", "6", "--log-every", "1",
                                "--save", str(path), "--metrics", str(metrics)]),
                          capsys.readouterr(), "cannot append to the metrics file",
                          "No space left on device", f"was saved to {path}")
    assert metrics.read_text().endswith("\n")
    assert [r["step"] for r in records(metrics)] == [1, 2]
    monkeypatch.setattr(os, "write", real_write)
    assert main(["train", *DATA, "--resume", str(path), "--metrics", str(metrics),
                 "--json"]) == 0, line
    assert [r["step"] for r in records(metrics)] == [1, 2, 3, 4, 5, 6]


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


def test_run_save_and_save_plots_refuse_to_destroy_another_file(sample, tmp_path):
    """``Run.save("notes.txt")`` replaced the file; ``Run.save_plots`` on a file raised a
    bare ``FileExistsError`` after evaluating."""
    import multinet
    from multinet.files import OutputError

    run = multinet.fit(helpers.mnist_slice(sample, 1200, 100), progress=False,
                       iterations=1, dev_size=200)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(OutputError, match=r"path= .*notes.txt: exists and is not a checkpoint"):
        run.save(notes)
    assert notes.read_text() == "my notes\n"
    with pytest.raises(OutputError, match=r"folder= .*notes.txt: is a file, not a folder"):
        run.save_plots(notes)
    assert run.save(tmp_path / "a.st") == run.save(tmp_path / "a.st")  # a checkpoint: replaced
