"""``multinet train`` as a user runs it: the summary, and what a run writes for
``evaluate``, ``predict`` and ``plot``; real signals to real processes, which stop, save
and say how to go on; flags and outputs refused before any work; divergence, full disks
and failed writes; the metrics file from one run to the next.

The promise (docs/reliability.md): bad input is one line ``multinet: error: ...`` and exit
status 2; a stop for any reason keeps the work up to that point in a good checkpoint.
Signals are sent to real ``multinet train`` processes; most of the rest runs in this
process (``main``), on the committed MNIST sample (``helpers.DATA``), to keep the module
quick.
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import helpers
from helpers import (DATA, LONG, assert_one_line_error, assert_same_run, data_args,
                     one_line_error, records, run_cli, trained_checkpoint)
import multinet
from multinet import checkpoint as ckpt
from multinet.cli import main
from multinet.locks import OutputBusy
from multinet.training.config import PRESETS


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


# --- The summary, and what a run writes -------------------------------------------------

def test_train_json_summary(mnist, capsys):
    code = main(["train", *data_args(mnist), "--iterations", "3",
                 "--hidden", "8", "--json", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("backend", "device", "dtype", "iterations", "train_accuracy", "dev_accuracy",
                "test_accuracy", "seconds", "samples_per_second"):
        assert key in summary
    assert summary["iterations"] == 3 and summary["sizes"] == [784, 8, 10]


def test_train_text_summary_and_backend_from_environment(mnist, capsys, monkeypatch):
    monkeypatch.setenv("MULTINET_BACKEND", "strict")
    assert main(["train", *data_args(mnist), "--iterations", "2",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "backend strict" in out and "accuracy: train" in out and "samples/s" in out


def test_the_progress_bar_only_on_a_terminal_unless_forced(capsys):
    run = ["train", *DATA, "--iterations", "3", "--json"]
    assert main(run) == 0
    assert "train [numpy]" not in capsys.readouterr().err  # stderr is not a terminal here
    assert main([*run, "--progress"]) == 0
    assert "train [numpy]" in capsys.readouterr().err


def test_train_save_evaluate_predict_plot_from_the_command_line(mnist, tmp_path):
    data = [*data_args(mnist)]
    # One epoch of the full files is 461 steps; the committed sample leaves 1,048 training
    # images after the dev split, 8 steps an epoch, and only 512 test images.
    epochs, least = (20, 0.8) if helpers.is_sample(mnist) else (1, 0.9)
    tested = len(mnist.test_labels)
    path = tmp_path / "mlp.safetensors"
    trained = run_cli("train", "--preset", "mlp", "--hidden", "32", "--epochs", str(epochs),
                      "--save", str(path), "--metrics", str(tmp_path / "m.jsonl"), "--plots",
                      str(tmp_path / "plots"), "--json", "--no-progress", *data)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["test_accuracy"] > least and summary["checkpoint"] == str(path)
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == epochs
    for name in ("training_curves.png", "predictions.png", "confusion_matrix.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    evaluated = run_cli("evaluate", str(path), "--backend", "strict", "--json", *data)
    report = json.loads(evaluated.stdout)
    assert report["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == tested
    assert np.trace(matrix) / tested == pytest.approx(report["test_accuracy"])
    text = run_cli("evaluate", str(path), *data)
    assert "confusion matrix" in text.stdout and text.returncode == 0

    shown = run_cli("predict", str(path), "--index", "0", *data)
    assert shown.returncode == 0 and "label: 7" in shown.stdout and "@@" in shown.stdout

    plotted = run_cli("plot", str(path), "--out", str(tmp_path / "again"), *data)
    assert plotted.returncode == 0 and len(list((tmp_path / "again").glob("*.png"))) == 3


# --- Signals ----------------------------------------------------------------------------

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


def test_ctrl_c_from_the_command_line_saves_and_resume_finishes(mnist, tmp_path):
    """A real SIGINT to a running ``multinet train``, then ``--resume``: the result is the
    uninterrupted run's."""
    data = [*data_args(mnist), "--no-progress"]
    args = ["train", "--preset", "mlp", "--hidden", "16", "--epochs", "6", *data]
    full = tmp_path / "full.safetensors"
    assert run_cli(*args, "--save", str(full)).returncode == 0

    part = tmp_path / "part.safetensors"
    metrics = tmp_path / "m.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "multinet", *args, "--save", str(part),
                                "--metrics", str(metrics)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (not metrics.exists() or not metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 130, stderr
    assert "checkpoint saved to" in stderr and "Traceback" not in stderr
    assert run_cli("train", "--resume", str(part), *data).returncode == 0
    a, b = ckpt.load(full), ckpt.load(part)
    assert b.metadata["progress"]["epoch"] == 6
    assert_same_run(b.params, a.params, "float32", b.metadata["progress"]["step"])


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


# --- Flags refused when parsed or before the work ---------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--lr", "inf"], "finite"), (["--lr", "nan"], "finite"), (["--lr", "1e400"], "finite"),
    (["--momentum", "1"], "[0, 1)"), (["--momentum", "-0.1"], "[0, 1)"),
    (["--weight-decay", "inf"], "finite"),
])
def test_hyperparameters_out_of_range_are_refused_when_parsed(args, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *args])
    assert info.value.code == 2 and fragment in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["--iterations", "10", "--epochs", "3"], "give one"),
    (["--preset", "mlp", "--iterations", "1"], "give --epochs"),
    (["--iterations", "0", "--save", "a.st"], "nothing to --save"),
    (["--epochs", "0", "--metrics", "m.jsonl"], "nothing to --metrics"),
    (["--optimizer", "adam", "--momentum", "0.5"], "this run uses adam"),
])
def test_conflicting_or_meaningless_flags_are_refused(args, fragment, capsys, no_work):
    one_line_error(main(["train", *DATA, *args]), capsys.readouterr(), fragment)


