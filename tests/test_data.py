"""Finding, reading and checking the data (``multinet/data.py``): where a missing
dataset was looked for, every damaged or foreign file named in one line, torchvision's
layout and Debian's package, folders and files that cannot be read.

Most cases use a small made-up dataset (``tiny``, helpers.py), registered, with an empty
cache and no data or mirrors from outside, by the ``isolated`` fixture. Unreadable folders
are made with ``chmod`` as a normal user; as root, who can read anything, the same
``PermissionError`` is raised by a patched ``os.stat``. One test reads the files with
torchvision's own loader where torchvision is installed (scripts/gpu-check.sh runs it on
a GPU machine, whose PyTorch has the CUDA build torchvision's wheels need).
"""

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import multinet
from helpers import (TINY_FILES, assert_error, assert_one_line_error, cli, data_args,
                     gzip_bomb, idx_bytes, is_sample, run_cli, write_files)
from multinet.catalog import FILES
from multinet.data import load_dataset, locate
from multinet.errors import DatasetError, DatasetNotFound

pytestmark = pytest.mark.usefixtures("isolated")


# --- Missing data -----------------------------------------------------------------------

def test_missing_data_error_names_data_dir_not_a_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("MULTINET_DATA", raising=False)
    with pytest.raises(DatasetNotFound) as info:
        multinet.load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "data_dir=" in message and "--" not in message


def test_missing_data_says_where_it_looked(tmp_path):
    result = run_cli("train", "--data-dir", str(tmp_path), env={"MULTINET_DATA": ""})
    assert_one_line_error(result, str(tmp_path), "--data-dir")


# --- Damaged files ----------------------------------------------------------------------

def write_bad_copy(directory: Path, source: Path, problem: str):
    """The real files, with one of them broken in the way ``problem`` names."""
    for stem in FILES.values():
        shutil.copy(source / f"{stem}.gz", directory / f"{stem}.gz")
    labels = directory / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    broken = {
        "empty": b"",
        "not-gzip": raw,
        "truncated-gzip": labels.read_bytes()[:-100],
        "wrong-magic": b"\x00\x00\x08\x02" + raw[4:],
        "truncated-body": gzip.compress(raw[:-10]),
        "label-out-of-range": gzip.compress(raw[:-1] + b"\x0c"),
        "count-mismatch": gzip.compress(raw[:4] + (59999).to_bytes(4, "big") + raw[8:-1]),
    }[problem]
    labels.write_bytes(broken)
    return labels


@pytest.mark.parametrize("problem", ["empty", "not-gzip", "truncated-gzip", "wrong-magic",
                                     "truncated-body", "label-out-of-range", "count-mismatch"])
def test_each_bad_file_is_one_line_and_exit_2(problem, tmp_path, mnist):
    bad = write_bad_copy(tmp_path, mnist.directory, problem)
    result = run_cli("train", "--data-dir", str(tmp_path), "--iterations", "1",
                     *data_args(mnist)[2:])
    assert_one_line_error(result, bad.name)
    assert "Traceback" not in result.stderr


def test_checks_also_catch_what_the_checksum_would(tmp_path, mnist):
    """Without checksums (data of your own), the structural checks still name the fault."""
    write_bad_copy(tmp_path, mnist.directory, "label-out-of-range")
    with pytest.raises(DatasetError, match="label 12 outside 0-9"):
        load_dataset(data_dir=tmp_path, verify=False)


def write_set(directory, train_images, train_labels, test_images=None, test_labels=None):
    test_images = train_images if test_images is None else test_images
    test_labels = train_labels if test_labels is None else test_labels
    for stem, array in [("train-images-idx3-ubyte", train_images),
                        ("train-labels-idx1-ubyte", train_labels),
                        ("t10k-images-idx3-ubyte", test_images),
                        ("t10k-labels-idx1-ubyte", test_labels)]:
        (directory / stem).write_bytes(idx_bytes(array))


def test_labels_outside_0_to_9_are_rejected(tmp_path):
    write_set(tmp_path, np.zeros((3, 28, 28), np.uint8), np.array([1, 12, 3], np.uint8))
    with pytest.raises(DatasetError, match="label 12 outside 0-9"):
        load_dataset(data_dir=tmp_path, verify=False)


def test_image_and_label_counts_must_agree(tmp_path):
    write_set(tmp_path, np.zeros((3, 28, 28), np.uint8), np.array([1, 2], np.uint8))
    with pytest.raises(DatasetError, match="holds 3 images but .* holds 2 labels"):
        load_dataset(data_dir=tmp_path, verify=False)


def test_a_gzip_bomb_in_the_data_folder_is_one_line(tmp_path, capsys):
    folder = write_files(tmp_path / "bombed", TINY_FILES)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip_bomb((8,), 64 << 20))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: has trailing bytes"):
        load_dataset("tiny", folder, verify=False)
    status, out, lines = cli(capsys, "data", "verify", "--dataset", "tiny",
                             "--data-dir", str(folder))
    assert_error(status, lines, "1 file(s) damaged")
    assert "MISMATCH" in out and "has trailing bytes" in out and out.count("ok ") == 3


# --- Files of another dataset -----------------------------------------------------------

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


def test_another_datasets_files_are_not_taken_for_mnist(tmp_path, monkeypatch):
    source = Path("/usr/share/datasets/fashion-mnist")
    if not (source / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("mnist", source)


# --- Other layouts: torchvision's root, Debian's package --------------------------------

def test_a_torchvision_root_is_accepted(tmp_path, mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in FILES.values():
        shutil.copy(mnist.directory / f"{stem}.gz", raw)
    assert locate(data_dir=tmp_path)["train_images"].parent == raw


def test_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed "
                    "(apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("MULTINET_DATA", raising=False)
    fashion = load_dataset("fashion-mnist", download=False)
    assert fashion.train_images.shape == (60000, 28, 28)
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    env = {"XDG_CACHE_HOME": str(tmp_path), "MULTINET_DATA": ""}
    result = run_cli("train", "--dataset", "fashion-mnist", "--iterations", "3", "--offline",
                     "--no-progress", "--json", env=env)
    assert result.returncode == 0, result.stderr


def test_torchvision_source_gives_identical_arrays(mnist, tmp_path):
    pytest.importorskip("torchvision", reason="torchvision is not installed (optional)")
    from multinet.data import load_with_torchvision

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in FILES.values():
        shutil.copy(mnist.directory / f"{stem}.gz", raw)
        # torchvision (0.26) looks for the uncompressed files it would have extracted.
        (raw / stem).write_bytes(gzip.decompress((mnist.directory / f"{stem}.gz").read_bytes()))
    ours = load_dataset(data_dir=tmp_path, verify=not is_sample(mnist))
    theirs = load_with_torchvision("mnist", tmp_path, download=False)
    for role in FILES:
        np.testing.assert_array_equal(getattr(ours, role), getattr(theirs, role))


# --- Folders and files that cannot be read ----------------------------------------------

def test_an_unreadable_data_folder_is_one_line(unreadable, capsys):
    for argv in (["data", "where"], ["data", "verify"], ["train", "--iterations", "1"]):
        status, _, lines = cli(capsys, *argv, "--dataset", "tiny", "--data-dir", str(unreadable))
        assert_error(status, lines, f"{unreadable}: cannot read this folder (Permission denied)")


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
