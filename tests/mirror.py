"""A dataset mirror on 127.0.0.1 for download tests: it serves files well, or in the ways
real mirrors fail. No internet is needed or touched.

``URL/<mode>/<file>`` serves ``file`` in that mode:

- ``good``: as it is; ``missing``: 404; ``flaky``: 503 on the first request for each
  path, then as it is; ``corrupt``: one byte changed; ``truncated``: the connection drops
  halfway (the full Content-Length was announced); ``html``: a captive portal's page.
- ``encoded``: as it is, labelled ``Content-Encoding: gzip`` whatever the client asked
  for (a ``.gz`` stored so on S3, or Apache's ``AddEncoding x-gzip .gz``);
  ``elsewhere``: a redirect to an ``ftp://`` URL with a long path, which no HTTP client
  follows.
- ``hang``: answers only after ``Mirror.hang_seconds``; ``trickle``: one byte every
  ``Mirror.trickle_pause`` seconds; ``steady``: 4 KiB every 0.02 s (never stalls, takes
  minutes); ``endless``: zeros as fast as the client reads, without end. The last
  three serve any name.

The mirror is a forward proxy as well: a request for an absolute URL (``GET
http://host/mode/file``, as a client sends to ``HTTP_PROXY``) is served from its path and
counted in ``hits["proxied"]``. Each request's ``Accept-Encoding`` is kept in
``accept_encodings``.

``unanswering_address()`` is a port whose listen queue is full: connecting hangs, as it
does to a mirror behind a firewall that drops packets. ``refusing_address()`` is a port
where nothing listens: connecting is refused at once.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HTML = b"<!DOCTYPE html><html><body>Please log in to use this network.</body></html>"
STREAMING = ("trickle", "steady", "endless")
#: Where ``elsewhere`` sends the client: longer than any cut a message might make.
ELSEWHERE = "ftp://mirror.invalid/" + "/".join(["a-long-folder-name"] * 6) + "/"


class Mirror:
    """A running mirror: ``base`` URL, ``hits`` per mode and per path."""

    def __init__(self, files: dict[str, bytes], *, hang_seconds=3.0, trickle_pause=0.1):
        self.files, self.hits, self.accept_encodings = files, Counter(), []
        self.hang_seconds, self.trickle_pause = hang_seconds, trickle_pause
        self.stopping = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if not self.path.startswith("/"):  # absolute: asked as a proxy
                    mirror.hits["proxied"] += 1
                    self.path = urlsplit(self.path).path
                mode, _, name = self.path.lstrip("/").partition("/")
                mirror.hits[mode] += 1
                mirror.hits[self.path] += 1
                mirror.accept_encodings.append(self.headers.get("Accept-Encoding"))
                try:
                    mirror.serve(self, mode, name)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that gives up mid-transfer is what these tests make

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}/"

    def serve(self, handler, mode, name):
        body = self.files.get(name)
        if mode not in STREAMING and (body is None or mode == "missing"
                                      or (mode == "flaky" and self.hits[handler.path] == 1)):
            handler.send_error(503 if mode == "flaky" else 404)
            return
        if mode == "elsewhere":
            handler.send_response(302)
            handler.send_header("Location", ELSEWHERE + name)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if mode == "hang" and self.stopping.wait(self.hang_seconds):
            return
        if mode in ("trickle", "steady", "endless"):
            handler.send_response(200)
            if mode != "endless":
                handler.send_header("Content-Length", str(100 << 20))
            handler.end_headers()
            piece, pause = {"trickle": (b"\0", self.trickle_pause), "steady": (bytes(4096), 0.02),
                            "endless": (bytes(65536), 0.0)}[mode]
            while not self.stopping.is_set():
                handler.wfile.write(piece)
                handler.wfile.flush()
                if pause:
                    time.sleep(pause)
            return
        if mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        if mode == "html":
            body = HTML
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "text/html" if mode == "html" else
                            "application/octet-stream")
        if mode == "encoded":
            handler.send_header("Content-Encoding", "gzip")
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def running_mirror(files: dict[str, bytes], **options):
    mirror = Mirror(files, **options)
    try:
        yield mirror
    finally:
        mirror.stop()


@contextmanager
def unanswering_address():
    """``http://127.0.0.1:PORT/`` where connecting hangs: the listen queue is full."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        for sock in (*fillers, server):
            sock.close()


@contextmanager
def refusing_address():
    """``http://127.0.0.1:PORT/`` where connecting is refused: the port is taken, and
    nothing listens on it."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{taken.getsockname()[1]}/"
    finally:
        taken.close()
