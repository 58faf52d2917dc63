"""Data and downloads under faults and bad input (issue 11, kinds 5-7): every right
behaviour is an assertion.

Downloads come from a local mirror on 127.0.0.1 (tests/mirror.py) that hangs, trickles,
serves HTML, truncates, sends without end or does not answer at all, and serve a small
made-up dataset registered for the test ("tiny"), so nothing here needs the real MNIST
files or the internet. Timeouts are passed short, so the module runs in seconds.
Unreadable folders are made with ``chmod`` as a normal user; as root, who can read
anything, the same ``PermissionError`` is raised by a patched ``os.stat``.
"""

import gzip
import hashlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from mirror import running_mirror, unanswering_address
from multinet import download
from multinet.cli import main
from multinet.catalog import DATASETS, FILES, DatasetSpec
from multinet.data import load_dataset, locate
from multinet.download import PARTIAL_DIR, fetch, partial_name
from multinet.errors import DatasetError, DatasetNotFound
from multinet.idx import read_idx_bytes

FAST = dict(timeout=0.4, connect_timeout=0.2, deadline=20.0, retries=0, progress=False)


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.astype(np.uint8).tobytes()


def made_up_dataset(name: str, seed: int) -> tuple[DatasetSpec, dict[str, bytes]]:
    """A four-file MNIST-format dataset (12 images) and its ``.gz`` files by name."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (8, 28, 28)),
              "train_labels": rng.integers(0, 10, 8),
              "test_images": rng.integers(0, 256, (4, 28, 28)),
              "test_labels": rng.integers(0, 10, 4)}
    raw = {role: idx_bytes(array) for role, array in arrays.items()}
    gz = {role: gzip.compress(data, mtime=0) for role, data in raw.items()}
    spec = DatasetSpec(
        name=name, torchvision_name=name.title(),
        content_sha256={role: hashlib.sha256(data).hexdigest() for role, data in raw.items()},
        download_hashes={role: "sha256:" + hashlib.sha256(data).hexdigest()
                         for role, data in gz.items()},
        mirrors=("http://127.0.0.1:9/",))
    return spec, {f"{FILES[role]}.gz": data for role, data in gz.items()}


TINY, TINY_FILES = made_up_dataset("tiny", 1)
OTHER, OTHER_FILES = made_up_dataset("other", 2)


@pytest.fixture(scope="module")
def mirror():
    with running_mirror(TINY_FILES, hang_seconds=5.0, trickle_pause=0.05) as running:
        yield running


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """The made-up datasets registered, an empty cache, no data or mirrors from outside,
    and no pause between retries."""
    monkeypatch.setitem(DATASETS, "tiny", TINY)
    monkeypatch.setitem(DATASETS, "other", OTHER)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MULTINET_DATA", raising=False)
    monkeypatch.delenv("MULTINET_MIRRORS", raising=False)
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)


def quiet(line):
    pass


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


GZ_NAMES = sorted(f"{stem}.gz" for stem in FILES.values())


def cli(capsys, *argv):
    """``multinet ARGV`` in this process (so the made-up datasets are known):
    ``(status, stdout, stderr lines)``."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


def assert_error(status, lines, *fragments):
    """Exit 2, and one error line, last, after at most the lines naming each download."""
    assert status == 2, lines
    assert lines and lines[-1].startswith("multinet: error: "), lines
    assert all(line.startswith("multinet: downloading ") for line in lines[:-1]), lines
    assert not any("Traceback" in line for line in lines)
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


# -- 5. temporary files --------------------------------------------------------------


def test_a_killed_download_leaves_only_a_partial_file_that_the_next_fetch_removes(
        mirror, tmp_path):
    dest = tmp_path / "data"
    code = (f"from multinet.download import fetch; fetch('mnist', {str(dest)!r}, "
            f"mirrors=[{mirror.url('trickle')!r}], progress=False, timeout=60)")
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            if list((dest / PARTIAL_DIR).glob("*.part")):
                break
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    parts = names(dest / PARTIAL_DIR)
    assert names(dest) == [PARTIAL_DIR] and len(parts) == 1  # nothing where readers look
    assert parts[0].startswith(f"train-images-idx3-ubyte.gz.{child.pid}@")
    with pytest.raises(DatasetNotFound):
        locate(dest, "mnist")
    fetch("tiny", dest, mirrors=[mirror.url("good")], say=quiet, **FAST)
    assert names(dest) == GZ_NAMES  # the dead process's partial file and folder are gone