def test_a_network_too_large_for_memory_is_one_line_with_what_it_needs(capsys, monkeypatch):
    import multinet.training.memory as memory

    monkeypatch.setattr(memory, "physical_memory", lambda: 16 * 2**30)  # any machine
    code = main(["train", *DATA, "--hidden", "100000000"])
    one_line_error(code, capsys.readouterr(), "784-100000000-10 needs about",
                   "TiB of memory", "this machine has 16.0 GiB", "--hidden")


def test_resume_refuses_to_change_the_configuration(mnist, tmp_path):
    path, _ = trained_checkpoint(mnist, tmp_path, epochs=1)
    refused = run_cli("train", "--resume", str(path), "--lr", "0.5",
                      *data_args(mnist))
    assert refused.returncode == 2 and "--lr" in refused.stderr


def test_resuming_with_fewer_epochs_than_done_is_refused(tmp_path, capsys):
    path = tmp_path / "a.st"
    assert main(["train", *DATA, "--iterations", "3", "--save", str(path), "--json"]) == 0
    capsys.readouterr()
    one_line_error(main(["train", *DATA, "--resume", str(path), "--iterations", "2"]),
                   capsys.readouterr(), "already at epoch 3", "--iterations 2")
    one_line_error(main(["train", *DATA, "--resume", str(path), "--epochs", "2"]),
                   capsys.readouterr(), "already at epoch 3", "--epochs 2")


# --- Outputs checked before the work ----------------------------------------------------

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


# --- Divergence, full disks and failed writes -------------------------------------------

