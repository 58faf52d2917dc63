"""``multinet export`` as a user runs it, and ``multinet evaluate`` of the ONNX models
it writes (``--against`` a checkpoint): the two agree, and bad checkpoints, unwritable
outputs, a file that is no model, overflowing weights and a missing extra are each one
error line. The graphs themselves are in test_export.py."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ndonnx")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import helpers  # noqa: E402
from helpers import (M, assert_one_line_error, data_args, run_cli,  # noqa: E402
                     train_and_save, with_weights, write)
from multinet import checkpoint as ckpt  # noqa: E402
from multinet import export  # noqa: E402
from multinet.cli import main  # noqa: E402
from multinet.registry import get_backend  # noqa: E402
from multinet.training.config import TrainConfig  # noqa: E402


def test_export_and_evaluate_from_the_command_line(full_mnist, tmp_path):
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(full_mnist, 1200, 100)
    path = train_and_save(tmp_path, "mlp", TrainConfig.from_preset(
        "mlp", hidden=(32,), epochs=1, batch_size=50, dev_size=200), numpy, data)
    other = train_and_save(tmp_path, "other", TrainConfig.from_preset(
        "mlp", hidden=(32,), epochs=1, batch_size=50, dev_size=200, seed=1), numpy, data)
    model, step = tmp_path / "out" / "mlp.onnx", tmp_path / "out" / "step.onnx"
    exported = run_cli("export", str(path), "--onnx", str(model), "--onnx-train", str(step),
                       "--batch-size", "64")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.split() == [str(model), str(step)]
    assert export.open_model(step).inputs["images"][0] == (64, 28, 28)

    agree = run_cli("evaluate", str(model), "--against", str(path), *data_args(full_mnist))
    assert agree.returncode == 0, agree.stderr
    assert "test accuracy" in agree.stdout and "confusion matrix" in agree.stdout
    assert "agrees with" in agree.stdout and "10000 of 10000" in agree.stdout

    # Another network's outputs do not agree: exit 1, and the JSON says why.
    differ = run_cli("evaluate", str(model), "--against", str(other), "--json",
                     *data_args(full_mnist))
    assert differ.returncode == 1, differ.stderr
    report = json.loads(differ.stdout)
    assert report["test_samples"] == 10_000 and not report["against"]["agrees"]
    assert report["against"]["logit_error"] > export.LOGIT_TOLERANCE


def test_bad_checkpoints_and_unwritable_outputs_are_one_line_errors(small_checkpoint,
                                                                    tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = str(tmp_path / "m.onnx")
    for args, fragment in (
            (["export", str(tmp_path / "missing.safetensors"), "--onnx", out],
             "no such checkpoint"),
            (["export", str(garbage), "--onnx", out], "garbage.safetensors"),
            (["export", str(small_checkpoint), "--onnx", str(blocker / "m.onnx")],
             f"--onnx {blocker / 'm.onnx'}"),
            (["export", str(small_checkpoint), "--onnx", out, "--onnx-train", str(tmp_path)],
             f"--onnx-train {tmp_path}"),
            (["export", str(small_checkpoint)], "--onnx"),
            (["export", str(small_checkpoint), "--onnx", out, "--batch-size", "8"],
             "--onnx-train"),
            (["evaluate", str(garbage.with_suffix(".onnx"))], "no such ONNX model"),
            (["evaluate", str(blocker), "--against", str(small_checkpoint)], "--against")):
        assert_one_line_error(run_cli(*args), fragment)
    assert not (tmp_path / "m.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "garbage.safetensors"]


def test_both_models_onto_one_file_is_refused_before_any_work(small_checkpoint, tmp_path):
    same = tmp_path / "m.onnx"
    result = run_cli("export", str(small_checkpoint), "--onnx", str(same), "--onnx-train",
                     str(tmp_path / "." / "m.onnx"))
    assert_one_line_error(result, "--onnx and --onnx-train name the same file")
    assert not same.exists()


def test_a_file_that_is_no_model_is_a_one_line_error(small_checkpoint, tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x08\x07 definitely not protobuf" * 4)
    assert_one_line_error(run_cli("evaluate", str(fake)), f"{fake}: not an ONNX model")
    # A training graph is an ONNX model, but not one that evaluate can run.
    step = export.write(export.training_model(ckpt.load(small_checkpoint)),
                        tmp_path / "step.onnx")
    assert_one_line_error(run_cli("evaluate", str(step)), "not a multinet inference model")


def test_an_overflowing_model_and_its_checkpoint_are_one_line_errors(tmp_path):
    """Weights of 1e30, whose logits are inf and NaN, are not exported; a model of them
    written all the same: ``evaluate`` reported labels read from them as accuracies, and
    ``--against`` printed NumPy's overflow warnings and "logits relative error inf"."""
    huge = write(tmp_path / "huge.st", with_weights(1e30), M)
    model = tmp_path / "m.onnx"
    assert_one_line_error(run_cli("export", str(huge), "--onnx", str(model)),
                          "weights are too large for float32", "nothing was exported")
    assert not model.exists()
    export.write(export.inference_model(ckpt.load(huge)), model)
    sample = ["--data-dir", str(helpers.SAMPLE_MNIST), "--no-verify"]
    assert_one_line_error(run_cli("evaluate", str(model), *sample),
                          "logits are inf or NaN on 512 of 512 images")
    assert_one_line_error(run_cli("evaluate", str(model), "--against", str(huge), *sample),
                          "logits are inf or NaN")
    from multinet.errors import OutputsNotFinite

    images = np.full((3, 28, 28), 255, dtype=np.uint8)
    with pytest.raises(OutputsNotFinite, match="3 of 3 images"):  # multinet's own side
        export.multinet_outputs(ckpt.load(huge).params, get_backend("numpy"), images,
                                "float32")