def test_stale_temporaries_go_and_live_ones_stay(mirror, tmp_path):
    dest = tmp_path / "data"
    partial = dest / PARTIAL_DIR
    partial.mkdir(parents=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    here = socket.gethostname()
    files = {
        "dead": partial / partial_name("a.gz", dead_pid, here),
        "live": partial / partial_name("b.gz", os.getppid(), here),
        "elsewhere-fresh": partial / partial_name("c.gz", 1, "another-host"),
        "elsewhere-old": partial / partial_name("d.gz", 1, "another-host"),
        "pooch-old": dest / "tmpab12cd_9",
        "pooch-fresh": dest / "tmpzz12cd_9",
        "unrelated": dest / "notes.txt",
    }
    for path in files.values():
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for key in ("elsewhere-old", "pooch-old", "unrelated"):
        os.utime(files[key], (two_hours_ago, two_hours_ago))
    fetch("tiny", dest, mirrors=[mirror.url("good")], say=quiet, **FAST)
    kept = {key for key, path in files.items() if path.exists()}
    assert kept == {"live", "elsewhere-fresh", "pooch-fresh", "unrelated"}


def test_an_interrupted_download_leaves_nothing_behind(mirror, tmp_path):
    dest = tmp_path / "new" / "data"
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        fetch("tiny", dest, mirrors=[mirror.url("trickle")], say=quiet,
              **{**FAST, "timeout": 30.0})
    timer.join()
    assert not (tmp_path / "new").exists()  # no partial file, no folder fetch created


# -- 6. resources bounded ------------------------------------------------------------


def gzip_bomb(shape: tuple[int, ...], expansion: int) -> bytes:
    """A gzip file holding an IDX file of ``shape`` followed by ``expansion`` zero bytes,
    built small: one member for the file, then a 1 MiB member of zeros repeated."""
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    return gzip.compress(idx_bytes(np.zeros(shape, np.uint8)), mtime=0) \
        + zeros * (expansion >> 20)


def test_a_gzip_bomb_is_read_no_further_than_its_header_declares(tmp_path):
    bomb = tmp_path / "train-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip_bomb((8,), 3 << 30))  # 3 GiB of zeros after 8 labels
    assert bomb.stat().st_size < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="has trailing bytes.*not read further"):
            read_idx_bytes(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # megabytes, not the 3 GiB it expands to


def test_a_header_declaring_more_than_the_limit_is_refused_before_reading(tmp_path):
    huge = tmp_path / "huge.gz"
    huge.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 10**3, 10**3)
                                   + bytes(1 << 20)))
    with pytest.raises(DatasetError, match=r"declares shape \(1000000, 1000, 1000\).*over the"):
        read_idx_bytes(huge)
    small_limit = tmp_path / "small-limit.gz"
    small_limit.write_bytes(gzip_bomb((2000, 28, 28), 0))
    with pytest.raises(DatasetError, match="over the 1000000 bytes"):
        read_idx_bytes(small_limit, max_bytes=10**6)


def test_a_gzip_bomb_in_the_data_folder_is_one_line(tmp_path, capsys):
    folder = write_files(tmp_path / "bombed", TINY_FILES)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip_bomb((8,), 64 << 20))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: has trailing bytes"):
        load_dataset("tiny", folder, verify=False)
    status, out, lines = cli(capsys, "data", "verify", "--dataset", "tiny",
                             "--data-dir", str(folder))
    assert_error(status, lines, "1 file(s) damaged")
    assert "MISMATCH" in out and "has trailing bytes" in out and out.count("ok ") == 3


@pytest.mark.parametrize("mode, reason, retried", [
    ("missing", "HTTP 404", False),
    ("html", "served an HTML page, not the file", False),
    ("truncated", "connection broke off", True),
    ("corrupt", "checksum mismatch", True),
    ("hang", "stalled (under 1024 bytes in 0.4 s)", False),
    ("trickle", "stalled (under 1024 bytes in 0.4 s)", False),
    ("steady", "not done within 1 s", False),
    ("endless", "sends more than 1048576 bytes", False),
])
def test_each_way_a_mirror_fails_is_named_and_retried_only_if_worth_it(
        mirror, tmp_path, mode, reason, retried):
    before = mirror.hits[mode]
    with pytest.raises(DatasetError) as info:
        fetch("tiny", tmp_path / "data", mirrors=[mirror.url(mode)], say=quiet,
              **{**FAST, "retries": 1, "deadline": 1.0, "max_bytes": 1 << 20})
    assert f"{mirror.url(mode)} ({reason})" in str(info.value)
    assert mirror.hits[mode] - before == (2 if retried else 1)
    assert not (tmp_path / "data").exists()


