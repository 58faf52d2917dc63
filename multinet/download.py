"""Downloading a dataset into the cache, with requests and pooch's hash checks.

Each file is streamed to ``<folder>/.partial/<file>.<pid>@<host>.<random>.part``, checked
against its known hash, and only then renamed into place, so a partial or corrupt
download is never where the reader looks. It is created 0666 less the umask, not 0600,
so a shared cache stays readable. Partial files whose process is dead (same host) or
that nobody has touched for an hour are deleted by the next fetch into that folder, and
so are the ``tmpXXXXXXXX`` files pooch's own fetch left in older versions of multinet.
The destination is created and checked before any mirror is tried, and after a failure
nothing is left behind: no partial file, no folder that fetch created.

Every transfer is bounded: ``connect_timeout`` to connect (a mirror that does not answer
is then skipped for the remaining files), at least 1 KiB every ``timeout`` seconds,
``deadline`` seconds for the whole file, and ``MAX_FILE_BYTES``. A line on stderr says
which mirror is being tried. A transfer that broke off or stalled midway, arrived
corrupt or met an HTTP 5xx is retried ``retries`` times (pauses 1 s, 2 s, ...); one
refused for good (HTTP 4xx, an HTML page, no answer, the deadline, too large) is not.

The transfer itself is ``multinet.transfer``: the file as the mirror sent it (never
decoded on the way), its failure in a few words, a proxy that cannot be reached named;
the mirrors behind such a proxy are not tried again.

Mirrors, in order of precedence: ``--mirror URL`` (repeatable), ``$MULTINET_MIRRORS``
(separated by spaces or commas), the dataset's defaults. requests and pooch are imported
only when a file is downloaded: a run whose files are on disk does not pay their 150 ms.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from multinet.catalog import (ENV_VAR, FILES, DatasetSpec, cache_dir, dataset_spec,
                              file_names)
from multinet.errors import DatasetError, InvalidArgument, argument
from multinet.transfer import TransferFailed, proxy_for, transfer

MIRRORS_ENV_VAR = "MULTINET_MIRRORS"
#: Seconds to connect to a mirror; one that does not answer in time is skipped.
CONNECT_TIMEOUT = 10.0
#: A transfer that delivers under 1 KiB (``transfer.STALL_BYTES``) in this long is given up.
READ_TIMEOUT = 30.0
#: Seconds one file may take in all, however steadily it trickles in.
DEADLINE = 600.0
#: MNIST-format ``.gz`` files are at most ~30 MB; a mirror sending more is broken.
MAX_FILE_BYTES = 256 << 20
#: The pause before retrying on the same mirror grows 1x, 2x, ... this (pooch's backoff).
BACKOFF_SECONDS = 1.0
#: Where partial downloads live, inside the destination folder.
PARTIAL_DIR = ".partial"
#: A partial file nobody has written for this long is stale, whoever made it.
STALE_SECONDS = 3600.0
_PARTIAL_NAME = re.compile(r"^(?P<file>.+)\.(?P<pid>\d+)@(?P<host>[^@/]*)\.[0-9a-f]+\.part$")
_POOCH_TEMPORARY = re.compile(r"^tmp[a-z0-9_]{8}$")


def mirrors_for(spec: DatasetSpec, mirrors=None) -> list[str]:
    """The base URLs to try, in order, each ending with ``/``.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset, whose own mirrors come last.
    mirrors : str or sequence of str, optional
        The caller's; None or empty: ``$MULTINET_MIRRORS``, else the dataset's.

    Returns
    -------
    list of str

    Raises
    ------
    InvalidArgument
        A mirror that is not an http(s) URL with a host, named with where it came from.
    """
    chosen = [mirrors] if isinstance(mirrors, str) else list(mirrors or [])
    source = argument("mirrors", meta="[URL, ...]")
    if not chosen:
        chosen = os.environ.get(MIRRORS_ENV_VAR, "").replace(",", " ").split()
        source = MIRRORS_ENV_VAR
    for url in chosen:
        if not _is_http_url(url):
            raise InvalidArgument(f"the mirror {url!r} (from {source}) is not an http:// "
                                  f"or https:// URL")
    return [m if m.endswith("/") else m + "/" for m in (chosen or spec.mirrors)]


def _is_http_url(url) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port that is not a number raises ValueError
        return (parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
                and url.isprintable() and not any(c.isspace() for c in url))
    except (ValueError, TypeError, AttributeError):
        return False


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


def _download(url: str, filename: str, known_hash: str, target: Path, *, retries: int,
              **bounds) -> Path:
    """One file from one mirror, retried; returns its final path or raises ``TransferFailed``."""
    from pooch.hashes import hash_matches

    part = target / PARTIAL_DIR / partial_name(filename)
    for attempt in range(retries + 1):
        try:
            try:
                part.parent.mkdir(exist_ok=True)  # another fetch may have just removed it
                transfer(url, part, **bounds)
                if not hash_matches(str(part), known_hash):
                    kind = _looks_like(part)
                    raise TransferFailed(kind, retry=kind == "checksum mismatch")
                os.replace(part, target / filename)
                return target / filename
            finally:
                part.unlink(missing_ok=True)
        except TransferFailed as failure:
            if not failure.retry or attempt == retries:
                raise
            time.sleep(BACKOFF_SECONDS * min(attempt + 1, 10))
        except OSError as exc:  # local (disk full, permissions): no mirror can help
            raise DatasetError(f"cannot write the download into {target}: "
                               f"{exc.strerror or exc}") from None
    raise AssertionError("unreachable")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _terminal(stream) -> bool:
    """Whether ``stream`` is a terminal, as tqdm's ``disable=None`` decides."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no stream (pythonw), or a closed one
        return False


