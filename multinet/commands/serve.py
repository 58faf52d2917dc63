"""``multinet serve``: a local web page to draw a digit on, answered by the checkpoint on
every backend asked for (``multinet.web``), until Ctrl-C or SIGTERM.

Every option is checked and the onnxruntime-web folder looked at, then the port taken
(so that a port in use is said at once), then the checkpoint loaded on each backend;
then one line on stdout says where the page is, and one line on stderr that it stopped.
Ctrl-C or SIGTERM while it starts stops it there (exit 130); while it serves, the
answers under way are finished and sent first (exit 0)."""

from __future__ import annotations

import contextlib
import sys

from multinet.checks import Range
from multinet.commands import COMMANDS, inputs, options
from multinet.commands.wording import WORDING
from multinet.errors import spelled
from multinet.web import browser, running, server
from multinet.web.answers import Answers

DESCRIPTION = (f"{COMMANDS['serve'].summary}. The page shows the 28x28 the network saw, "
               "its ten probabilities, and every backend's answer side by side; with "
               "--onnxruntime it can also run the network, and train one, in the browser "
               "(on a sample of the dataset the data options find). Ctrl-C or SIGTERM "
               "stops it.")

#: Ports, and the largest upload one may allow (megabytes of 10^6 bytes).
PORT = Range(0, 65535, high_included=True, integer=True)
MAX_UPLOAD = Range(0.1, 25, high_included=True)
MEGABYTE = 1_000_000


def add_arguments(parser) -> None:
    """``CKPT`` (optional), ``--host``, ``--port``, ``--backend``, ``--onnxruntime``,
    ``--max-upload`` and the data options of the training sample."""
    options.add_checkpoint_argument(parser, optional=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; "
                             "any other makes the page reachable from the network)")
    parser.add_argument("--port", type=options.in_range(PORT), default=8000,
                        help="port to listen on (default: 8000; 0: a free one, which the "
                             "line printed names)")
    parser.add_argument("--backend", nargs="+", action="extend", metavar="NAME",
                        help="backends to answer with, in this order (several names, or "
                             "the option repeated; default: every installed backend that "
                             "can run here, $MULTINET_BACKEND or numpy first)")
    parser.add_argument("--onnxruntime", metavar="DIR",
                        help="onnxruntime-web's folder (node_modules/onnxruntime-web, or "
                             "its dist) to run and train networks in the browser (default: "
                             "none; the page then answers through the server only)")
    parser.add_argument("--max-upload", type=options.in_range(MAX_UPLOAD), default=10,
                        metavar="MB", help="largest picture accepted, in megabytes "
                                           "(default: 10, at most 25); larger ones are "
                                           "answered 413")
    # The training sample is read from files on disk only: a click in the page never
    # starts a download (multinet data fetch does, when asked).
    options.add_data_options(parser, sources=False, download=False)


def run(args) -> int:
    """Serve until stopped; 0 once stopped by Ctrl-C or SIGTERM (130 if stopped while
    starting)."""
    with running.Stop() as stop, contextlib.ExitStack() as cleanup:
        running.require_waitress()
        ort = None
        if args.onnxruntime is not None:
            ort = browser.ort_folder(args.onnxruntime)
            server.check_onnx()
            stop.check()
        # Taken before the backends load, so that a port in use or a bad --host is said
        # at once; connections wait in the socket's queue until the server runs.
        sock = cleanup.enter_context(running.listen(args.host, args.port))
        answers = Answers.open(args.checkpoint, args.backend, between=stop.check)
        stop.check()
        _serve(args, stop, sock, ort, answers)
    print("multinet: stopped", file=sys.stderr)
    return 0


def _serve(args, stop, sock, ort, answers) -> None:
    if answers.unavailable:  # the page names each with its reason; here one line
        print(f"multinet: answering without {', '.join(answers.unavailable)}, which cannot "
              "run here (the page and multinet backends say why)", file=sys.stderr)
    local = running.is_loopback(sock)
    site = server.Site(answers, max_upload=int(args.max_upload * MEGABYTE), ort=ort,
                       dataset=lambda: inputs.load_data(args),
                       hosts=running.loopback_hosts(sock) if local else None,
                       within=lambda: spelled(WORDING))
    waitress = running.create(site, sock)

    def ready():
        if not local:
            port = sock.getsockname()[1]
            print(f"multinet: warning: listening on {args.host}: the page is reachable "
                  "from the network, by anyone who can reach this machine (here: "
                  f"http://localhost:{port}/)", file=sys.stderr)
        print(f"serving on {running.url(sock)}", flush=True)

    running.serve(waitress, stop, ready)