def test_a_trickling_mirror_is_given_up_and_the_next_one_used(mirror, tmp_path):
    said = []
    before = mirror.hits["trickle"]
    files = fetch("tiny", tmp_path / "data", mirrors=[mirror.url("trickle"), mirror.url("good")],
                  say=said.append, **FAST)
    assert names(tmp_path / "data") == GZ_NAMES and len(files) == 4
    assert mirror.hits["trickle"] - before == 1  # not tried again for the other three files
    assert said[:2] == [f"multinet: downloading train-images-idx3-ubyte.gz from {url}"
                        for url in (mirror.url("trickle"), mirror.url("good"))]
    assert len(said) == 5


def test_a_mirror_that_does_not_answer_costs_one_connect_timeout(mirror, tmp_path):
    said = []
    with unanswering_address() as silent:
        fetch("tiny", tmp_path / "data", mirrors=[silent, mirror.url("good")],
              say=said.append, **FAST)
        assert sum(silent in line for line in said) == 1  # and it was named
        with pytest.raises(DatasetError, match=r"\(no connection within 0.2 s\)"):
            fetch("tiny", tmp_path / "other", mirrors=[silent], say=quiet, **FAST)
    assert names(tmp_path / "data") == GZ_NAMES


# -- 7. file modes and folders -------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_downloaded_files_honour_the_umask(mirror, tmp_path, umask):
    old = os.umask(umask)
    try:
        fetch("tiny", tmp_path / "data", mirrors=[mirror.url("good")], say=quiet, **FAST)
    finally:
        os.umask(old)
    for path in (tmp_path / "data").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


@pytest.fixture
def unreadable(tmp_path, monkeypatch):
    """A folder holding the tiny files whose entries cannot be looked at (chmod 000): the
    per-user cache's folder, ``$XDG_CACHE_HOME/multinet``."""
    folder = write_files(tmp_path / "cache" / "multinet", TINY_FILES)
    if os.geteuid() != 0:
        folder.chmod(0)
        yield folder
        folder.chmod(0o755)
        return
    real_stat = os.stat

    def stat_as_a_user(path, *args, **kwargs):
        if folder in Path(os.fsdecode(path)).parents:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_as_a_user)
    yield folder


def test_an_unreadable_data_folder_is_one_line(unreadable, capsys):
    for argv in (["data", "where"], ["data", "verify"], ["train", "--iterations", "1"]):
        status, _, lines = cli(capsys, *argv, "--dataset", "tiny", "--data-dir", str(unreadable))
        assert_error(status, lines, f"{unreadable}: cannot read this folder (Permission denied)")


def test_an_unreadable_cache_is_reported_not_downloaded_over(unreadable, mirror, capsys):
    before = sum(mirror.hits.values())
    status, _, lines = cli(capsys, "train", "--dataset", "tiny", "--iterations", "1",
                           "--mirror", mirror.url("good"))
    assert_error(status, lines, "cannot read this folder")
    assert sum(mirror.hits.values()) == before and len(lines) == 1


