"""Downloading and finding data, against a local HTTP server on 127.0.0.1 (no internet).

The server (tests/mirror.py) serves the real MNIST files under /good/ (the full files where
they are found, else the committed sample, whose checksums then stand in for MNIST's in
this process: ``sample_as_mnist``), and under other
prefixes the failures users meet: /corrupt/ (one byte changed), /missing/ (404), /hang/
(never answers in time), /truncated/ (the connection drops halfway), /flaky/ (fails the
first request for each file, then works). tests/test_faults_data.py has the rest.
"""

import dataclasses
import gzip
import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import assert_one_line_error
from helpers import data_args, is_sample
from helpers import run_cli as cli
from mirror import running_mirror
from multinet.cli import main
from multinet.catalog import DATASETS, FILES
from multinet.data import load_dataset, locate
from multinet.download import fetch, mirrors_for
from multinet.errors import DatasetError

HANG_SECONDS = 3


@pytest.fixture(scope="module")
def mnist_files(mnist):
    return {f"{stem}.gz": (mnist.directory / f"{stem}.gz").read_bytes()
            for stem in FILES.values()}


@pytest.fixture(autouse=True)
def sample_as_mnist(mnist, mnist_files, monkeypatch):
    """Without the full files, the sample is served as MNIST: for this process, MNIST's
    known checksums (of the served .gz files and of their contents) become the sample's,
    so the download and verification code runs unchanged on real bytes."""
    if not is_sample(mnist):
        return
    roles = {f"{stem}.gz": role for role, stem in FILES.items()}
    spec = dataclasses.replace(
        DATASETS["mnist"],
        download_hashes={roles[name]: "sha256:" + hashlib.sha256(data).hexdigest()
                         for name, data in mnist_files.items()},
        content_sha256={roles[name]: hashlib.sha256(gzip.decompress(data)).hexdigest()
                        for name, data in mnist_files.items()})
    monkeypatch.setitem(DATASETS, "mnist", spec)


