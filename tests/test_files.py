"""Writing files (``multinet/files.py``): a line appended after one a crash cut off
starts on its own line; the kind of an existing file is told from its first bytes, and
only a file of the kind written is replaced without ``force``; special files are refused
without being opened. Atomic writes, their temporary files and the umask are checked
through checkpoints, in test_checkpoint.py; outputs refused before the work, through the
commands, in test_cli_train.py, test_cli_export.py and test_cli_plot.py."""

import json
import os
import re
import signal
import socket
from contextlib import contextmanager

import numpy as np
import pytest
from safetensors.numpy import save

from multinet import files
from multinet.files import OutputError


def test_a_metrics_line_cut_off_by_a_crash_does_not_swallow_the_next(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    files.append_line(path, json.dumps({"epoch": 3}))
    assert path.read_text().splitlines()[-1] == '{"epoch": 3}'


def checkpoint_bytes(header_pad: int = 0) -> bytes:
    return save({"W": np.zeros(3, np.float32)}, metadata={"pad": "x" * header_pad})


#: One file of each kind multinet writes, and files it does not, as their bytes.
SAMPLES = {
    "checkpoint": checkpoint_bytes(),
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20),
    # ir_version 10, then the graph (field 7): how onnx.save lays out a model without
    # producer fields.
    "onnx": b"\x08\x0a\x3a\x33\x0a\x0c\x0a\x01x" + bytes(20),
    "metrics": b'{"epoch": 1, "step": 1, "loss": 2.3}\n',
    "text": b"my notes\n",
    "json-ish binary": b"{\x00\x01\x02",
}


def test_the_kind_of_a_file_is_told_from_its_first_bytes():
    kinds = {name: files.file_kind(data[:64]) for name, data in SAMPLES.items()}
    assert kinds == {"checkpoint": "checkpoint", "png": "png", "onnx": "onnx",
                     "metrics": "metrics", "text": None, "json-ish binary": None}
    # A header 123 bytes long starts with "{" (0x7b), as a metrics file does.
    for pad in range(200):
        data = checkpoint_bytes(pad)
        assert files.file_kind(data[:64]) == "checkpoint", data[:16]


def test_the_onnx_models_multinet_writes_are_told_as_such():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    for model in (helper.make_model(graph), helper.make_model(graph, producer_name="multinet",
                                                              doc_string="d")):
        assert files.file_kind(model.SerializeToString()[:64]) == "onnx"


@pytest.mark.parametrize("written", ["checkpoint", "onnx", "png"])
def test_only_a_file_of_the_kind_written_is_replaced_without_force(tmp_path, written):
    for name, data in SAMPLES.items():
        path = tmp_path / name
        path.write_bytes(data)
        if name == written:
            files.check_output(path, "--out", written)
            continue
        with pytest.raises(OutputError, match="it would be replaced: give another file "
                                              "name, or force=True to replace it"):
            files.check_output(path, "--out", written)
        files.check_output(path, "--out", written, force=True)
    (tmp_path / "empty").touch()  # nothing to lose
    files.check_output(tmp_path / "empty", "--out", written)


def test_an_output_that_is_an_input_is_refused_even_with_force(tmp_path):
    path = tmp_path / "a.st"
    path.write_bytes(SAMPLES["checkpoint"])
    (tmp_path / "link.st").symlink_to(path)
    for given in (path, tmp_path / "link.st", tmp_path / "." / "a.st"):
        with pytest.raises(OutputError, match="is the checkpoint exported; writing there "
                                              "would destroy it"):
            files.check_output(given, "--onnx", "onnx", inputs={"the checkpoint exported":
                                                               path}, force=True)