def test_an_unreadable_data_file_is_one_line_without_advice_to_delete_it(tmp_path, monkeypatch,
                                                                         capsys):
    folder = write_files(tmp_path / "data", TINY_FILES)
    locked = folder / "t10k-labels-idx1-ubyte.gz"
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads anything: refuse as the kernel would refuse a user
        real_open = open

        def open_as_a_user(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and Path(path) == locked:
                raise PermissionError(13, "Permission denied", os.fsdecode(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr("builtins.open", open_as_a_user)
    for argv in (["data", "verify"], ["train", "--iterations", "1"]):
        status, out, lines = cli(capsys, *argv, "--dataset", "tiny", "--data-dir", str(folder))
        message = assert_error(status, lines, f"{locked}: cannot read (Permission denied)")
        assert "delete" not in message and "MISMATCH" not in out


@pytest.mark.parametrize("obstacle", ["a file in the way", "a read-only folder"])
def test_a_cache_that_cannot_be_created_is_reported_before_any_mirror(
        obstacle, mirror, tmp_path, monkeypatch, capsys):
    if obstacle == "a file in the way":
        (tmp_path / "cache").write_text("not a folder")
        expected = "Not a directory"
    else:
        (tmp_path / "cache").mkdir(mode=0o555)
        expected = "Permission denied"
        if os.geteuid() == 0:  # root writes anywhere: ask os.access as a user would
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(
                path).startswith(str(tmp_path / "cache")) and mode & os.W_OK
                else real_access(path, mode, **kw))
    before = sum(mirror.hits.values())
    for argv in (["data", "fetch"], ["train", "--iterations", "1"]):
        status, _, lines = cli(capsys, *argv, "--dataset", "tiny", "--mirror", mirror.url("good"))
        assert_error(status, lines, f"cannot download into {tmp_path / 'cache'}", expected,
                     "--data-dir", "MULTINET_DATA")
        assert len(lines) == 1  # no mirror named, none tried
    assert sum(mirror.hits.values()) == before
    assert names(tmp_path) == ["cache"]
    if obstacle == "a read-only folder":
        assert names(tmp_path / "cache") == []  # nothing left inside


def test_a_failed_download_names_the_four_files_and_leaves_no_empty_folder(mirror, tmp_path,
                                                                            capsys):
    for argv in (["data", "fetch"], ["train", "--iterations", "1"]):
        status, _, lines = cli(capsys, *argv, "--dataset", "tiny",
                               "--mirror", mirror.url("missing"), "--mirror", mirror.url("html"))
        assert_error(status, lines, "could not download train-images-idx3-ubyte.gz",
                     f"{mirror.url('missing')} (HTTP 404)", *GZ_NAMES, "--data-dir FOLDER",
                     "MULTINET_DATA=FOLDER")
        assert len(lines) == 3  # one line per mirror tried, then the error
        assert not (tmp_path / "cache").exists()


def test_a_failed_download_through_the_command_is_one_error_line(mirror, tmp_path):
    result = run_cli("data", "fetch", "--mirror", mirror.url("missing"),
                     env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "MULTINET_DATA": ""})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert lines[:-1] == [f"multinet: downloading train-images-idx3-ubyte.gz from "
                          f"{mirror.url('missing')}"]
    assert lines[-1].startswith("multinet: error: could not download")
    assert not (tmp_path / "cache").exists()


def test_verify_says_files_belong_to_another_dataset(tmp_path, capsys):
    folder = write_files(tmp_path / "tiny-files", TINY_FILES)
    status, out, lines = cli(capsys, "data", "verify", "--dataset", "other",
                             "--data-dir", str(folder))
    message = assert_error(status, lines, f"files in {folder} belong to tiny, not other",
                           "pass --dataset tiny")
    assert "delete" not in message and "MISMATCH" not in out
    assert out.count("other ") == 4 and "(tiny's train_images)" in out
    status, _, lines = cli(capsys, "train", "--dataset", "other", "--data-dir", str(folder),
                           "--iterations", "1")
    assert_error(status, lines, "holds tiny's train images, not other's (pass --dataset tiny)")


def test_verify_knows_mnist_files_are_not_fashion_mnist(full_mnist):
    result = run_cli("data", "verify", "--dataset", "fashion-mnist",
                     "--data-dir", str(full_mnist.directory))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "belong to mnist, not fashion-mnist: pass --dataset mnist" in result.stderr
    assert "delete" not in result.stderr


def test_where_exits_2_with_one_line_when_nothing_is_found(tmp_path):
    result = run_cli("data", "where", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multinet: error: mnist files not found")
    assert all(name in lines[0] for name in GZ_NAMES) and "MULTINET_DATA" in lines[0]
    assert str(tmp_path) in result.stdout  # the folders searched, on stdout


def test_where_and_verify_succeed_on_good_files(tmp_path, capsys):
    folder = write_files(tmp_path / "good", TINY_FILES)
    status, out, lines = cli(capsys, "data", "where", "--dataset", "tiny",
                             "--data-dir", str(folder))
    assert status == 0 and lines == [] and "<- used" in out
    status, out, lines = cli(capsys, "data", "verify", "--dataset", "tiny",
                             "--data-dir", str(folder))
    assert status == 0 and lines == [] and out.count("ok ") == 4
    shutil.rmtree(folder)
