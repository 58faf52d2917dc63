"""One HTTP transfer into a file, bounded in time and size; its failure in a few words.

``transfer`` streams a URL into a partial file in a thread of its own while the caller's
thread watches it, so that a transfer which trickles (each read within the socket
timeout) still ends at its deadline. The body is written as it came over the wire:
identity encoding is asked for, and a body that the server labels ``Content-Encoding:
gzip`` anyway (a ``.gz`` stored so on S3, Apache's ``AddEncoding``) is not decompressed,
so a hash check sees the file the mirror holds (pip reads its downloads the same way;
requests' ``iter_content``, and so pooch's downloader, would decompress it). A proxy from
the environment that cannot be reached is named, with the variable that set it.

requests and urllib3 (its HTTP stack) are imported only when a transfer runs: a run whose
files are on disk does not pay their 150 ms.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

#: The write size, and so the progress a transfer must make per timeout.
STALL_BYTES = 1024
#: The file as stored, not compressed again for the transfer (which the client would undo).
IDENTITY = {"Accept-Encoding": "identity"}


def proxy_for(url: str) -> str | None:
    """The proxy a transfer of ``url`` goes through, for messages.

    Parameters
    ----------
    url : str

    Returns
    -------
    str or None
        The environment's proxy for ``url`` as requests reads it (``NO_PROXY`` included),
        without its password, and the variable that set it:
        ``http://127.0.0.1:3128 (from HTTPS_PROXY)``; None for a direct connection.
    """
    from requests.utils import get_environ_proxies, select_proxy

    proxy = select_proxy(url, get_environ_proxies(url))
    if not proxy:
        return None
    scheme = urlsplit(url).scheme.lower()
    names = [n for key in (scheme, "all") for n in (f"{key}_proxy", f"{key}_proxy".upper())]
    source = next((n for n in names if os.environ.get(n) == proxy), "the system's settings")
    parts = urlsplit(proxy)
    if parts.password is not None:
        proxy = parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
                               ).geturl()
    return f"{proxy} (from {source})"


class TransferFailed(Exception):
    """A transfer failed: why, in a few words (``str``), and what to do next:
    ``retry`` on the same mirror (a broken or corrupt transfer), or ``skip_mirror`` for
    the remaining files (it cannot be reached); ``proxy``: the proxy could not be reached,
    so no mirror behind it can be."""

    def __init__(self, reason: str, *, retry: bool = False, skip_mirror: bool = False,
                 proxy: bool = False):
        super().__init__(reason)
        self.retry, self.skip_mirror, self.proxy = retry, skip_mirror, proxy


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
                raise TransferFailed("given up")
            if self.written + len(data) > self.max_bytes:
                raise TransferFailed(f"sends more than {self.max_bytes} bytes")
            self.file.write(data)
            self.written += len(data)
            self.last_progress = time.monotonic()
            return len(data)

    def close(self) -> None:
        with self.lock:
            self.file.close()


def _causes(exc: BaseException):
    """``exc`` and what it wraps, outermost first: requests wraps urllib3's errors
    (``reason``, ``args``), which wrap the socket's (``__cause__``)."""
    seen, todo = set(), [exc]
    while todo:
        error = todo.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        todo += [e for e in (getattr(error, "reason", None), error.__cause__,
                             error.__context__, *error.args) if isinstance(e, BaseException)]


def _why(exc: BaseException) -> str:
    """What the operating system said (``Connection refused``, ``Name or service not
    known``), else the innermost message; one line, without object addresses."""
    causes = list(_causes(exc))
    said = next((e.strerror for e in causes if isinstance(e, OSError) and e.strerror), None)
    text = said or next((str(e) for e in reversed(causes) if str(e)), type(exc).__name__)
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>(: )?", "", text)
    return " ".join(text.split())


