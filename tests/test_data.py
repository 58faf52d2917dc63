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

import dataclasses
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import multinet
from helpers import (TINY, TINY_FILES, assert_error, assert_one_line_error, cli, data_args,
                     gzip_bomb, idx_bytes, is_sample, run_cli, write_files)
from multinet.catalog import FILES
from multinet.data import Dataset, content_sha256s, load_dataset, locate, validate
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


def test_images_of_another_size_and_empty_splits_in_files_are_refused(tmp_path):
    """The network takes 28 x 28 pixels: 32 x 32 images of one's own are named when read,
    not found out when a checkpoint that no command can load is written."""
    write_set(tmp_path, np.zeros((3, 32, 32), np.uint8), np.array([1, 2, 3], np.uint8))
    with pytest.raises(DatasetError, match=r"must be images of shape \(n, 28, 28\), got "
                                           r"\(3, 32, 32\)"):
        load_dataset(data_dir=tmp_path, verify=False)
    write_set(tmp_path, np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3], np.uint8),
              np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte holds no images: the "
                                           "test set needs at least one"):
        load_dataset(data_dir=tmp_path, verify=False)


def made_up(**changes):
    """A valid ``Dataset`` of 8 training and 4 test images, with ``changes``."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 8, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, 4, dtype=np.uint8)}
    return Dataset(name="mnist", directory=Path("made-up"), **{**arrays, **changes})


GOOD = made_up()

#: A dataset built in Python that multinet cannot train on, and what the error says.
BAD_DATASETS = {
    "a label 10": (dict(train_labels=np.array([0, 1, 2, 3, 4, 5, 6, 10])),
                   "dataset.train_labels: label 10 outside 0-9"),
    "a label -1": (dict(test_labels=np.array([0, -1, 2, 3])),
                   "dataset.test_labels: label -1 outside 0-9"),
    "test labels of 255": (dict(test_labels=np.full(4, 255, np.uint8)),
                           "dataset.test_labels: label 255 outside 0-9"),
    "float labels": (dict(train_labels=GOOD.train_labels.astype(float)),
                     "dataset.train_labels must be integer class labels 0-9, got float64"),
    "labels of two dimensions": (dict(train_labels=GOOD.train_labels.reshape(8, 1)),
                                 "dataset.train_labels must be labels of shape (n,), got (8, 1)"),
    "counts that differ": (dict(train_labels=GOOD.train_labels[:5]),
                           "dataset.train_images holds 8 images but dataset.train_labels "
                           "holds 5 labels"),
    "images scaled to 0..1": (dict(train_images=GOOD.train_images / 255),
                              "dataset.train_images holds float64 values in [0, 1], images "
                              "already scaled: pass the uint8 pixel values 0-255 as read "
                              "from the files"),
    "float images 0..255": (dict(test_images=GOOD.test_images.astype(np.float32)),
                            "dataset.test_images must be uint8 pixel values 0-255 as read "
                            "from the files, got float32"),
    "flattened images": (dict(train_images=GOOD.train_images.reshape(8, 784)),
                         "dataset.train_images must be images of shape (n, 28, 28), got "
                         "(8, 784)"),
    "a Python list": (dict(test_images=list(GOOD.test_images)),
                      "dataset.test_images must be a NumPy array of uint8 pixel values "
                      "0-255, shape (n, 28, 28), got list"),
    "an empty test set": (dict(test_images=GOOD.test_images[:0], test_labels=GOOD.test_labels[:0]),
                          "dataset.test_images holds no images: the test set needs at least "
                          "one"),
    "an empty training set": (dict(train_images=GOOD.train_images[:0],
                                   train_labels=GOOD.train_labels[:0]),
                              "dataset.train_images holds no images"),
}


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_a_dataset_built_in_python_is_checked_as_files_are(case):
    changes, message = BAD_DATASETS[case]
    with pytest.raises(DatasetError) as info:
        validate(made_up(**changes))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.filterwarnings("error")  # NumPy's "All-NaN slice" before the error, once
def test_all_nan_images_are_refused_without_a_warning_first():
    nan = np.full(GOOD.train_images.shape, np.nan, np.float32)
    with pytest.raises(DatasetError, match="dataset.train_images must be uint8 pixel values "
                       "0-255 as read from the files, got float32"):
        validate(made_up(train_images=nan))


def test_what_validate_takes_and_an_unknown_name():
    assert validate(GOOD) is GOOD
    wide = made_up(train_labels=GOOD.train_labels.astype(np.int64))  # any integer type
    assert validate(wide) is wide
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        validate(dataclasses.replace(GOOD, name="cifar"))
    with pytest.raises(multinet.InvalidArgument, match="got dict"):
        validate({"train_images": GOOD.train_images})


def test_the_checksums_of_files_read_unchanged_are_the_files_own(tmp_path):
    """What a checkpoint records of its data: for the files as read, the catalog's own
    checksums (so a record names them); for a subset, other ones."""
    folder = write_files(tmp_path / "tiny", TINY_FILES)
    tiny = load_dataset("tiny", folder)
    assert content_sha256s(tiny) == TINY.content_sha256
    subset = dataclasses.replace(tiny, train_images=tiny.train_images[:6],
                                 train_labels=tiny.train_labels[:6])
    changed = content_sha256s(subset)
    assert changed["train_images"] != TINY.content_sha256["train_images"]
    assert changed["test_images"] == TINY.content_sha256["test_images"]
    wider = dataclasses.replace(tiny, train_labels=tiny.train_labels.astype(np.int32))
    assert content_sha256s(wider) == TINY.content_sha256  # the values, not their type


@pytest.mark.parametrize("arguments, message", [
    (dict(verify="no"), "verify must be True or False, got 'no'"),
    (dict(download="no"), "download must be True or False, got 'no'"),
    (dict(progress=None), "progress must be True or False, got None"),
    (dict(data_dir=3), "data_dir must be a folder (a str or a pathlib.Path) or None, got int"),
    (dict(mirrors=3), "mirrors must be a URL or a list of URLs, got 3"),
])
def test_load_dataset_names_an_argument_of_the_wrong_type(arguments, message):
    with pytest.raises(multinet.InvalidArgument) as info:
        load_dataset("tiny", **arguments)
    assert message in str(info.value)


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
