"""Checkpoints (``multinet/checkpoint.py``): one holds everything a resume needs; every
malformed file is one ``CheckpointError`` (one line from the commands); a state that is not
finite is never written; a write is atomic whatever kills it, temporary files do not pile
up, and files honour the umask.

Malformed checkpoints are made by hand from a valid one (helpers.py: ``valid_parts``),
case by case and through hypothesis strategies over the metadata schema and the tensors
(docs/reliability.md).
"""

import copy
import json
import dataclasses
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import M, NUMPY, T, small_config, trained_checkpoint, valid_parts, write
from multinet import checkpoint as ckpt
from multinet import files
from multinet.cli import main
from multinet.data import Dataset
from multinet.errors import MultinetError
from multinet.training.config import TrainConfig
from multinet.training.loop import initial_state, train


# --- What a checkpoint holds ------------------------------------------------------------

def test_checkpoint_holds_everything_a_resume_needs(mnist, tmp_path):
    path, result = trained_checkpoint(mnist, tmp_path, epochs=1,
                                      dataset_sha256={"train_images": "abc"})
    loaded = ckpt.load(path)
    assert loaded.config == small_config(epochs=1)
    assert set(loaded.opt_state) == {"t", "m", "v"} and set(loaded.opt_state["m"]) == {
        "W1", "b1", "W2", "b2"}
    meta = loaded.metadata
    assert meta["progress"] == {"epoch": 1, "batch": 0, "step": 28,
                                "seconds": result.state.seconds}
    assert meta["dataset"]["content_sha256"] == {"train_images": "abc"}
    assert "epoch_order" in meta["rng"] and len(meta["history"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left


def test_the_results_and_the_data_trained_on_are_kept_with_the_final_state(tmp_path):
    """A summary is stored only with the state it describes (its ``iterations``); the
    record says how many images there were."""
    config = TrainConfig(hidden=(16,), epochs=5, log_every=1)
    state = initial_state(config, NUMPY, 784)
    summary = {"iterations": 0, "test_accuracy": 0.25, "train_accuracy": 0.5,
               "dev_accuracy": None, "backend": "numpy"}
    common = dict(backend=NUMPY, dataset_name="mnist", dataset_sha256={"train_images": "a"})
    ckpt.save(tmp_path / "a.st", config, state, dataset_samples={"train": 8, "test": 4},
              summary=summary, **common)
    loaded = ckpt.load(tmp_path / "a.st")
    assert loaded.results == {"test_accuracy": 0.25, "train_accuracy": 0.5,
                              "dev_accuracy": None}
    assert loaded.metadata["dataset"]["samples"] == {"train": 8, "test": 4}
    ckpt.save(tmp_path / "b.st", config, state, summary={**summary, "iterations": 3}, **common)
    assert ckpt.load(tmp_path / "b.st").results == {}  # a summary of another state


def test_the_valid_checkpoint_loads(tmp_path):
    loaded = ckpt.load(write(tmp_path / "ok.st", *valid_parts()))
    assert list(loaded.params) == ["W1", "b1", "W2", "b2"]
    assert loaded.opt_state["t"].shape == () and loaded.metadata["progress"]["step"] == 2


# --- Reading: every malformed file is one error -----------------------------------------

def assert_rejected(path, *fragments):
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_checkpoint_files_are_clear_errors(tmp_path):
    with pytest.raises(MultinetError, match="no such checkpoint"):
        ckpt.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MultinetError, match="not a readable safetensors"):
        ckpt.load(junk)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(MultinetError, match="not a multinet checkpoint"):
        ckpt.load(tmp_path / "other.safetensors")


def _without(tensors, *names):
    return {k: v for k, v in tensors.items() if k not in names}


def _with(tensors, **changes):
    return {**tensors, **{k.replace("__", "/"): v for k, v in changes.items()}}


def _meta(metadata, path, value):
    changed = copy.deepcopy(metadata)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


NESTED = "[" * 100_000 + "]" * 100_000

CASES = {
    # Each part of the schema in turn: the metadata, the tensors, their values.
    "metadata is a list": (T, "[1, 2]", "no valid multinet metadata"),
    "a tensor missing": (_without(T, "opt/v/W1"), M, "opt/v must hold one tensor per"),
    "W1 of the wrong shape": (_with(T, params__W1=np.zeros((100, 16), np.float32)), M,
                              "params/W1 has shape (100, 16), expected (784, 16)"),
    "JSON nested 100,000 deep": (T, NESTED, "no valid multinet metadata"),
    "no second layer": (_without(T, "params/W2", "params/b2", "opt/m/W2", "opt/m/b2",
                                 "opt/v/W2", "opt/v/b2"), M, "missing W2, b2"),
    "a 7-class output layer": (_with(T, params__W2=np.zeros((16, 7), np.float32),
                                     params__b2=np.zeros(7, np.float32)), M,
                               "params/W2 has shape (16, 7), expected (16, 10)"),
    "a negative epoch": (T, _meta(M, ("progress", "epoch"), -7),
                         "progress.epoch must be an integer >= 0, got -7"),
    "float16 in the configuration": (T, _meta(M, ("config", "dtype"), "float16"),
                                     "dtype must be one of float32, float64"),
    "a NaN weight": (_with(T, params__W1=np.full((784, 16), np.nan, np.float32)), M,
                     "params/W1 holds NaN"),
    "an infinite optimizer state": (_with(T, opt__v__b1=np.full(16, np.inf, np.float32)), M,
                                    "opt/v/b1 holds NaN or infinite"),
    "a foreign tensor": (_with(T, junk=np.zeros(1)), M, "unexpected tensor junk"),
    "float64 arrays, float32 config": (
        {k: v.astype(np.float64) for k, v in T.items()}, M,
        "is float64; the configuration says float32"),
    "widths unlike the configuration": (T, _meta(M, ("config", "hidden"), [32]),
                                        "expected (784, 32)"),
    "an optimizer state of another optimizer": (
        T, _meta(M, ("config", "optimizer"), "sgd"),
        "optimizer state of sgd must be opt/t; found opt/m, opt/t, opt/v"),
    "a step count unlike the optimizer's": (
        T, _meta(M, ("progress", "step"), 9), "opt/t is 2 but progress.step is 9"),
    "past the end of the run": (T, _meta(M, ("progress", "epoch"), 6), "past the end"),
    "an unknown dataset": (T, _meta(M, ("dataset", "name"), "cifar10"),
                           "dataset.name must be one of mnist, fashion-mnist"),
    "checksums that are not strings": (T, _meta(M, ("dataset", "content_sha256"),
                                                {"train_images": 5}), "dataset.content_sha256"),
    "history not a list": (T, _meta(M, ("history",), "x"), "history must be a list"),
    "sample counts below 1": (T, _meta(M, ("dataset", "samples"), {"train": 0, "test": 5}),
                              "dataset.samples must be an object of train and test counts"),
    "results not an object": (T, _meta(M, ("results",), [0.9]), "results must be an object"),
    "results of another step": (T, _meta(M, ("results",), {"step": 7, "test_accuracy": 0.9}),
                                "results.step must be progress.step, 2, got 7"),
    "results without their step": (T, _meta(M, ("results",), {"test_accuracy": 0.9}),
                                   "results.step missing"),
    "an accuracy above 1": (T, _meta(M, ("results",), {"step": 2, "test_accuracy": 93.5}),
                            "results.test_accuracy must be a number in [0, 1], got 93.5"),
    "a history record without its loss": (
        T, _meta(M, ("history", 1), {"epoch": 2, "step": 2}), "history[1].loss missing"),
    "momentum of 1.5": (T, _meta(M, ("config", "momentum"), 1.5), "momentum must be a number in [0, 1)"),
    "a learning rate as text": (T, _meta(M, ("config", "lr"), "0.1"), "lr must be a number"),
    "a learning rate too large for a float": (T, _meta(M, ("config", "lr"), 10**400),
                                              "lr must be a finite number > 0"),
    "seconds too large for a float": (T, _meta(M, ("progress", "seconds"), 10**400),
                                      "progress.seconds must be a finite number"),
    "a boolean for an integer": (T, _meta(M, ("config", "epochs"), True),
                                 "epochs must be an integer"),
    "an unknown configuration field": (T, _meta(M, ("config", "colour"), "red"),
                                       "unknown field 'colour'"),
    "not JSON": (T, "{'format': ", "no valid multinet metadata"),
    "another format": (T, _meta(M, ("format",), "multinet-checkpoint/99"),
                       "no valid multinet metadata"),
    "progress not an object": (T, _meta(M, ("progress",), [2, 0, 2]),
                               "progress must be an object"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_checkpoint_is_one_checkpoint_error(tmp_path, case):
    tensors, metadata, fragment = CASES[case]
    assert_rejected(write(tmp_path / "bad.st", tensors, metadata), fragment)


def test_a_truncated_file_and_an_unreadable_header_are_one_line(tmp_path):
    good = write(tmp_path / "ok.st", T, M)
    data = good.read_bytes()
    (tmp_path / "cut.st").write_bytes(data[: len(data) // 2])
    assert_rejected(tmp_path / "cut.st", "not a readable safetensors file")
    (tmp_path / "huge.st").write_bytes((2**62).to_bytes(8, "little") + b"{}")
    assert_rejected(tmp_path / "huge.st", "not a readable safetensors file")


def test_a_folder_or_a_path_that_is_no_file_name_is_named_as_such(tmp_path):
    import multinet
    from multinet.errors import InvalidArgument

    (tmp_path / "run.safetensors").mkdir()
    assert_rejected(tmp_path / "run.safetensors", "is a folder, not a checkpoint")
    for wrong in (5, b"a.st"):  # (None is the pretrained network: test_pretrained.py)
        with pytest.raises(InvalidArgument, match="path must be a checkpoint's file name"):
            multinet.load(wrong)


def test_a_special_file_given_as_a_checkpoint_says_what_it_is_without_opening_it(tmp_path):
    """``evaluate FIFO`` and ``evaluate /dev/zero`` said "no such checkpoint file"."""
    os.mkfifo(tmp_path / "ff")
    signal.alarm(10)  # a FIFO opened would wait for a writer: fail rather than hang
    try:
        assert_rejected(tmp_path / "ff", "ff: is a named pipe (FIFO), not a checkpoint")
        assert_rejected("/dev/zero", "/dev/zero: is a device, not a checkpoint")
    finally:
        signal.alarm(0)


def test_another_kind_of_file_given_as_a_checkpoint_is_named_by_its_kind(tmp_path, capsys):
    """An ONNX model given as a checkpoint said "not a readable safetensors file ('header
    too large')"; so did a metrics log or a picture."""
    pytest.importorskip("onnx")
    import multinet

    onnx = tmp_path / "mlp.onnx"
    assert main(["export", str(write(tmp_path / "ok.st", T, M)), "--onnx", str(onnx)]) == 0
    capsys.readouterr()
    exported = ("mlp.onnx: is an ONNX model, which multinet export --onnx writes, not a "
                "checkpoint (safetensors): give the checkpoint it was exported from")
    with pytest.raises(ckpt.CheckpointError, match=re.escape(exported)):
        multinet.load(onnx)
    for args in (["plot", str(onnx), "--out", str(tmp_path / "p")],
                 ["export", str(onnx), "--onnx", str(tmp_path / "x.onnx")],
                 ["train", "--resume", str(onnx)],
                 ["evaluate", str(onnx), "--against", str(onnx)]):
        code = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and exported in err[0], (args, err)
    (tmp_path / "m.jsonl").write_text('{"epoch": 1, "step": 1, "loss": 2.3}\n')
    assert_rejected(tmp_path / "m.jsonl", "is a metrics file (JSON lines), which multinet "
                    "train --metrics writes, not a checkpoint", "multinet train --save")
    (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    assert_rejected(tmp_path / "p.png", "is a PNG picture", "not a checkpoint")


@pytest.mark.parametrize("command", [["evaluate"], ["train", "--resume"], ["plot", "--out", "p"]])
def test_the_commands_reject_a_nan_checkpoint_with_one_line(tmp_path, capsys, command):
    tensors, metadata, _ = CASES["a NaN weight"]
    path = write(tmp_path / "nan.st", tensors, metadata)
    args = [*command, str(path)] if command[0] != "plot" else ["plot", str(path), "--out",
                                                                str(tmp_path / "p")]
    code = main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"multinet: error: {path}: not a valid multinet checkpoint: "
                               "params/W1 holds NaN")


@pytest.mark.parametrize("name", ["junk\nmultinet: error: second line", "params/W9\r\nx"])
def test_a_tensor_name_with_a_line_break_is_still_one_line(tmp_path, capsys, name):
    """The name comes from the file: printed raw, it split the error into two lines."""
    path = write(tmp_path / "bad.st", {**T, name: np.zeros(1, np.float32)}, M)
    code = main(["evaluate", str(path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"multinet: error: {path}: not a valid multinet checkpoint")
    assert "\\n" in lines[0]


# --- The schema as a hypothesis strategy ------------------------------------------------

def _paths(value, prefix=()):
    """Every place in a JSON value: ``(path, value)``."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


PLACES = [path for path, _ in _paths(M) if path]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([10**400, -10**400])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=5)

#: 1,100 random images: 1,000 held out as dev (the configuration's default), 100 to train.
RANDOM_IMAGES = Dataset(
    name="mnist", directory=Path("."),
    train_images=np.random.default_rng(0).integers(0, 256, (1100, 28, 28), np.uint8),
    train_labels=np.random.default_rng(1).integers(0, 10, 1100).astype(np.uint8),
    test_images=np.zeros((20, 28, 28), np.uint8), test_labels=np.zeros(20, np.uint8))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(PLACES), value=JSON, delete=st.booleans())
def test_any_change_to_the_metadata_is_rejected_or_harmless(tmp_path, place, value, delete):
    """Whatever value lands anywhere in the metadata (or a key disappears): loading raises
    ``CheckpointError``, or the checkpoint is one that resumes. Nothing else escapes."""
    metadata = copy.deepcopy(M)
    node = metadata
    for key in place[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[place[-1]]
    else:
        node[place[-1]] = value
    path = tmp_path / "mutated.st"
    write(path, T, metadata)
    try:
        loaded = ckpt.load(path)
    except ckpt.CheckpointError:
        return
    progress = loaded.metadata["progress"]
    config = dataclasses.replace(loaded.config, epochs=progress["epoch"] + 1)
    try:
        with np.errstate(all="ignore"):
            train(config, NUMPY, RANDOM_IMAGES, progress=False, state=loaded.state_on(NUMPY))
    except MultinetError:
        pass  # a state that does not fit this data: said in one line


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(T)),
       change=st.sampled_from(["drop", "nan", "inf", "float64", "int32", "float16", "shape",
                               "scalar", "extra"]))
def test_any_damaged_tensor_is_rejected(tmp_path, name, change):
    tensors = dict(T)
    value = tensors[name]
    if change == "drop":
        del tensors[name]
    elif change in ("nan", "inf"):
        tensors[name] = np.full_like(value, np.nan if change == "nan" else -np.inf)
    elif change in ("float64", "int32", "float16"):
        tensors[name] = value.astype(change)
    elif change == "shape":
        tensors[name] = np.zeros((*value.shape, 2), value.dtype)
    elif change == "scalar":
        tensors[name] = np.zeros((3,) if value.shape == () else (), value.dtype)
    else:
        tensors[f"{name}/extra"] = np.zeros(1, np.float32)
    assert_rejected(write(tmp_path / "damaged.st", tensors, M))


# --- Writing: never a bad state, atomic, clean, umask -----------------------------------

def _state(tmp_path, bad=False):
    config = TrainConfig(hidden=(16,), epochs=5)
    state = initial_state(config, NUMPY, 784)
    if bad:
        state.params = {**state.params, "b2": np.full(10, np.nan, np.float32)}
    return config, state


def _save(path, config, state):
    return ckpt.save(path, config, state, backend=NUMPY, dataset_name="mnist",
                     dataset_sha256={})


def test_a_state_that_is_not_finite_is_never_written(tmp_path):
    path = tmp_path / "c.st"
    _save(path, *_state(tmp_path))
    before = path.read_bytes()
    with pytest.raises(ckpt.CheckpointError, match="params/b2 hold"):
        _save(path, *_state(tmp_path, bad=True))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.st"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path,
                                                                        monkeypatch):
    path = tmp_path / "c.st"
    _save(path, *_state(tmp_path))
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(files.OutputError,
                       match=f"cannot write the checkpoint {path}: No space left on device"):
        _save(path, *_state(tmp_path))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.st"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoints_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = _save(tmp_path / "c.st", *_state(tmp_path))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_stale_temporaries_of_dead_processes_are_removed_on_the_next_write(tmp_path):
    path = tmp_path / "c.st"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = files.temporary_path(path, dead.pid)
    alive = files.temporary_path(path, os.getppid())      # another running process
    elsewhere = tmp_path / f".c.st.multinet.another-host.{dead.pid}.tmp"
    unrelated = tmp_path / f".other.st.multinet.{host}.{dead.pid}.tmp"
    for p in (stale, alive, elsewhere, unrelated):
        p.write_bytes(b"partial")
    _save(path, *_state(tmp_path))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["c.st", alive.name, elsewhere.name, unrelated.name])
    assert stale.name.startswith(".c.st.multinet.") and stale.name.endswith(".tmp")


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from multinet import checkpoint as ckpt
    from multinet.registry import get_backend
    from multinet.training.config import TrainConfig
    from multinet.training.loop import initial_state
    numpy = get_backend("numpy")
    config = TrainConfig(hidden=(2048,), optimizer="adam", epochs=10**6)
    state = initial_state(config, numpy, 784)
    print("ready", flush=True)
    while True:
        state.epoch = state.step = state.step + 1
        state.opt_state = {**state.opt_state, "t": np.asarray(state.step, np.float32)}
        ckpt.save(sys.argv[1], config, state, backend=numpy, dataset_name="mnist",
                  dataset_sha256={})
""")


def kill_during_saves(folder: Path, kills: int, seed: int = 0) -> int:
    """SIGKILL a process that saves a 19 MB checkpoint in a loop, ``kills`` times; after
    each, the file is a whole checkpoint and at most one temporary file is there. Returns
    how many kills left a temporary file (hit a save in progress)."""
    rng = np.random.default_rng(seed)
    path, hits = folder / "k.st", 0
    for _ in range(kills):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "ready\n"
        time.sleep(float(rng.uniform(0.2, 0.6)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        temporaries = list(folder.glob(".k.st.*"))
        assert len(temporaries) <= 1, temporaries
        hits += len(temporaries)
        if path.exists():
            assert ckpt.load(path).metadata["progress"]["step"] >= 1
    return hits


def test_sigkill_during_saves_leaves_a_whole_file_and_one_temporary_at_most(tmp_path):
    kill_during_saves(tmp_path, kills=3)
    _save(tmp_path / "k.st", *_state(tmp_path))  # the next save cleans up
    assert [p.name for p in tmp_path.iterdir()] == ["k.st"]


@pytest.mark.slow
def test_sigkill_during_saves_in_a_long_loop(tmp_path):
    hits = kill_during_saves(tmp_path, kills=40, seed=1)
    assert hits > 0  # the loop did hit saves in progress
    _save(tmp_path / "k.st", *_state(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["k.st"]


# --- decode: the bytes of a file --------------------------------------------------------

def test_decode_reads_what_encode_writes_and_load_is_the_file_read_and_decoded(tmp_path):
    config, state = _state(tmp_path)
    common = dict(backend=NUMPY, dataset_name="mnist", dataset_sha256={"train_images": "a"})
    decoded = ckpt.decode(ckpt.encode(config, state, **common))
    loaded = ckpt.load(ckpt.save(tmp_path / "c.st", config, state, **common))
    assert decoded.config == loaded.config == config
    assert list(decoded.params) == list(loaded.params) == ["W1", "b1", "W2", "b2"]
    for name, value in state.params.items():
        assert np.array_equal(decoded.params[name], value)
        assert np.array_equal(loaded.params[name], value)
    assert decoded.metadata["progress"] == loaded.metadata["progress"]


@pytest.mark.parametrize("data, fragment", [
    (b"not a checkpoint at all", "not a readable safetensors file"),
    (b"", "not a readable safetensors file"),
    ("text", "data must be the bytes of a checkpoint file, got str"),
])
def test_decode_refuses_what_is_no_checkpoint_in_one_line_without_a_path(data, fragment):
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.decode(data)
    assert str(info.value).startswith(fragment) and "\n" not in str(info.value)


# --- Networks of layers: the schema records them ----------------------------------------

#: Small hidden layers: 28x28x1 -> 26x26x2 -> 13x13x2 -> 338, then the output dense:10.
LAYERS = ("conv:2:3x3:valid", "relu", "maxpool:2", "flatten")


def _split(raw: bytes):
    """``(tensors, metadata)`` of a checkpoint's bytes."""
    from safetensors.numpy import load

    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    return load(raw), json.loads(header["__metadata__"]["multinet"])


def layer_parts():
    """``(tensors, metadata)`` of a valid checkpoint of ``LAYERS``: two steps of five."""
    config = TrainConfig(hidden=(), layers=LAYERS, optimizer="adam", epochs=5, log_every=1)
    state = initial_state(config, NUMPY, 784)
    state.opt_state = {**state.opt_state, "t": np.asarray(2.0, np.float32)}
    state.epoch = state.step = 2
    return _split(ckpt.encode(config, state, backend=NUMPY, dataset_name="mnist",
                              dataset_sha256={}))


LT, LM = layer_parts()


def test_a_checkpoint_records_its_layers_and_reads_them_back(tmp_path):
    loaded = ckpt.load(write(tmp_path / "layers.st", LT, LM))
    assert LM["config"]["layers"] == list(LAYERS) and LM["config"]["hidden"] == []
    assert loaded.config.layers == LAYERS
    assert {k: v.shape for k, v in loaded.params.items()} == {
        "W1": (3, 3, 1, 2), "b1": (2,), "W2": (13 * 13 * 2, 10), "b2": (10,)}
    assert {k: v.shape for k, v in loaded.opt_state["v"].items()} == {
        k: v.shape for k, v in loaded.params.items()}


# The configuration of ``valid_parts`` as multinet wrote it before there were layers (at
# commit 5410114): a perceptron's is written unchanged, without a ``layers`` key.
BEFORE_LAYERS = ('{"preset": "notebook", "hidden": [16], "lr": 0.2, "optimizer": "adam", '
                 '"momentum": 0.9, "weight_decay": 0.0, "schedule": "constant", '
                 '"batch_size": 0, "epochs": 5, "seed": 0, "dtype": "float32", '
                 '"dev_size": 1000, "init": "uniform", "log_every": 1}')


def test_a_perceptron_checkpoint_writes_its_configuration_as_before_there_were_layers():
    assert json.dumps(M["config"]) == BEFORE_LAYERS


def test_a_checkpoint_written_before_there_were_layers_loads_as_a_perceptron():
    """The pretrained network was written by multinet 0.1.0, before layers."""
    from multinet import pretrained

    loaded = ckpt.load(pretrained.path())
    assert "layers" not in loaded.metadata["config"]
    assert loaded.config.hidden == (256,) and loaded.config.layers == ()
    assert loaded.params["W1"].shape == (784, 256)


def _opt_without(tensors, name):
    return _without(tensors, f"params/{name}", f"opt/m/{name}", f"opt/v/{name}")


LAYER_CASES = {
    "a kernel of the wrong size": (_with(LT, params__W1=np.zeros((5, 5, 1, 2), np.float32)),
                                   LM, "params/W1 has shape (5, 5, 1, 2), expected (3, 3, 1, 2)"),
    "more input channels than the images have": (
        _with(LT, params__W1=np.zeros((3, 3, 2, 2), np.float32)), LM,
        "params/W1 has shape (3, 3, 2, 2), expected (3, 3, 1, 2)"),
    "a perceptron's tensors under layers": (T, LM,
                                            "params/W1 has shape (784, 16), expected (3, 3, 1, 2)"),
    "layers' tensors under a perceptron": (LT, M, "params/W1 has shape (3, 3, 1, 2), "
                                                  "expected (784, 16)"),
    "a dense layer after the convolution of the wrong width": (
        _with(LT, params__W2=np.zeros((26 * 26 * 2, 10), np.float32)), LM,
        "params/W2 has shape (1352, 10), expected (338, 10)"),
    "a missing bias": (_opt_without(LT, "b1"), LM, "for the network conv:2:3x3:valid, relu, "
                                                   "maxpool:2, flatten, dense:10; missing b1"),
    "a float64 kernel": (_with(LT, params__W1=LT["params/W1"].astype(np.float64)), LM,
                         "params/W1 is float64; the configuration says float32"),
    "a layer that cannot be read": (LT, _meta(LM, ("config", "layers"), ["conv:2:3y3"]),
                                    "config: layers: layer 'conv:2:3y3'"),
    "an unknown kind of layer": (LT, _meta(LM, ("config", "layers"), ["lstm:4"]),
                                 "config: layers: unknown layer 'lstm:4'"),
    "layers that do not fit together": (
        LT, _meta(LM, ("config", "layers"), ["conv:2:30x30"]),
        "config: layers: layer 'conv:2:30x30:valid': a 30x30 kernel does not fit 28x28"),
    "images where the output layer reads rows": (
        LT, _meta(LM, ("config", "layers"), ["conv:2:3x3"]),
        "config: layers: layer 'dense:10' reads rows but gets images 26x26x2"),
    "layers as one string": (LT, _meta(LM, ("config", "layers"), ",".join(LAYERS)),
                             "config: layers must be a list of strings"),
    "layers and hidden widths both": (LT, _meta(LM, ("config", "hidden"), [16]),
                                      "config: hidden and layers both describe the network"),
    "neither layers nor hidden widths": (LT, _meta(LM, ("config", "layers"), []),
                                         "config: give the network as hidden"),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_a_checkpoint_unlike_its_layers_is_one_error_naming_the_tensor_or_layer(tmp_path,
                                                                                 case):
    tensors, metadata, fragment = LAYER_CASES[case]
    assert_rejected(write(tmp_path / "bad.st", tensors, metadata), fragment)


def test_evaluate_refuses_a_kernel_of_the_wrong_size_in_one_line(tmp_path, capsys):
    tensors, metadata, _ = LAYER_CASES["a kernel of the wrong size"]
    path = write(tmp_path / "bad.st", tensors, metadata)
    code = main(["evaluate", str(path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == [f"multinet: error: {path}: not a valid multinet "
                                   "checkpoint: params/W1 has shape (5, 5, 1, 2), expected "
                                   "(3, 3, 1, 2)"]


LAYER_TEXT = st.sampled_from([*LAYERS, "dense:4", "conv:1:5x5:same", "avgpool:2", "conv:0:3x3",
                              "maxpool:30", "dense:10", "conv:2:3x3:full"]) | st.text(max_size=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.lists(LAYER_TEXT, max_size=5))
def test_any_layers_in_the_configuration_are_rejected_in_one_line_or_match_the_tensors(
        tmp_path, layers):
    path = write(tmp_path / "layers.st", LT, _meta(LM, ("config", "layers"), layers))
    try:
        loaded = ckpt.load(path)
    except ckpt.CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    assert loaded.config.network_layers() == TrainConfig(hidden=(), layers=LAYERS
                                                         ).network_layers()
