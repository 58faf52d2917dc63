"""The locks a run holds on its outputs (``multinet/locks.py``): a second writer is
refused at once naming the first, a killed owner's lock is free again, and a released
lock leaves nothing on disk. Two real ``multinet train`` runs on one path are in
test_cli_train.py."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from multinet import locks
from multinet.locks import OutputBusy

pytestmark = pytest.mark.skipif(locks.fcntl is None, reason="no flock on this platform")


def holder(path):
    """A process that holds the lock on ``path`` until it is killed."""
    code = textwrap.dedent(f"""
        import time
        from multinet import locks
        held = locks.hold({{"--out": {str(path)!r}}})
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_writer_is_refused_naming_the_first_until_it_is_killed(tmp_path):
    path = tmp_path / "same.st"
    process = holder(path)
    try:
        with pytest.raises(OutputBusy) as refused:
            locks.hold({"--save": path})
        message = str(refused.value)
        assert message.startswith(f"--save {path} is being written by another multinet run "
                                  f"(pid {process.pid}, started ")
        assert message.endswith("); wait for it to end or choose another path")
        assert "\n" not in message and refused.value.owner["pid"] == process.pid
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    # The kernel let go of the killed process's lock; its file stayed, and is taken over.
    assert locks.lock_path(path).exists()
    with locks.hold({"--save": path}):
        assert locks.lock_path(path).read_text().startswith(f'{{"pid": {os.getpid()},')
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_all_or_none_of_a_runs_outputs_are_locked(tmp_path):
    process = holder(tmp_path / "m.jsonl")
    try:
        with pytest.raises(OutputBusy, match="--metrics"):
            locks.hold({"--save": tmp_path / "a.st", "--metrics": tmp_path / "m.jsonl"})
        assert not locks.lock_path(tmp_path / "a.st").exists()  # taken, then given back
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_a_released_lock_leaves_no_file_and_no_folder_it_made(tmp_path):
    deep = tmp_path / "runs" / "today" / "a.st"
    held = locks.hold({"--save": deep, "--plots": tmp_path / "plots"})
    assert locks.lock_path(deep).parent.is_dir()
    held.release()
    assert list(tmp_path.iterdir()) == []
    # A folder that holds an output by then stays.
    with locks.hold({"--save": deep}):
        deep.write_bytes(b"x")
    assert [p.name for p in deep.parent.iterdir()] == ["a.st"]


def test_release_removes_only_the_lock_file_it_locked(tmp_path):
    """A file put at the lock's path while the run held it (replaced by hand, or by
    another program) is not the run's to remove when it ends."""
    output = tmp_path / "a.st"
    lock = locks.lock_path(output)
    held = locks.hold({"--save": output})
    replacement = tmp_path / "other"
    replacement.write_text("someone else's\n")
    os.replace(replacement, lock)
    held.release()
    assert lock.read_text() == "someone else's\n"
    with locks.hold({"--save": output}):  # the next run takes the file over...
        pass
    assert not lock.exists()  # ...and, as it is then the one locked, removes it


def test_two_spellings_of_one_output_share_its_lock(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    process = holder(tmp_path / "real" / "a.st")
    try:
        with pytest.raises(OutputBusy):
            locks.hold({"--save": tmp_path / "link" / ".." / "real" / "a.st"})
        with pytest.raises(OutputBusy):
            locks.hold({"--save": tmp_path / "link" / "a.st"})
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_another_thread_is_refused_and_the_same_thread_nests(tmp_path):
    """Two ``fit`` calls in two threads of one process are two runs; ``Run.save_plots``
    inside ``fit``'s own hold of the folder is the same run."""
    path = tmp_path / "a.st"
    errors = []
    with locks.hold({"save=": path}):
        with locks.hold({"path=": path}):  # nested: shares the lock, releases nothing
            pass
        assert locks.lock_path(path).exists()
        thread = threading.Thread(target=lambda: errors.append(
            _refusal(lambda: locks.hold({"save=": path}))))
        thread.start()
        thread.join()
    assert errors and f"pid {os.getpid()} (this process)" in errors[0]
    assert not locks.lock_path(path).exists()


def _refusal(action):
    try:
        action()
    except OutputBusy as exc:
        return str(exc)
    return None


def test_an_owner_record_with_a_line_break_stays_one_line(tmp_path):
    owner = {"pid": 99999999, "host": "elsewhere\nnode", "started": time.time(),
             "command": "multinet train\n--save a.st"}
    described = locks.describe(owner)
    assert "\n" not in described
    assert described.startswith("pid 99999999 on elsewhere\\nnode, started ")
    assert locks.describe({}) == "which its lock file does not name"
