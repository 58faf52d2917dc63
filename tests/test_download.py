"""Downloading (``multinet/download.py``), from mirrors on 127.0.0.1 (tests/mirror.py;
no internet is needed or touched).

``server`` serves the real MNIST files under /good/ (the full files where they are found,
else the committed sample, whose checksums then stand in for MNIST's in this process:
``sample_as_mnist``), and under other prefixes the failures users meet: /corrupt/ (one
byte changed), /missing/ (404), /hang/ (never answers in time), /truncated/ (the
connection drops halfway), /flaky/ (fails the first request for each file, then works).
``mirror`` serves a small made-up dataset (``tiny``, helpers.py) in every way a mirror
fails (it hangs, trickles, serves HTML, truncates, sends without end, or does not answer
at all), so those cases need neither the real files nor long waits: timeouts are passed
short. Every test runs ``isolated``: an empty cache, no data or mirrors from outside.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import GZ_NAMES, assert_error, assert_one_line_error, cli, is_sample
from mirror import ELSEWHERE, refusing_address, running_mirror, unanswering_address
from multinet.catalog import DATASETS, FILES
from multinet.cli import main
from multinet.data import load_dataset, locate
from multinet.download import PARTIAL_DIR, fetch, mirrors_for, partial_name
from multinet.errors import DatasetError, DatasetNotFound, InvalidArgument

pytestmark = pytest.mark.usefixtures("isolated")

HANG_SECONDS = 3

FAST = dict(timeout=0.4, connect_timeout=0.2, deadline=20.0, retries=0, progress=False)


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


def quiet(line):
    pass


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- Fetch, then verify and train from the cache ----------------------------------------

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


# --- Mirrors that fail ------------------------------------------------------------------

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


# --- Servers and proxies that answer oddly ----------------------------------------------

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture
def no_proxy(monkeypatch):
    """No proxy from outside: each test sets the one it means."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_gz_labelled_content_encoding_gzip_is_kept_as_sent(mirror, tmp_path, no_proxy):
    """A mirror that sends the .gz with ``Content-Encoding: gzip`` (S3, Apache's
    AddEncoding): the body is the file itself, and decoding it before the hash check made
    it "not a gzip file". The file is asked for as stored, and kept as sent."""
    before = len(mirror.accept_encodings)
    fetch("tiny", tmp_path / "data", mirrors=[mirror.url("encoded")], say=quiet, **FAST)
    for name in GZ_NAMES:
        assert (tmp_path / "data" / name).read_bytes() == mirror.files[name], name
    assert set(mirror.accept_encodings[before:]) == {"identity"}
    load_dataset("tiny", tmp_path / "data", download=False)  # the contents check too


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("proxy, why", [(refusing_address, "Connection refused"),
                                        (unanswering_address, "no answer within 0.2 s")])
def test_a_proxy_that_cannot_be_reached_is_named_with_its_variable(
        mirror, tmp_path, monkeypatch, no_proxy, variable, proxy, why):
    """Not "cannot connect" blamed on the mirror: the proxy, where it was set, why; its
    password hidden, and no other mirror tried through it."""
    said, before = [], sum(mirror.hits.values())
    with proxy() as address:
        address = address.rstrip("/")
        shown = address.replace("http://", "http://user:***@")
        monkeypatch.setenv(variable, address.replace("http://", "http://user:secret@"))
        with pytest.raises(DatasetError) as info:
            fetch("tiny", tmp_path / "data", mirrors=[mirror.url("good"), mirror.url("html")],
                  say=said.append, **FAST)
    message = str(info.value)
    assert (f"{mirror.url('good')} (cannot connect to the proxy {shown} (from {variable}): "
            f"{why})") in message
    assert f"{mirror.url('html')} (skipped: cannot connect to the proxy {shown}" in message
    assert "secret" not in message and "\n" not in message
    assert said == [f"multinet: downloading train-images-idx3-ubyte.gz from {mirror.url('good')}"]
    assert sum(mirror.hits.values()) == before
    assert not (tmp_path / "data").exists()