def test_divergence_from_the_command_line_names_the_settings_and_keeps_a_good_file(
        tmp_path, capsys):
    """lr 1e30: after one step every weight is finite but the outputs overflow float32, so
    no state of the run evaluates: nothing is written, and a good ``b.st`` already at the
    path survives. lr 1e12 overflows one step later: the checkpoint kept evaluates."""
    path = tmp_path / "b.st"
    diverging = ["train", *DATA, "--lr", "1e30", "--iterations", "5", "--log-every", "1",
                 "--save", str(path)]
    line = one_line_error(main(diverging), capsys.readouterr(), "diverged",
                          "the network's outputs overflow float32", "by epoch 1 (step 1)",
                          "lr 1e+30", "full batch", f"(nothing at {path})")
    assert "Warning" not in line and not path.exists()
    assert main(["train", *DATA, "--iterations", "3", "--save", str(path), "--json"]) == 0
    capsys.readouterr()
    good = path.read_bytes()
    one_line_error(main(diverging), capsys.readouterr(), "by epoch 1 (step 1)",
                   f"no checkpoint was written by this run: {path} was left as it was")
    assert path.read_bytes() == good
    later = tmp_path / "later.st"
    one_line_error(main(["train", *DATA, "--lr", "1e12", "--iterations", "5", "--log-every",
                         "1", "--save", str(later)]), capsys.readouterr(),
                   "by epoch 2 (step 2)", f"the last checkpoint, {later}, is from epoch 1 "
                   "(step 1), before it diverged, and evaluates")
    for kept in (path, later):
        assert main(["evaluate", str(kept), *DATA, "--json"]) == 0, capsys.readouterr().err


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


# --- The metrics file from one run to the next ------------------------------------------

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


# --- Resuming with the same settings; progress in a log (issue 22) ----------------------

