"""Signals that stop a run between two steps, so its state can be saved whole.

``StopSignals`` turns the first SIGINT (Ctrl-C), SIGTERM or SIGHUP inside its block into
a flag the loop reads between steps; a second one raises at once. Outside the block
(and outside the main thread, where Python cannot set handlers) nothing changes.
"""

from __future__ import annotations

import signal
import threading

from multinet.errors import TrainingInterrupted

#: Signals that stop a run cleanly: Ctrl-C; SIGTERM, which SLURM, Kubernetes, systemd and
#: ``timeout`` send before SIGKILL; SIGHUP, a closed terminal or ssh session.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class StopSignals:
    """Within this block, the first of ``STOP_SIGNALS`` sets ``signum`` instead of ending
    the process, so the loop can stop between two steps, with parameters, optimizer state
    and counters consistent, and save them. A second one stops at once, saving nothing
    (``TrainingInterrupted``), as a second Ctrl-C does in most tools."""

    def __init__(self):
        self.signum = 0

    def __enter__(self):
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:
            raise TrainingInterrupted(
                f"stopped at once by a second signal ({signal.Signals(signum).name}); "
                "nothing more was saved", None, signum)
        self.signum = signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False