def test_a_mirror_failing_behind_a_working_proxy_names_the_proxy(mirror, tmp_path, monkeypatch,
                                                                  no_proxy):
    """An HTTP error through a proxy may be the proxy's own: the reason says which proxy
    the transfer went through. The mirror serves as the proxy here."""
    monkeypatch.setenv("HTTP_PROXY", mirror.base)
    before = mirror.hits["proxied"]
    with pytest.raises(DatasetError) as info:
        fetch("tiny", tmp_path / "data", mirrors=[mirror.url("missing")], say=quiet, **FAST)
    assert (f"{mirror.url('missing')} (HTTP 404, through the proxy {mirror.base} "
            f"(from HTTP_PROXY))") in str(info.value)
    fetch("tiny", tmp_path / "data", mirrors=[mirror.url("good")], say=quiet, **FAST)
    assert names(tmp_path / "data") == GZ_NAMES
    assert mirror.hits["proxied"] - before == 5  # 1 missing + 4 good: all through it


def test_a_reason_is_whole_and_one_line(mirror, tmp_path, capsys, no_proxy):
    """A mirror that redirects where no HTTP client goes: the reason (requests' own words)
    is given whole, the URL at its end included, not cut at 80 characters mid-word."""
    status, _, lines = cli(capsys, "data", "fetch", "--dataset", "tiny",
                           "--mirror", mirror.url("elsewhere"))
    line = assert_error(status, lines, f"{mirror.url('elsewhere')} (No connection adapters "
                                       f"were found for '{ELSEWHERE}train-images-idx3-ubyte.gz')")
    assert len(lines) == 2 and len(line) > 200


@pytest.mark.parametrize("url", ["notaurl", "ftp://mirror.invalid/mnist/", "http://",
                                 "http://exa mple/", "http://host:port/", "file:///tmp/"])
def test_a_mirror_that_is_no_http_url_is_refused_before_anything(url, tmp_path, capsys,
                                                                   monkeypatch):
    with pytest.raises(InvalidArgument, match=r"the mirror .* \(from mirrors=\[URL, \.\.\.\]\) "
                                              r"is not an http:// or https:// URL"):
        fetch("tiny", tmp_path / "data", mirrors=[url], say=quiet, **FAST)
    status, _, lines = cli(capsys, "data", "fetch", "--dataset", "tiny", "--mirror", url)
    assert_error(status, lines, f"the mirror {url!r} (from --mirror URL) is not an http")
    assert len(lines) == 1  # nothing was tried
    monkeypatch.setenv("MULTINET_MIRRORS", url)  # separated by spaces: "mple/" is one
    status, _, lines = cli(capsys, "train", "--dataset", "tiny", "--iterations", "1")
    assert_error(status, lines, f"the mirror {url.split()[-1]!r} (from MULTINET_MIRRORS)")
    assert len(lines) == 1 and names(tmp_path) == []


# --- Temporary files --------------------------------------------------------------------

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
        locate("mnist", dest)
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


# --- The cache: file modes, and folders that cannot be read or made ---------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_downloaded_files_honour_the_umask(mirror, tmp_path, umask):
    old = os.umask(umask)
    try:
        fetch("tiny", tmp_path / "data", mirrors=[mirror.url("good")], say=quiet, **FAST)
    finally:
        os.umask(old)
    for path in (tmp_path / "data").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_an_unreadable_cache_is_reported_not_downloaded_over(unreadable, mirror, capsys):
    before = sum(mirror.hits.values())
    status, _, lines = cli(capsys, "train", "--dataset", "tiny", "--iterations", "1",
                           "--mirror", mirror.url("good"))
    assert_error(status, lines, "cannot read this folder")
    assert sum(mirror.hits.values()) == before and len(lines) == 1


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


# --- Progress ---------------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("stream", "frames"), [(io.StringIO, False), (Terminal, True)])
def test_the_download_bar_is_drawn_only_on_a_terminal(mirror, tmp_path, monkeypatch,
                                                      stream, frames):
    """``fit`` asks for a bar (``progress=True``); in a log its frames would each stay."""
    stderr = stream()
    monkeypatch.setattr(sys, "stderr", stderr)
    fetch("tiny", tmp_path, mirrors=[mirror.url("good")], say=quiet,
          **{**FAST, "progress": True})
    assert names(tmp_path) == GZ_NAMES
    assert ("B/s" in stderr.getvalue()) is frames, stderr.getvalue()