def _failure(exc: BaseException, connect_timeout: float, proxy: str | None) -> TransferFailed:
    """A transfer's error as a ``TransferFailed``; anything but requests' and urllib3's
    errors is raised. ``proxy``: the proxy the transfer went through (``proxy_for``)."""
    import requests
    import urllib3

    errors = requests.exceptions
    if isinstance(exc, TransferFailed):
        return exc
    if isinstance(exc, errors.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return TransferFailed(f"HTTP {status}", retry=status >= 500)
    if isinstance(exc, errors.ProxyError) and proxy:
        timed_out = any(isinstance(e, urllib3.exceptions.ConnectTimeoutError) and not
                        isinstance(e, urllib3.exceptions.NewConnectionError)
                        for e in _causes(exc))
        why = f"no answer within {connect_timeout:g} s" if timed_out else _why(exc)
        return TransferFailed(f"cannot connect to the proxy {proxy}: {why}",
                              skip_mirror=True, proxy=True)
    if isinstance(exc, errors.ConnectTimeout):
        return TransferFailed(f"no connection within {connect_timeout:g} s", skip_mirror=True)
    if isinstance(exc, (errors.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return TransferFailed("connection broke off", retry=True)
    if isinstance(exc, (errors.Timeout, urllib3.exceptions.ReadTimeoutError)):
        return TransferFailed("timed out", retry=True)
    if isinstance(exc, errors.ConnectionError):
        return TransferFailed(f"cannot connect: {_why(exc)}", skip_mirror=True)
    if isinstance(exc, (errors.RequestException, urllib3.exceptions.HTTPError)):
        return TransferFailed(_why(exc))
    raise exc  # a local error (disk full: see _download), or a bug


def _get(url: str, sink: _Sink, bar, timeout: tuple[float, float]) -> None:
    """Write the body of ``url`` into ``sink`` as it came over the wire.

    Read undecoded (``decode_content=False``): requests' ``iter_content``, and so pooch's
    downloader, would decompress a ``.gz`` that the server labels ``Content-Encoding:
    gzip``, and the hash check would then see the decompressed contents.
    """
    import requests

    with requests.get(url, stream=True, timeout=timeout, headers=IDENTITY) as response:
        response.raise_for_status()
        if bar is not False:
            length = response.headers.get("Content-Length", "")
            bar.reset(total=int(length) if length.isdigit() else None)
        for chunk in response.raw.stream(STALL_BYTES, decode_content=False):
            sink.write(chunk)
            if bar is not False:
                bar.update(len(chunk))


def transfer(url: str, part: Path, *, progress: bool, timeout: float,
             connect_timeout: float, deadline: float, max_bytes: int) -> None:
    """Stream ``url`` into the new file ``part`` (0666 less the umask), within bounds.

    The transfer runs in a thread and this one waits, so that a transfer which trickles
    (each read within the socket timeout) still ends at the deadline. A thread given up
    on ends at its next write, or with the process.

    Parameters
    ----------
    url : str
    part : pathlib.Path
        The file to create and write.
    progress : bool
        Draw a progress bar on stderr, cleared if the transfer fails.
    timeout, connect_timeout, deadline : float
        Seconds: at most this long without ``STALL_BYTES`` arriving, to connect, for the
        whole transfer.
    max_bytes : int
        The most the body may be.

    Raises
    ------
    TransferFailed
        Why, in a few words, and whether to retry or to skip the mirror.
    OSError
        ``part`` cannot be created or written (a local fault).
    """
    # Closed (and cleared) when a transfer fails; its total comes from the response.
    bar = tqdm(total=None, ncols=79, unit="B", unit_scale=True, file=sys.stderr,
               ascii=sys.platform == "win32") if progress else False
    sink = _Sink(part, max_bytes)
    outcome: list[BaseException] = []

    def run():
        try:
            _get(url, sink, bar, (connect_timeout, timeout + 1.0))
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
                raise TransferFailed(f"not done within {deadline:g} s", skip_mirror=True)
            if now >= sink.last_progress + timeout:
                raise TransferFailed(f"stalled (under {STALL_BYTES} bytes in {timeout:g} s)",
                               retry=sink.written > 0, skip_mirror=sink.written == 0)
    finally:
        sink.close()
        if bar is not False:
            bar.leave = not (outcome or worker.is_alive())
            bar.close()
    if outcome:
        raise _failure(outcome[0], connect_timeout, proxy_for(url))
