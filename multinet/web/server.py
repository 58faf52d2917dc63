"""The web page's server: a plain WSGI application (``Site``), run under waitress
(``multinet.web.running`` says why, and with which limits).

The routes (``Site.__call__``; every error of ours is JSON ``{"error": "one line"}``):

* ``GET /``, ``GET /static/NAME``: the page, only the files found in ``STATIC`` when the
  server starts (an allow-list: names are looked up, never joined to a path, so ``..``,
  ``%2e%2e`` and ``//`` find nothing);
* ``GET /api/info``: the checkpoint, the backends, what the browser can run;
* ``POST /api/predict``: a picture file's bytes in, every backend's answer out
  (``multinet.web.answers``);
* ``GET /model.onnx``, ``GET /train/step.onnx``, ``/train/model.onnx``,
  ``/train/setup.json``: the graphs and the sample the page runs in onnxruntime-web
  (``multinet.web.browser``), built on first use and kept;
* ``GET /ort/NAME``: onnxruntime-web's files, from the folder given at start.

A server bound to a loopback address answers only requests addressed to a loopback name
(the ``Host`` header): a web page elsewhere cannot reach it by pointing a name of its own
at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from multinet._version import __version__
from multinet.backends import onnx as onnx_backend
from multinet.errors import MultinetError, argument
from multinet.pictures import PictureError
from multinet.web import browser
from multinet.web.answers import Answers

#: The page's own files: every regular file directly in it is served, nothing else.
STATIC = Path(__file__).resolve().parent / "static"
#: Content types by suffix; anything else is sent as bytes.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".wasm": "application/wasm",
                 ".png": "image/png", ".svg": "image/svg+xml", ".ico": "image/x-icon",
                 ".onnx": "application/octet-stream"}
#: The page may load and connect to nothing but this server: the browser itself
#: enforces that nothing is fetched from the internet. WebAssembly needs
#: 'wasm-unsafe-eval' (onnxruntime-web compiles its .wasm); the drawn picture travels as
#: a data:/blob: URL.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data: blob:; "
    "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'")
#: Sent with every answer: no guessing of content types, no referrer to other sites, the
#: policy above.
COMMON_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                  ("Content-Security-Policy", CONTENT_SECURITY_POLICY)]
def static_files(folder: Path = STATIC) -> dict[str, Path]:
    """The allow-list: every regular, not hidden file directly in ``folder``, by name
    (empty where the folder is missing)."""
    if not folder.is_dir():
        return {}
    return {path.name: path for path in sorted(folder.iterdir())
            if path.is_file() and not path.name.startswith(".")}


class _Error(Exception):
    """An answer that is an error: its HTTP status and one line."""

    def __init__(self, status: str, message: str, headers=()):
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


class _Once:
    """A value built on first use, once, whichever thread asks first; a failure is not
    kept, so the next request tries again (data that was missing may be there now)."""

    def __init__(self, build: Callable[[], object]):
        self._build = build
        self._lock = threading.Lock()
        self._value = None

    def get(self):
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value


class Site:
    """The WSGI application of ``multinet serve``.

    Parameters
    ----------
    answers : multinet.web.answers.Answers
        The checkpoint on its backends.
    max_upload : int
        The largest picture accepted, in bytes (413 beyond).
    ort : dict of str to Path, optional
        onnxruntime-web's files (``multinet.web.browser.ort_folder``); None: the page
        runs nothing in the browser.
    dataset : Dataset, or callable returning one, optional
        Where the sample for training in the browser comes from (called on first use).
    hosts : collection of str, optional
        The ``Host`` names answered (without port); None: any.
    within : callable, optional
        A context manager factory each request runs in (the command line's wording of
        messages, which worker threads do not inherit).
    static : dict of str to Path, optional
        The page's files (default: ``static_files()``).
    """

    def __init__(self, answers: Answers, *, max_upload: int, ort=None, dataset=None,
                 hosts=None, within=contextlib.nullcontext, static=None):
        self.answers = answers
        self.max_upload = max_upload
        self.ort = dict(ort or {})
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self.within = within
        self.static = static_files() if static is None else dict(static)
        self.model = _Once(lambda: browser.inference_graph(answers.checkpoint))
        self.training = _Once(lambda: browser.training_files(dataset))
        self.has_data = dataset is not None
        self.routes = {
            "/": ("GET", lambda env: self._file(self.static, "index.html")),
            "/api/info": ("GET", lambda env: _json(self.info())),
            "/api/predict": ("POST", self._predict),
            "/model.onnx": ("GET", lambda env: self._built(self.model.get)),
            **{f"/train/{name}": ("GET", self._training_file(name))
               for name in ("step.onnx", "model.onnx", "setup.json")},
        }

    def info(self) -> dict:
        """What ``GET /api/info`` answers: the version, the checkpoint, the backends
        (and those left out, with why), what the browser can run, the upload limit."""
        ready = bool(self.ort)
        reason = None if ready else (
            f"start multinet serve with {argument('onnxruntime', meta='DIR')} (the "
            f"onnxruntime-web folder) to run networks in this browser")
        training = ready and self.has_data
        return {"version": __version__, "checkpoint": self.answers.describe(),
                "backends": self.answers.names, "unavailable": dict(self.answers.unavailable),
                "browser": {"onnxruntime": f"/ort/{browser.ENTRY_SCRIPT}" if ready else None,
                            "inference": ready, "training": training,
                            "reason": reason},
                "max_upload": self.max_upload}

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        try:
            with self.within():
                self._check_host(environ)
                status, headers, body = self._route(method, path, environ)
        except _Error as exc:
            status, headers, body = _error(exc.status, str(exc), exc.headers)
        except Exception as exc:  # noqa: BLE001 - a bug is one line here, not a traceback
            print(f"multinet: error: {method} {path}: {type(exc).__name__}: {exc}"
                  .replace("\n", "\\n"), file=sys.stderr)
            status, headers, body = _error("500 Internal Server Error",
                                           f"internal error ({type(exc).__name__})")
        start_response(status, headers + COMMON_HEADERS)
        if isinstance(body, bytes):
            return [b"" if method == "HEAD" else body]
        if method == "HEAD":
            body.close()
            return [b""]
        wrapper = environ.get("wsgi.file_wrapper")  # waitress's sends it from the I/O thread
        return wrapper(body) if wrapper else _chunks(body)

    def _check_host(self, environ) -> None:
        if self.hosts is None or "HTTP_HOST" not in environ:
            return
        host = environ["HTTP_HOST"].strip().lower()
        # "name:port", "[v6 address]:port", or either without the port.
        name = host[1:host.find("]")] if host.startswith("[") else host.split(":")[0]
        if name not in self.hosts:
            raise _Error("403 Forbidden", f"this server answers only at a loopback address "
                                          f"(localhost, 127.0.0.1), not at {host!r}")

    def _route(self, method: str, path: str, environ):
        if path.startswith("/static/"):
            handler = ("GET", lambda env: self._file(self.static, path[len("/static/"):]))
        elif path.startswith("/ort/"):
            handler = ("GET", lambda env: self._file(self.ort, path[len("/ort/"):]))
        else:
            handler = self.routes.get(path)
        if handler is None:
            raise _Error("404 Not Found", f"no such page: {path}")
        allowed, answer = handler
        if method != allowed and not (method == "HEAD" and allowed == "GET"):
            methods = "GET, HEAD" if allowed == "GET" else allowed
            raise _Error("405 Method Not Allowed", f"{path} takes {allowed}, not {method}",
                         [("Allow", methods)])
        return answer(environ)

    def _file(self, files: dict, name: str):
        path = files.get(name)
        try:
            file = path.open("rb") if path is not None and path.is_file() else None
        except OSError:
            file = None
        if file is None:
            raise _Error("404 Not Found", f"no such file: {name}")
        content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return ("200 OK", [("Content-Type", content_type),
                           ("Content-Length", str(os.fstat(file.fileno()).st_size)),
                           ("Cache-Control", "no-cache")], file)

    def _built(self, get, content_type: str = "application/octet-stream"):
        try:
            body = get()
        except MultinetError as exc:
            raise _Error("404 Not Found", str(exc)) from None
        return "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                          ("Cache-Control", "no-cache")], body

    def _training_file(self, name: str):
        kind = CONTENT_TYPES[Path(name).suffix]

        def answer(environ):
            if not self.has_data:
                raise _Error("404 Not Found", "this server was started without data to "
                                              "train on")
            return self._built(lambda: self.training.get()[name], kind)
        return answer

    def _predict(self, environ):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _Error("400 Bad Request", "Content-Length is not a number") from None
        if length > self.max_upload:
            raise _Error("413 Request Entity Too Large",
                         f"the picture is {length:,} bytes; this server takes at most "
                         f"{self.max_upload:,}")
        picture = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            return _json(self.answers.answer(picture))
        except PictureError as exc:
            raise _Error("400 Bad Request", str(exc)) from None
        except MultinetError as exc:
            raise _Error("500 Internal Server Error", str(exc)) from None


def _json(value, status: str = "200 OK"):
    body = json.dumps(value).encode()
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store")], body


def _error(status: str, message: str, headers=()):
    line = message.replace("\r", "\\r").replace("\n", "\\n")
    status, own, body = _json({"error": line}, status)
    return status, own + list(headers), body


def _chunks(file, size: int = 1 << 16):
    with file:
        while chunk := file.read(size):
            yield chunk


def check_onnx() -> None:
    """Raise ``BackendUnavailable`` (naming the extra) where the ONNX graphs the browser
    runs cannot be built here."""
    onnx_backend.tracer()