def fetch(name: str = "mnist", directory: str | os.PathLike | None = None, *, mirrors=None,
          timeout: float = READ_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
          deadline: float = DEADLINE, max_bytes: int = MAX_FILE_BYTES, retries: int = 2,
          progress: bool = True, say=_say) -> dict[str, Path]:
    """Download the dataset's four ``.gz`` files, skipping those already there with the
    right hash. Each file is tried on each mirror in turn (see the module docstring).

    Parameters
    ----------
    name : str
        The dataset (``multinet.catalog``).
    directory : str or os.PathLike, optional
        Where the files go; None: the cache, ``<cache>/<name>/``.
    mirrors : str or sequence of str, optional
        Base URLs to try, in order (see ``mirrors_for``).
    timeout, connect_timeout, deadline : float
        Seconds: at most this long without 1 KiB arriving, to connect, for the
        whole file.
    max_bytes, retries : int
        The most a file may be; further tries on a mirror whose transfer broke off,
        arrived corrupt or met HTTP 5xx.
    progress : bool
        Draw a progress bar on stderr where it is a terminal: in a log or a pipe each
        frame would stay, so there the lines ``say`` gets are the only progress.
    say : callable
        Gets one line per attempt (default: printed on stderr).

    Returns
    -------
    dict
        The path of each file, by role (``train_images``...).

    Raises
    ------
    InvalidArgument
        A mirror that is not an http(s) URL.
    DatasetError
        The destination cannot be written (said before any mirror is tried), or a file
        cannot be had from any mirror: one line naming each mirror with its reason.
    """
    from pooch.hashes import hash_matches

    spec = dataset_spec(name)
    target = Path(directory).expanduser() if directory else cache_dir() / spec.name
    urls = mirrors_for(spec, mirrors)
    bounds = dict(progress=progress and _terminal(sys.stderr), timeout=timeout,
                  connect_timeout=connect_timeout, deadline=deadline, max_bytes=max_bytes)
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
    proxies = {url: proxy_for(url) for url in urls}
    unreachable, dead_proxies = set(), set()
    try:
        for role, filename in missing.items():
            failures = []
            for url in urls:
                if proxies[url] in dead_proxies:
                    failures.append(f"{url} (skipped: cannot connect to the proxy "
                                    f"{proxies[url]})")
                    continue
                if url in unreachable:
                    failures.append(f"{url} (skipped: unreachable)")
                    continue
                say(f"multinet: downloading {filename} from {url}")
                try:
                    fetched[role] = _download(url + filename, filename,
                                              spec.download_hashes[role], target,
                                              retries=retries, **bounds)
                    break
                except TransferFailed as failure:
                    # Through a proxy, an HTTP error or a cut may be the proxy's doing.
                    via = (f", through the proxy {proxies[url]}"
                           if proxies[url] and not failure.proxy else "")
                    failures.append(f"{url} ({failure}{via})")
                    if failure.proxy:
                        dead_proxies.add(proxies[url])
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