def _main_result(argv, capsys):
    code = main(argv)
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


@pytest.mark.parametrize("library", ["ndonnx", "onnx", "onnxruntime"])
def test_without_the_extra_export_says_what_to_install(library, small_checkpoint, tmp_path,
                                                      monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, library, None)  # makes `import library` fail
    out = tmp_path / "m.onnx"
    result = _main_result(["export", str(small_checkpoint), "--onnx", str(out)], capsys)
    assert_one_line_error(result, library, "pip install 'multinet[onnx]'")
    assert not out.exists()


def test_without_onnxruntime_evaluate_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = _main_result(["evaluate", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(result, "onnxruntime", "pip install 'multinet[onnx]'")


def test_export_never_writes_over_its_checkpoint_and_replaces_another_kind_only_forced(
        small_checkpoint, tmp_path, capsys):
    """``export a.st --onnx a.st`` replaced the checkpoint by its model (exit 0);
    ``--onnx`` over a metrics log or another checkpoint replaced it as well; a FIFO
    or a device as ``--onnx`` was opened."""
    source = tmp_path / "a.st"
    source.write_bytes(small_checkpoint.read_bytes())
    other, log = tmp_path / "other.st", tmp_path / "m.jsonl"
    other.write_bytes(small_checkpoint.read_bytes())
    log.write_text('{"epoch": 1}\n')
    os.mkfifo(tmp_path / "fifo")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for out, force, fragment in (
            (source, "--force", f"--onnx {source}: is the checkpoint exported; writing "
                                "there would destroy it"),
            (tmp_path / "." / "a.st", "--force", "is the checkpoint exported"),
            (other, "", "is not an ONNX model but a checkpoint (safetensors); it would be "
                        "replaced: give another file name, or --force"),
            (log, "", "is not an ONNX model but a metrics file (JSON lines)"),
            (tmp_path / "fifo", "--force", "is a named pipe (FIFO), not a regular file"),
            ("/dev/null", "--force", "/dev/null: is a device")):
        result = _main_result(["export", str(source), "--onnx", str(out),
                               *([force] if force else [])], capsys)
        assert_one_line_error(result, fragment)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    # A model replaces a model; --force replaces a file of another kind.
    model = tmp_path / "m.onnx"
    for _ in range(2):
        assert main(["export", str(source), "--onnx", str(model)]) == 0
    assert main(["export", str(source), "--onnx", str(log), "--force"]) == 0
    assert export.open_model(log).outputs.keys() >= {"logits", "labels"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.st", "fifo", "m.jsonl",
                                                          "m.onnx", "other.st"]


def test_export_is_refused_while_another_multinet_run_writes_its_output(
        small_checkpoint, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    other = subprocess.Popen([sys.executable, "-c", (
        "from multinet import locks; import time\n"
        f"held = locks.hold({{'--onnx': {str(model)!r}}}); print('held', flush=True)\n"
        "time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "held\n"
        result = _main_result(["export", str(small_checkpoint), "--onnx", str(model)],
                              capsys)
    finally:
        other.kill()
        other.wait()
    assert_one_line_error(result, f"--onnx {model} is being written by another multinet "
                                  f"run (pid {other.pid}, started ")
    assert not model.exists()