def run_main(capsys, *args):
    """``multinet ARGS`` in this process (so ``sample_as_mnist`` holds), as ``run_cli``'s
    result: ``returncode``, ``stdout``, ``stderr``."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


@pytest.fixture(scope="module")
def server(mnist_files):
    with running_mirror(mnist_files, hang_seconds=HANG_SECONDS) as mirror:
        yield mirror.base, mirror.hits


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty per-user cache, and no MULTINET_DATA / MULTINET_MIRRORS from outside."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MULTINET_DATA", raising=False)
    monkeypatch.delenv("MULTINET_MIRRORS", raising=False)
    return tmp_path / "cache" / "multinet"


def only_gz_files(directory):
    return sorted(p.name for p in directory.iterdir()) == sorted(f"{s}.gz" for s in FILES.values())


def test_fetch_verify_then_train_without_data_dir(server, cache, capsys):
    base, _ = server
    fetched = run_main(capsys, "data", "fetch", "--mirror", f"{base}/good/")
    assert fetched.returncode == 0, fetched.stderr
    assert only_gz_files(cache / "mnist")
    verified = run_main(capsys, "data", "verify")
    assert verified.returncode == 0 and verified.stdout.count("ok ") == 4, verified.stdout
    trained = run_main(capsys, "train", "--iterations", "2", "--no-progress", "--offline")
    assert trained.returncode == 0, trained.stderr
    assert "accuracy: train" in trained.stdout


def test_mirrors_are_tried_in_order_and_nothing_bad_is_left_behind(server, cache):
    base, hits = server
    before = hits.copy()
    files = fetch(mirrors=[f"{base}/{mode}/" for mode in
                           ("missing", "corrupt", "truncated", "hang", "good")],
                  timeout=0.5, retries=0, progress=False, say=lambda line: None)
    for mode in ("missing", "corrupt", "truncated", "good"):
        assert hits[mode] - before[mode] == 4, mode  # every mirror tried once per file
    assert hits["hang"] - before["hang"] == 1  # silent: given up for the other files
    assert set(files) == set(FILES) and only_gz_files(cache / "mnist")
    load_dataset(data_dir=cache / "mnist")  # and the content checksums hold


def test_a_failing_transfer_is_retried(server, cache, monkeypatch):
    base, _ = server
    monkeypatch.setattr("multinet.download.BACKOFF_SECONDS", 0.01)
    fetch(mirrors=[f"{base}/flaky/"], retries=1, progress=False)
    assert only_gz_files(cache / "mnist")


def test_every_mirror_failing_is_one_line_naming_them(server, cache):
    base, _ = server
    mirrors = [f"{base}/missing/", f"{base}/corrupt/"]
    with pytest.raises(DatasetError) as info:
        fetch(mirrors=mirrors, retries=0, progress=False, say=lambda line: None)
    message = str(info.value)
    assert "\n" not in message and all(m in message for m in mirrors)
    assert "HTTP 404" in message and "checksum mismatch" in message
    assert all(f"{stem}.gz" in message for stem in FILES.values())
    assert "data_dir=FOLDER" in message and "MULTINET_DATA" in message  # Python's words
    assert not cache.parent.exists()  # no empty cache folder left behind


def test_corrupt_cached_file_is_an_error_then_replaced_by_a_good_download(server, cache,
                                                                            mnist_files,
                                                                            capsys):
    base, _ = server
    fetch(mirrors=[f"{base}/good/"], progress=False)
    damaged = cache / "mnist" / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(damaged.read_bytes()))
    raw[-1] ^= 1
    damaged.write_bytes(gzip.compress(bytes(raw)))
    assert_one_line_error(run_main(capsys, "train", "--offline", "--iterations", "1"),
                          "train-labels-idx1-ubyte.gz", "checksum mismatch")
    verified = run_main(capsys, "data", "verify")
    assert_one_line_error(verified, "1 file(s) damaged", "multinet data fetch")
    assert "MISMATCH" in verified.stdout and verified.stdout.count("ok ") == 3
    fetch(mirrors=[f"{base}/good/"], progress=False)  # pooch sees the wrong hash, re-fetches
    assert damaged.read_bytes() == mnist_files[damaged.name]


def test_offline_never_touches_the_network(server, cache, capsys, monkeypatch):
    base, hits = server
    before = sum(hits.values())
    monkeypatch.setenv("MULTINET_MIRRORS", f"{base}/good/")
    assert_one_line_error(run_main(capsys, "train", "--offline"), "not found",
                          "multinet data fetch")
    assert sum(hits.values()) == before
    # Without --offline the same command downloads from $MULTINET_MIRRORS into the cache.
    result = run_main(capsys, "train", "--iterations", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert hits["good"] > 0 and only_gz_files(cache / "mnist")


def test_mirror_precedence(monkeypatch):
    from multinet.catalog import DATASETS

    spec = DATASETS["mnist"]
    monkeypatch.delenv("MULTINET_MIRRORS", raising=False)
    assert mirrors_for(spec) == list(spec.mirrors)
    monkeypatch.setenv("MULTINET_MIRRORS", "http://a/x, http://b/")
    assert mirrors_for(spec) == ["http://a/x/", "http://b/"]
    assert mirrors_for(spec, ["http://c"]) == ["http://c/"]


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
    result = cli("train", "--data-dir", str(tmp_path), "--iterations", "1",
                 *data_args(mnist)[2:])
    assert_one_line_error(result, bad.name)
    assert "Traceback" not in result.stderr


def test_checks_also_catch_what_the_checksum_would(tmp_path, mnist):
    """Without checksums (data of your own), the structural checks still name the fault."""
    write_bad_copy(tmp_path, mnist.directory, "label-out-of-range")
    with pytest.raises(DatasetError, match="label 12 outside 0-9"):
        load_dataset(data_dir=tmp_path, verify=False)


def test_a_torchvision_root_is_accepted(tmp_path, mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in FILES.values():
        shutil.copy(mnist.directory / f"{stem}.gz", raw)
    assert locate(tmp_path)["train_images"].parent == raw


def test_another_datasets_files_are_not_taken_for_mnist(tmp_path, monkeypatch):
    source = Path("/usr/share/datasets/fashion-mnist")
    if not (source / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("mnist", source)


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
    result = cli("train", "--dataset", "fashion-mnist", "--iterations", "3", "--offline",
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