def test_appending_to_a_file_of_another_kind_is_refused_even_with_force(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(SAMPLES["checkpoint"])
    with pytest.raises(OutputError, match="is not a metrics file .JSON lines. but a "
                                          "checkpoint .safetensors.; appending would "
                                          "damage it"):
        files.check_outputs(metrics=path, force=True)
    path.write_bytes(SAMPLES["metrics"])
    files.check_outputs(metrics=path)
    resumed = tmp_path / "r.st"
    resumed.write_bytes(SAMPLES["checkpoint"])
    with pytest.raises(OutputError, match="is the checkpoint the run resumes"):
        files.check_outputs(save=tmp_path / "b.st", metrics=resumed, resumed_from=resumed,
                            force=True)
    files.check_outputs(save=resumed, resumed_from=resumed)  # its own lineage


@contextmanager
def no_waiting(seconds=10):
    """Fail, rather than hang, where something opens a FIFO and waits for its reader."""
    def hung(*_):
        raise AssertionError("the check opened a special file and waited")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def special_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    (tmp_path / "to-fifo").symlink_to(fifo)
    return sock, {fifo: "a named pipe (FIFO)", tmp_path / "sock": "a socket",
                  tmp_path / "to-fifo": "a named pipe (FIFO)", "/dev/null": "a device"}


def test_special_files_are_refused_without_being_opened(tmp_path):
    sock, specials = special_files(tmp_path)
    try:
        with no_waiting():
            for path, what in specials.items():
                for check in (lambda: files.check_outputs(metrics=path),
                              lambda: files.check_outputs(save=path, force=True),
                              lambda: files.check_output(path, "--onnx", "onnx", force=True)):
                    with pytest.raises(OutputError, match=re.escape(str(path)) + "'?" + re.escape(
                            f": is {what}, not a regular file; give a file name")):
                        check()
                with pytest.raises(OutputError, match=re.escape(str(path)) + "'?"
                                   + re.escape(f": is {what}, not a folder")):
                    files.check_outputs(plots=path)
    finally:
        sock.close()


def test_an_output_named_as_a_lock_or_temporary_file_is_refused_whatever_force_says(
        tmp_path):
    """``--save .a.st.multinet.lock --force`` replaced another run's lock file (a third
    run could then write a.st while the first ran); ``--metrics`` appended to it."""
    lock = tmp_path / ".a.st.multinet.lock"
    lock.write_text('{"pid": 1}\n')
    temporary = files.temporary_path(tmp_path / "a.st", pid=12345)
    (tmp_path / "innocent.st").symlink_to(lock)
    for path, what in ((lock, "a multinet lock file"), (temporary, "a multinet temporary file"),
                       (tmp_path / "innocent.st", "a multinet lock file")):
        message = re.escape(str(path)) + "'?" + re.escape(
            f": is the name of {what}, which multinet keeps for itself")
        for check in (lambda: files.check_outputs(save=path, force=True),
                      lambda: files.check_outputs(metrics=path),
                      lambda: files.check_outputs(plots=path, force=True),
                      lambda: files.check_output(path, "--onnx", "onnx", force=True)):
            with pytest.raises(OutputError, match=message):
                check()
    assert lock.read_text() == '{"pid": 1}\n'
    files.check_outputs(save=tmp_path / ".hidden.st", metrics=tmp_path / ".multinet.jsonl")


def test_writing_through_a_link_replaces_its_target_and_keeps_the_link(tmp_path):
    """``--save link.st`` replaced the link by a file and left its target stale, while
    the run's lock and ``--metrics`` followed the link."""
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "tgt.st"
    target.write_bytes(b"old")
    link = tmp_path / "link.st"
    link.symlink_to(target)
    assert files.write_atomic(link, b"new") == link
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link.st", "runs", "tgt.st"]
    dangling = tmp_path / "dangling.st"
    dangling.symlink_to(tmp_path / "runs" / "new.st")
    files.write_atomic(dangling, b"made")
    assert dangling.is_symlink() and (tmp_path / "runs" / "new.st").read_bytes() == b"made"


def test_an_input_of_another_kind_says_what_it_is_and_what_to_give(tmp_path):
    sock, specials = special_files(tmp_path)
    try:
        with no_waiting():
            for path, what in specials.items():
                assert files.not_of_kind(path, "checkpoint") == (
                    f"is {what}, not a checkpoint (safetensors)")
    finally:
        sock.close()
    said = {}
    for kind, data in SAMPLES.items():
        (tmp_path / kind).write_bytes(data)
        said[kind] = files.not_of_kind(tmp_path / kind, "checkpoint")
    assert said == {
        "checkpoint": None, "text": None, "json-ish binary": None,
        "onnx": "is an ONNX model, which multinet export --onnx writes, not a checkpoint "
                "(safetensors): give the checkpoint it was exported from",
        "metrics": "is a metrics file (JSON lines), which multinet train --metrics writes, "
                   "not a checkpoint (safetensors): give a checkpoint (safetensors), which "
                   "multinet train --save writes",
        "png": "is a PNG picture, which multinet plot writes, not a checkpoint "
               "(safetensors): give a checkpoint (safetensors), which multinet train "
               "--save writes"}
    assert files.not_of_kind(tmp_path / "missing", "checkpoint") is None


def test_a_lock_file_given_as_an_input_is_named_as_one(tmp_path):
    """``--resume .a.st.multinet.lock`` called the lock file 'a metrics file'."""
    lock = tmp_path / ".a.st.multinet.lock"
    lock.write_text('{"pid": 1}\n')
    assert files.not_of_kind(lock, "checkpoint") == (
        "is a multinet lock file, not a checkpoint (safetensors)")
