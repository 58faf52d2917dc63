"""``multinet data where``, ``verify`` and ``fetch`` as a user runs them: what they
print where the files are good, and one error line with exit status 2 where they are
missing, foreign or cannot be fetched. (Each check's own cases are in test_data.py and
test_download.py.)"""

import shutil

import pytest

from helpers import (GZ_NAMES, OTHER_FILES, TINY, TINY_FILES, assert_error, cli, run_cli,
                     write_files)
from multinet import catalog, data

pytestmark = pytest.mark.usefixtures("isolated")


def test_where_and_verify_succeed_on_good_files(tmp_path, capsys):
    folder = write_files(tmp_path / "good", TINY_FILES)
    status, out, lines = cli(capsys, "data", "where", "--dataset", "tiny",
                             "--data-dir", str(folder))
    assert status == 0 and lines == [] and "<- used" in out
    status, out, lines = cli(capsys, "data", "verify", "--dataset", "tiny",
                             "--data-dir", str(folder))
    assert status == 0 and lines == [] and out.count("ok ") == 4
    shutil.rmtree(folder)


def test_where_exits_2_with_one_line_when_nothing_is_found(tmp_path):
    result = run_cli("data", "where", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multinet: error: mnist files not found")
    assert all(name in lines[0] for name in GZ_NAMES) and "MULTINET_DATA" in lines[0]
    assert str(tmp_path) in result.stdout  # the folders searched, on stdout


def test_where_lists_every_folder_of_the_search_in_order_and_marks_the_one_used(tmp_path,
                                                                               capsys):
    cache = catalog.cache_dir()
    write_files(cache / "Tiny" / "raw", TINY_FILES)
    partial = dict(list(TINY_FILES.items())[:2])
    write_files(cache / "tiny", partial)  # searched first, but incomplete
    status, out, lines = cli(capsys, "data", "where", "--dataset", "tiny")
    assert status == 0 and lines == []
    listed = [line.split("  (")[0].split("  <-")[0].strip() for line in out.splitlines()
              if line.startswith("  ") and not line.startswith("    ")]
    assert listed == [str(d) for d in data.search_dirs(TINY)]  # every folder, in order
    shown = dict(zip(listed, (line for line in out.splitlines()
                              if line.startswith("  ") and not line.startswith("    "))))
    assert "(2 of the 4 files)" in shown[str(cache / "tiny")]
    assert shown[str(cache / "Tiny" / "raw")].endswith("<- used")
    assert out.count("<- used") == 1
    assert "not searched" in shown[str(cache)]  # after the one used


def test_where_does_not_use_another_datasets_files(tmp_path, capsys):
    folder = write_files(tmp_path / "other", OTHER_FILES)  # the right names, other contents
    status, out, lines = cli(capsys, "data", "where", "--dataset", "tiny",
                             "--data-dir", str(folder))
    assert_error(status, lines, f"files in {folder} belong to other, not tiny",
                 "--dataset other")
    assert "<- used" not in out and "(other's files, not tiny's)" in out


def test_verify_knows_mnist_files_are_not_fashion_mnist(full_mnist):
    result = run_cli("data", "verify", "--dataset", "fashion-mnist",
                     "--data-dir", str(full_mnist.directory))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "belong to mnist, not fashion-mnist: pass --dataset mnist" in result.stderr
    assert "delete" not in result.stderr


def test_a_failed_download_through_the_command_is_one_error_line(mirror, tmp_path):
    result = run_cli("data", "fetch", "--mirror", mirror.url("missing"),
                     env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "MULTINET_DATA": ""})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert lines[:-1] == [f"multinet: downloading train-images-idx3-ubyte.gz from "
                          f"{mirror.url('missing')}"]
    assert lines[-1].startswith("multinet: error: could not download")
    assert not (tmp_path / "cache").exists()