def test_resume_with_the_settings_it_was_saved_with_is_no_change(tmp_path, capsys):
    """A job script may always add --resume: every setting given with its saved value is
    accepted; a different value is refused, naming the saved one."""
    path = tmp_path / "r.st"
    settings = ["--preset", "notebook", "--hidden", "10", "--lr", "0.2", "--optimizer", "sgd",
                "--weight-decay", "0", "--schedule", "constant", "--batch-size", "0",
                "--seed", "0", "--dtype", "float32", "--init", "uniform", "--log-every", "1"]
    assert main(["train", *DATA, *settings, "--iterations", "2", "--save", str(path)]) == 0
    assert main(["train", *DATA, *settings, "--iterations", "4", "--resume", str(path),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["iterations"] == 4
    assert ckpt.load(path).metadata["progress"]["step"] == 4
    one_line_error(main(["train", *DATA, "--resume", str(path), "--iterations", "6",
                         "--log-every", "2", "--hidden", "10"]), capsys.readouterr(),
                   "--log-every cannot change", "the saved run has --log-every 1")


def test_a_log_gets_plain_progress_lines_and_no_progress_silences_them(tmp_path):
    """stderr in a pipe (a log, CI): no bar frames, but a plain line every
    ``LINE_SECONDS`` (set to 0 here, so every step, to keep the test short)."""
    def train(*flags):
        argv = ["train", *DATA, "--iterations", "4", "--log-every", "2", "--json", *flags]
        return helpers.run_python(f"""
            import sys
            from multinet.cli import main
            from multinet.training import progress
            progress.LINE_SECONDS = 0
            sys.exit(main({argv!r}))
        """)

    logged = train()
    assert logged.returncode == 0 and json.loads(logged.stdout)["iterations"] == 4
    assert "\r" not in logged.stderr
    lines = logged.stderr.splitlines()
    assert len(lines) == 4, logged.stderr
    for step, line in enumerate(lines, 1):
        assert re.fullmatch(rf"multinet: train \[numpy\]: step {step}/4 \({25 * step}%\), "
                            r"\d+ s elapsed.*", line), line
    assert re.search(r"; at step 2: loss \d\.\d{4}, dev accuracy \d\.\d{4}$", lines[2])
    quiet = train("--no-progress")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_resume_refuses_a_checkpoint_trained_on_other_data(sample, tmp_path, capsys):
    """A run trained from Python on a subset recorded the full files' checksums, and
    ``--resume`` went on over every image of the files without a word."""
    import multinet

    subset = helpers.mnist_slice(sample, 1200, 100)
    multinet.fit(subset, iterations=2, dev_size=200, progress=False,
                 save=tmp_path / "subset.st")
    code = main(["train", *DATA, "--resume", str(tmp_path / "subset.st"), "--iterations", "4"])
    one_line_error(code, capsys.readouterr(), "the checkpoint was trained on a subset or data "
                   "of your own", "not on these 2048 training images", "--resume continues "
                   "a run only on the images and labels it was trained on")
    assert multinet.load(tmp_path / "subset.st").summary["iterations"] == 2  # untouched
    # The same files, read again: the record matches and the run goes on.
    assert main(["train", *DATA, "--iterations", "2", "--save", str(tmp_path / "all.st")]) == 0
    capsys.readouterr()
    assert main(["train", *DATA, "--resume", str(tmp_path / "all.st"), "--iterations", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["iterations"] == 3


# --- A run owns its outputs; every output checked for what it would overwrite (issue 22) --

def test_a_second_run_on_the_same_checkpoint_or_metrics_is_refused_naming_the_first(
        tmp_path, capsys):
    """``train --seed 1 --save same.st --metrics m.jsonl &`` and the same with ``--seed 2``
    both exited 0: the file held one run's model, m.jsonl both runs' records."""
    same, log = tmp_path / "same.st", tmp_path / "m.jsonl"
    first = start([*LONG, "--save", str(same), "--metrics", str(log), "--no-progress"],
                  cwd=tmp_path)
    try:
        wait_for_lines(log, 1, first)
        for args, flag in ((["--save", str(same)], f"--save {same}"),
                           (["--save", str(tmp_path / "b.st"), "--metrics", str(log)],
                            f"--metrics {log}"),
                           (["--resume", str(same)], f"--resume {same}")):
            one_line_error(main(["train", *DATA, "--iterations", "2000000", *args]),
                           capsys.readouterr(), f"{flag} is being written by another "
                           f"multinet run (pid {first.pid}, started ", "train",
                           "wait for it to end or choose another path")
        # From Python the same, before any data is read.
        with pytest.raises(OutputBusy, match=f"save='{same}' is being written by another "
                                             f"multinet run .pid {first.pid}, started "):
            multinet.fit(multinet.load_dataset(data_dir=helpers.SAMPLE_MNIST, verify=False),
                         save=same, progress=False)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert (tmp_path / ".same.st.multinet.lock").exists()  # left by SIGKILL, unlocked
    assert main(["train", *DATA, "--iterations", "2", "--save", str(same), "--metrics",
                 str(log), "--json"]) == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")]


@pytest.mark.parametrize("option", ["--metrics", "--save", "--plots"])
def test_a_named_pipe_or_a_device_as_an_output_is_refused_at_once(tmp_path, option):
    """``--metrics FIFO`` hung for ever before any work (opened to test it)."""
    os.mkfifo(tmp_path / "fifo")
    for target, what in ((tmp_path / "fifo", "is a named pipe (FIFO)"),
                         ("/dev/null", "is a device")):
        result = run_cli("train", *DATA, option, str(target), timeout=120)
        helpers.assert_one_line_error(result, f"{option} {target}: {what}, not a")


def test_train_replaces_another_kind_only_forced_and_never_what_it_resumes(tmp_path,
                                                                           capsys):
    run = ["train", *DATA, "--json"]
    notes, r = tmp_path / "notes.txt", tmp_path / "r.st"
    notes.write_text("my notes\n")
    assert main([*run, "--iterations", "1", "--save", str(r)]) == 0
    one_line_error(main([*run, "--iterations", "1", "--save", str(notes)]),
                   capsys.readouterr(), "is not a checkpoint (safetensors) but a file "
                   "multinet does not write", "--force")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "predictions.png").symlink_to(r)
    for args, fragment in (
            (["--save", str(tmp_path / "b.st"), "--metrics", str(r)],
             f"--metrics {r}: is the checkpoint the run resumes; writing there would "
             "destroy it"),
            (["--plots", str(plots)], f"--plots {plots / 'predictions.png'}: is the "
                                      "checkpoint the run resumes")):
        one_line_error(main([*run, "--resume", str(r), "--iterations", "2", "--force",
                             *args]), capsys.readouterr(), fragment)
    assert main([*run, "--iterations", "1", "--save", str(notes), "--force"]) == 0
    assert ckpt.load(notes).metadata["progress"]["step"] == 1
    # Resuming in place writes the newer checkpoint over the one it resumed: its lineage.
    assert main([*run, "--resume", str(r), "--iterations", "2", "--save", str(r)]) == 0
    assert ckpt.load(r).metadata["progress"]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "plots", "r.st"]


# --- Outputs that would defeat a lock, and outputs through links ------------------------

def test_an_output_named_as_another_runs_lock_file_is_refused_forced_or_not(tmp_path,
                                                                             capsys):
    """``--metrics .a.st.multinet.lock`` appended to the running run's lock file, and
    ``--save`` there with ``--force`` replaced it, so a third run could write a.st."""
    with multinet.locks.hold({"--save": tmp_path / "a.st"}):
        lock = multinet.locks.lock_path(tmp_path / "a.st")
        before = lock.read_bytes()
        for option, force in (("--metrics", []), ("--save", ["--force"]),
                              ("--plots", ["--force"])):
            one_line_error(main(["train", *DATA, "--iterations", "1", "--save",
                                 str(tmp_path / "x.st"), option, str(lock), *force]),
                           capsys.readouterr(), f"{option} {lock}: is the name of a multinet "
                           "lock file, which multinet keeps for itself")
        assert lock.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_save_through_a_link_updates_its_target_as_the_lock_and_metrics_do(tmp_path):
    """``--save link2.st`` replaced the link by a file and left its target as it was."""
    target, link = tmp_path / "tgt.st", tmp_path / "link2.st"
    assert main(["train", *DATA, "--iterations", "1", "--save", str(target)]) == 0
    link.symlink_to(target)
    (tmp_path / "m.jsonl").symlink_to(tmp_path / "log.jsonl")
    assert main(["train", *DATA, "--iterations", "3", "--log-every", "1", "--save", str(link),
                 "--metrics", str(tmp_path / "m.jsonl")]) == 0
    assert link.is_symlink() and ckpt.load(target).metadata["progress"]["step"] == 3
    assert [r["step"] for r in records(tmp_path / "log.jsonl")] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link2.st", "log.jsonl", "m.jsonl",
                                                          "tgt.st"]


# --- The summary's words ------------------------------------------------------------------

def test_the_summary_counts_in_the_singular_and_names_the_device_in_words(capsys):
    """``1 epoch``, not ``1 epochs``; the device as ``multinet backends`` and the bench
    name it, not as the library's object (``array_api_strict.Device('CPU_DEVICE')``)."""
    assert main(["train", *DATA, "--backend", "strict", "--preset", "mlp", "--epochs", "1",
                 "--hidden", "8", "--no-progress"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "backend strict on CPU_DEVICE," in first and first.endswith(", 1 epoch"), first
    assert main(["train", *DATA, "--iterations", "1", "--hidden", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "cpu"
    assert main(["train", *DATA, "--iterations", "1", "--hidden", "8", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(", 1 full-batch iteration")


# --- Networks of layers (--layers) --------------------------------------------------------

SMALL_LAYERS = "conv:2:3x3,relu,maxpool:2,flatten"


def test_layers_train_save_and_are_named_in_the_summary(tmp_path, capsys):
    """The preset's hyperparameters (cnn: Adam, batches of 128) with small layers of one's
    own; the checkpoint records them."""
    path = tmp_path / "c.st"
    assert main(["train", *DATA, "--preset", "cnn", "--layers", SMALL_LAYERS, "--epochs", "1",
                 "--save", str(path), "--no-progress"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert ("preset cnn: backend numpy on cpu, float32, layers conv:2:3x3:valid, relu, "
            "maxpool:2, flatten, dense:10, adam lr 0.001, batch 128, 1 epoch") in first, first
    assert ckpt.load(path).config.layers == ("conv:2:3x3:valid", "relu", "maxpool:2", "flatten")


@pytest.mark.parametrize("layers, fragment", [
    ("cnv:2", "argument --layers: unknown layer 'cnv:2'; the kinds are dense, conv, maxpool, "
              "avgpool, flatten, relu"),
    ("conv:2:5x3", "argument --layers: layer 'conv:2:5x3': the kernel must be square"),
    ("dense:0", "argument --layers: layer 'dense:0': its size must be an integer >= 1"),
    ("conv:2:3x3:full", "padding must be valid or same, got 'full'"),
    ("conv:2:30x30,flatten", "layer 'conv:2:30x30:valid': a 30x30 kernel does not fit 28x28"),
    ("conv:2:3x3,relu", "layer 'dense:10' reads rows but gets images 26x26x2: put 'flatten' "
                        "before it; the output layer dense:10 follows the layers given"),
    ("dense:64,relu,conv:4:3x3,flatten", "argument --layers: layer 'conv:4:3x3:valid' reads "
                                         "images, but 'dense:64' before it gives rows"),
    (" , ", "argument --layers: no layers given: write them comma-separated, each "
            "dense:UNITS, conv:CHANNELS:KxK[:valid|same]"),
])
def test_bad_layers_are_one_line_when_parsed(layers, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *DATA, "--layers", layers])
    one_line_error(info.value.code, capsys.readouterr(), fragment)


def test_hidden_and_layers_together_are_one_line():
    assert_one_line_error(run_cli("train", *DATA, "--hidden", "8", "--layers", SMALL_LAYERS),
                          "argument --layers: not allowed with argument --hidden")


def test_the_help_of_layers_names_the_kinds_and_the_form(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("--layers LAYERS the hidden layers of any network, comma-separated, each "
            "dense:UNITS, conv:CHANNELS:KxK[:valid|same], maxpool:SIZE, avgpool:SIZE, "
            "flatten or relu") in text
    assert "the output layer dense:10 follows them (default: cnn " in text
    assert f"(default:cnn{','.join(PRESETS['cnn']['layers'])})" in text.replace(" ", "")
    assert "--hidden N [N ...] a perceptron's hidden layer widths, one number per layer " \
           "(default: notebook 10, mlp 512 256)" in text


def test_layers_too_large_for_memory_are_one_line_naming_layers(capsys, monkeypatch):
    import multinet.training.memory as memory

    monkeypatch.setattr(memory, "physical_memory", lambda: 2**30)
    code = main(["train", *DATA, "--layers", "conv:512:5x5:same,relu,flatten"])
    one_line_error(code, capsys.readouterr(),
                   "the network conv:512:5x5:same, relu, flatten, dense:10 needs about",
                   "choose fewer channels and units in --layers, or a smaller --batch-size")


@pytest.mark.slow
def test_the_cnn_preset_trains_from_the_command_line(tmp_path):
    result = run_cli("train", *DATA, "--preset", "cnn", "--epochs", "1", "--no-progress",
                     "--save", str(tmp_path / "cnn.st"))
    assert result.returncode == 0, result.stderr
    assert "preset cnn" in result.stdout and "layers conv:" in result.stdout
    assert ckpt.load(tmp_path / "cnn.st").config.layers == PRESETS["cnn"]["layers"]
