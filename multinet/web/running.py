"""Running the page's server: the socket, waitress with its limits, and the signals
that stop it.

Why waitress: it is a small, pure-Python HTTP server of the Pylons project, with no
dependencies, well kept, and built the way a local tool that must not be blocked needs:
one I/O thread reads every request, body included, into a buffer before a fixed pool of
worker threads sees it, so a client that sends slowly or vanishes half-way holds no
worker, and the pool bounds the work; it answers a body over ``max_request_body_size``
with 413 itself, and closes connections idle for ``channel_timeout``. The standard
library's ``http.server`` would need all of that written around it (a thread per
connection reading the body itself, no limits), and a framework would add much and
solve none of it. To waitress's limits this module adds one: a request that dribbles in
is cut off (``REQUEST_DEADLINE``).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable

from multinet.errors import MultinetError, argument

#: Worker threads: answers wait for their backend's lock, so a few more than the cores
#: keep the page's files and the information flowing meanwhile.
THREADS = 8
#: Connections at once (polled, so not bound by select's 1,024 descriptors), and how
#: long one may stay idle before it is closed (seconds): a browser reconnects at once.
CONNECTION_LIMIT = 500
IDLE_TIMEOUT = 10
#: A request still arriving after ``REQUEST_DEADLINE`` seconds at under ``SLOWEST``
#: bytes a second on average is cut off: a client sending a byte now and then (slowloris)
#: would otherwise hold its connection, one of ``CONNECTION_LIMIT``, for ever, while a
#: 25 MB picture over a slow network (10 kB/s) still arrives.
REQUEST_DEADLINE = 10
SLOWEST = 10_000
#: How often idle and slow connections are looked for (seconds).
CLEANUP_INTERVAL = 2
#: On Ctrl-C or SIGTERM, how long the answers under way may take to finish (seconds).
DRAIN_SECONDS = 10
#: Names a loopback server answers to, besides loopback addresses.
LOOPBACK_NAMES = ("localhost", "localhost.")


def require_waitress():
    """waitress's ``create_server``; ``MultinetError`` naming the extra where it is
    missing."""
    try:
        from waitress import create_server
    except ImportError:
        raise MultinetError('multinet serve needs waitress: pip install "multinet[web]"'
                            ) from None
    return create_server


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host`` (a name or an address; its first address) and ``port``
    (0: a free one), listening.

    Raises
    ------
    MultinetError
        For a host that cannot be resolved, a port in use, or an address or port this
        process may not take, in one line naming the option.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise MultinetError(f"{argument('host', host)}: no such address "
                            f"({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return socket.create_server(address[:2], family=family)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            raise MultinetError(f"{argument('port', port)}: already in use on {host} (by "
                                f"another server? choose another port, or 0 for a free one)"
                                ) from None
        raise MultinetError(f"cannot listen on {host} port {port}: {reason}") from None


def is_loopback(sock: socket.socket) -> bool:
    """Whether ``sock`` is bound to a loopback address (reachable from this machine only)."""
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def url(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket (an IPv6 address in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def loopback_hosts(sock: socket.socket) -> frozenset:
    """The ``Host`` names a server bound to loopback answers to: ``localhost`` and the
    loopback addresses it is reachable at."""
    return frozenset({*LOOPBACK_NAMES, sock.getsockname()[0], "127.0.0.1", "::1"})


def create(site, sock: socket.socket, *, threads: int = THREADS):
    """A waitress server answering ``site`` on the listening ``sock``.

    Parameters
    ----------
    site : multinet.web.server.Site
        The WSGI application; its ``max_upload`` (bytes) is the body limit.
    sock : socket.socket
        From ``listen``.
    threads : int
        Worker threads.

    Returns
    -------
    waitress server
        ``run()`` serves until stopped; ``close()`` closes it.
    """
    create_server = require_waitress()
    from waitress.parser import HTTPRequestParser
    # waitress warns of every request that waits for a worker; several pages at once
    # make them wait by design, so that is no news on the terminal.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # waitress refuses a body of max_request_body_size bytes or more: one more than the
    # largest accepted.
    server = create_server(site, sockets=[sock], threads=threads,
                           max_request_body_size=site.max_upload + 1,
                           channel_timeout=IDLE_TIMEOUT, cleanup_interval=CLEANUP_INTERVAL,
                           connection_limit=CONNECTION_LIMIT, asyncore_use_poll=True,
                           ident="multinet")

    class TimedParser(HTTPRequestParser):
        """waitress's request parser, which also knows when its request began and how
        many bytes of it have come (for ``_cut_slow``)."""

        def __init__(self, adj):
            super().__init__(adj)
            self.began, self.bytes_in = time.time(), 0

        def received(self, data):
            self.bytes_in += len(data)
            return super().received(data)

    class Channel(server.channel_class):
        parser_class = TimedParser

    server.channel_class = Channel
    idle = server.maintenance
    server.maintenance = lambda now: (idle(now), _cut_slow(server, now))
    return server


def _cut_slow(server, now: float) -> None:
    """Close every connection whose request is still arriving after ``REQUEST_DEADLINE``
    seconds at under ``SLOWEST`` bytes a second (waitress's own maintenance closes the
    idle ones)."""
    for channel in list(server.active_channels.values()):
        request = channel.request
        if request is None or request.completed:
            continue
        took = now - request.began
        if took > REQUEST_DEADLINE and request.bytes_in < SLOWEST * took:
            channel.will_close = True


class Stop:
    """Ctrl-C and SIGTERM, caught from the start of ``multinet serve`` (``with Stop() as
    stop:``, in the main thread; the previous handlers are put back at the end).

    A signal only records the request. Before the server runs, ``check()``, called
    between the steps of the start, then raises ``KeyboardInterrupt``: an exception
    raised at any moment inside a library that is loading (JAX's, say) may be swallowed
    by one of its callbacks, print a traceback, or leave it half-made. Once serving, the
    loop of ``serve`` sees the request: no new connection is taken, and the answers under
    way are finished and sent.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.server = None
        self._previous = {}

    def __enter__(self) -> Stop:
        self._previous = {signum: signal.signal(signum, self._handle)
                          for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        self.requested = True
        if self.server is not None:
            self.server.pull_trigger()  # wake the loop, which then sees the request

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal came during the start."""
        if self.requested:
            raise KeyboardInterrupt


def _busy(server) -> bool:
    """Whether any answer is being computed, waiting for a worker or still being sent."""
    return bool(server.task_dispatcher.queue) or any(
        channel.requests or channel.total_outbufs_len
        for channel in list(server.active_channels.values()))


def serve(server, stop: Stop, ready: Callable[[], None] | None = None) -> None:
    """Serve until ``stop`` is requested, then finish the answers under way (for at most
    ``DRAIN_SECONDS``) and close the server and its socket.

    Parameters
    ----------
    server
        From ``create``.
    stop : Stop
        Entered already (its handlers installed).
    ready : callable, optional
        Called just before serving: where to say that it does.
    """
    loop = server.asyncore.loop
    stop.server = server
    try:
        if stop.requested:
            return
        if ready is not None:
            ready()
        while not stop.requested:
            loop(timeout=CLEANUP_INTERVAL, map=server._map, use_poll=True, count=1)
        server.accepting = False  # readable() is then False: no new connection
        deadline = time.monotonic() + DRAIN_SECONDS
        while _busy(server) and time.monotonic() < deadline:
            loop(timeout=0.05, map=server._map, use_poll=True, count=1)
    finally:
        server.task_dispatcher.shutdown(timeout=1)
        server.close()
