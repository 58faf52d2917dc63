"""Downloading a dataset into the cache, with pooch's HTTP downloader and hash checks.

Each file is streamed to ``<folder>/.partial/<file>.<pid>@<host>.<random>.part``, checked
against its known hash (pooch), and only then renamed into place, so a partial or corrupt
download is never where the reader looks. The file is created like any other the user
creates (mode 0666 less the umask), not 0600, so a shared cache stays readable. Partial
files whose process is dead (same host) or that nobody has touched for an hour are
deleted by the next fetch into that folder, and so are the ``tmpXXXXXXXX`` files that
pooch's own fetch left behind in older versions of multinet.

Before any mirror is tried the destination is created and checked, so a folder that
cannot be written is reported as that, not as a failure of every mirror. After a
failure nothing is left behind: no partial file, and no folder that fetch created.

Every transfer is bounded: ``connect_timeout`` to connect (a mirror that does not answer
is then skipped for the remaining files), at least 1 KiB every ``timeout`` seconds (a
mirror that trickles is given up), ``deadline`` seconds for the whole file, and
``MAX_FILE_BYTES``. A line on stderr says which mirror is being tried. A transfer that
broke off or stalled midway, arrived corrupt or met an HTTP 5xx is retried ``retries``
times with pooch's backoff (1 s, 2 s, ...); one refused for good (HTTP 4xx, an HTML page,
no answer, past the deadline, too large) is not.

Mirrors, in order of precedence: ``--mirror URL`` (repeatable), ``$MULTINET_MIRRORS``
(separated by spaces or commas), the dataset's defaults.

pooch, and requests under it, are imported only when a file is downloaded: a run whose
files are on disk does not pay their 150 ms (a test of the package face checks it).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from multinet.catalog import (ENV_VAR, FILES, DatasetSpec, cache_dir, dataset_spec,
                              file_names)
from multinet.errors import DatasetError, argument

MIRRORS_ENV_VAR = "MULTINET_MIRRORS"
#: Seconds to connect to a mirror; one that does not answer in time is skipped.
CONNECT_TIMEOUT = 10.0
#: A transfer that delivers less than ``STALL_BYTES`` in this many seconds is given up.
READ_TIMEOUT = 30.0
#: Seconds one file may take in all, however steadily it trickles in.
DEADLINE = 600.0
#: MNIST-format ``.gz`` files are at most ~30 MB; a mirror sending more is broken.
MAX_FILE_BYTES = 256 << 20
#: The downloader's write size, and so the progress a transfer must make per timeout.
STALL_BYTES = 1024
#: The pause before retrying on the same mirror grows 1x, 2x, ... this (pooch's backoff).
BACKOFF_SECONDS = 1.0
#: Where partial downloads live, inside the destination folder.
PARTIAL_DIR = ".partial"
#: A partial file nobody has written for this long is stale, whoever made it.
STALE_SECONDS = 3600.0
_PARTIAL_NAME = re.compile(r"^(?P<file>.+)\.(?P<pid>\d+)@(?P<host>[^@/]*)\.[0-9a-f]+\.part$")
_POOCH_TEMPORARY = re.compile(r"^tmp[a-z0-9_]{8}$")


def mirrors_for(spec: DatasetSpec, mirrors=None) -> list[str]:
    chosen = list(mirrors or []) or os.environ.get(MIRRORS_ENV_VAR, "").replace(",", " ").split()
    return [m if m.endswith("/") else m + "/" for m in (chosen or spec.mirrors)]


class _Failure(Exception):
    """One transfer failed: why, in a few words (``str``), and what to do next:
    ``retry`` on the same mirror (a broken or corrupt transfer), or ``skip_mirror`` for
    the remaining files (it cannot be reached)."""

    def __init__(self, reason: str, *, retry: bool = False, skip_mirror: bool = False):
        super().__init__(reason)
        self.retry, self.skip_mirror = retry, skip_mirror


class _Sink:
    """The partial file the downloader writes to, watched by the thread that waits.

    Shared between the downloading thread (``write``) and the waiting one (``close``);
    once closed, a write raises, which ends a transfer that outlived its deadline.
    """

    def __init__(self, path: Path, max_bytes: int):
        # 0o666 less the umask, like any file the user creates (tempfile's are 0600).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
        self.file = os.fdopen(fd, "wb")
        self.max_bytes = max_bytes
        self.written = 0
        self.last_progress = time.monotonic()
        self.lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self.lock:
            if self.file.closed:
                raise _Failure("given up")
            if self.written + len(data) > self.max_bytes:
                raise _Failure(f"sends more than {self.max_bytes} bytes")
            self.file.write(data)
            self.written += len(data)
            self.last_progress = time.monotonic()
            return len(data)

    def flush(self) -> None:
        with self.lock:
            if not self.file.closed:
                self.file.flush()

    def close(self) -> None:
        with self.lock:
            self.file.close()


def partial_name(filename: str, pid: int | None = None, host: str | None = None) -> str:
    """The name a download of ``filename`` has while it is partial: the process and host
    that write it, so that a later fetch knows when it is stale (and a random part, so
    that a reused process id never collides with a stale file)."""
    pid = os.getpid() if pid is None else pid
    return f"{filename}.{pid}@{host or socket.gethostname()}.{secrets.token_hex(4)}.part"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: rely on the age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def _remove_stale(target: Path) -> None:
    """Delete partial downloads (and pooch's old temporaries) left by dead processes."""
    now, host = time.time(), socket.gethostname()
    for folder, pattern in ((target / PARTIAL_DIR, _PARTIAL_NAME), (target, _POOCH_TEMPORARY)):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for path in entries:
            match = pattern.match(path.name)
            if match is None:
                continue
            try:
                old = now - path.stat().st_mtime > STALE_SECONDS
                dead = (pattern is _PARTIAL_NAME and match["host"] == host
                        and not _pid_alive(int(match["pid"])))
                if old or dead:
                    path.unlink()
            except OSError:
                pass  # gone already, or not ours to delete


def _prepare(target: Path) -> list[Path]:
    """Create ``target`` and its partial folder, and check that they can be written,
    before any mirror is tried. Returns the folders it created, innermost first."""
    created = []
    try:
        for folder in (target / PARTIAL_DIR, target, *target.parents):
            if folder.exists():
                break
            created.append(folder)
        for folder in reversed(created):
            folder.mkdir()
        if not os.access(target / PARTIAL_DIR, os.W_OK | os.X_OK) or not os.access(
                target, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        _remove_empty(created)
        raise DatasetError(
            f"cannot download into {target}: {exc.strerror or exc}. Choose a folder you "
            f"can write with {argument('data_dir', meta='FOLDER')} or {ENV_VAR}=FOLDER "
            f"(the cache is $XDG_CACHE_HOME/multinet)"
        ) from None
    return created


def _remove_empty(folders) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty, or already gone


def _looks_like(path: Path) -> str:
    """What a file that failed its hash check is, for the error."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return "checksum mismatch"
    if head.startswith(b"\x1f\x8b"):
        return "checksum mismatch"
    if b"<html" in head.lower() or head.lstrip().lower().startswith(b"<!doctype"):
        return "served an HTML page, not the file"
    return "not a gzip file"


def _failure(exc: BaseException, connect_timeout: float) -> _Failure:
    """A transfer's error as a ``_Failure``; anything but requests' errors is raised."""
    import requests

    errors = requests.exceptions
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, errors.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return _Failure(f"HTTP {status}", retry=status >= 500)
    if isinstance(exc, errors.ConnectTimeout):
        return _Failure(f"no connection within {connect_timeout:g} s", skip_mirror=True)
    if isinstance(exc, errors.ChunkedEncodingError):
        return _Failure("connection broke off", retry=True)
    if isinstance(exc, errors.Timeout):
        return _Failure("timed out", retry=True)
    if isinstance(exc, errors.ConnectionError):
        return _Failure("cannot connect", skip_mirror=True)
    if isinstance(exc, errors.RequestException):
        return _Failure((str(exc).splitlines() or [type(exc).__name__])[0][:80])
    raise exc  # a local error (disk full: see _download), or a bug


def _transfer(url: str, part: Path, *, progress: bool, timeout: float,
              connect_timeout: float, deadline: float, max_bytes: int) -> None:
    """Stream ``url`` into ``part`` within the bounds, or raise ``_Failure``.

    pooch's downloader runs in a thread and this one waits, so that a transfer which
    trickles (each read within the socket timeout) still ends at the deadline. A thread
    given up on ends at its next write, or with the process.
    """
    import pooch

    # Our own bar, not pooch's, so that it is closed (and cleared) when a transfer fails;
    # pooch sets its total from the response. total=1: pooch only feeds a truthy bar.
    bar = tqdm(total=1, ncols=79, unit="B", unit_scale=True, file=sys.stderr,
               ascii=sys.platform == "win32") if progress else False
    downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=STALL_BYTES,
                                      timeout=(connect_timeout, timeout + 1.0))
    sink = _Sink(part, max_bytes)
    outcome: list[BaseException] = []

    def run():
        try:
            downloader(url, sink, None)
        except BaseException as exc:  # reported by the waiting thread
            outcome.append(exc)

    start = time.monotonic()
    worker = threading.Thread(target=run, name=f"multinet download {part.name}", daemon=True)
    try:
        worker.start()
        while True:
            worker.join(max(0.0, min(start + deadline, sink.last_progress + timeout)
                            - time.monotonic()))
            if not worker.is_alive():
                break
            now = time.monotonic()
            if now >= start + deadline:
                raise _Failure(f"not done within {deadline:g} s", skip_mirror=True)
            if now >= sink.last_progress + timeout:
                raise _Failure(f"stalled (under {STALL_BYTES} bytes in {timeout:g} s)",
                               retry=sink.written > 0, skip_mirror=sink.written == 0)
    finally:
        sink.close()
        if bar is not False:
            bar.leave = not (outcome or worker.is_alive())
            bar.close()
    if outcome:
        raise _failure(outcome[0], connect_timeout)


def _download(url: str, filename: str, known_hash: str, target: Path, *, retries: int,
              **bounds) -> Path:
    """One file from one mirror, retried; returns its final path or raises ``_Failure``."""
    from pooch.hashes import hash_matches

    part = target / PARTIAL_DIR / partial_name(filename)
    for attempt in range(retries + 1):
        try:
            try:
                part.parent.mkdir(exist_ok=True)  # another fetch may have just removed it
                _transfer(url, part, **bounds)
                if not hash_matches(str(part), known_hash):
                    kind = _looks_like(part)
                    raise _Failure(kind, retry=kind == "checksum mismatch")
                os.replace(part, target / filename)
                return target / filename
            finally:
                part.unlink(missing_ok=True)
        except _Failure as failure:
            if not failure.retry or attempt == retries:
                raise
            time.sleep(BACKOFF_SECONDS * min(attempt + 1, 10))
        except OSError as exc:  # local (disk full, permissions): no mirror can help
            raise DatasetError(f"cannot write the download into {target}: "
                               f"{exc.strerror or exc}") from None
    raise AssertionError("unreachable")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fetch(name: str = "mnist", directory: str | os.PathLike | None = None, *, mirrors=None,
          timeout: float = READ_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
          deadline: float = DEADLINE, max_bytes: int = MAX_FILE_BYTES, retries: int = 2,
          progress: bool = True, say=_say) -> dict[str, Path]:
    """Download the dataset's four ``.gz`` files into ``directory`` (default: the cache,
    ``<cache>/<name>/``), skipping files already there with the right hash.

    Each file is tried on each mirror in turn (see the module docstring for the bounds
    and retries); ``say`` gets one line per attempt (default: stderr). Times are in
    seconds. Raises ``DatasetError`` if the destination cannot be written (before any
    mirror is tried) or if a file cannot be had from any mirror.
    """
    from pooch.hashes import hash_matches

    spec = dataset_spec(name)
    target = Path(directory).expanduser() if directory else cache_dir() / spec.name
    urls = mirrors_for(spec, mirrors)
    bounds = dict(progress=progress, timeout=timeout, connect_timeout=connect_timeout,
                  deadline=deadline, max_bytes=max_bytes)
    _remove_stale(target)
    fetched, missing = {}, {}
    for role, stem in FILES.items():
        known = target / f"{stem}.gz"
        try:
            if known.is_file() and hash_matches(str(known), spec.download_hashes[role]):
                fetched[role] = known
                continue
        except OSError as exc:
            raise DatasetError(f"{known}: cannot read ({exc.strerror or exc})") from None
        missing[role] = f"{stem}.gz"
    if not missing:
        return fetched
    created = _prepare(target)
    unreachable = set()
    try:
        for role, filename in missing.items():
            failures = []
            for url in urls:
                if url in unreachable:
                    failures.append(f"{url} (skipped: unreachable)")
                    continue
                say(f"multinet: downloading {filename} from {url}")
                try:
                    fetched[role] = _download(url + filename, filename,
                                              spec.download_hashes[role], target,
                                              retries=retries, **bounds)
                    break
                except _Failure as failure:
                    failures.append(f"{url} ({failure})")
                    if failure.skip_mirror:
                        unreachable.add(url)
            else:
                raise DatasetError(
                    f"could not download {filename} from any mirror: {'; '.join(failures)}. "
                    f"Put the four {spec.name} files ({file_names()}) in a folder and pass "
                    f"{argument('data_dir', meta='FOLDER')} or set {ENV_VAR}=FOLDER, or try "
                    f"another mirror: {argument('mirrors', meta='[URL, ...]')}"
                )
    finally:
        _remove_empty([target / PARTIAL_DIR, *created])  # only the empty ones go
    return fetched
