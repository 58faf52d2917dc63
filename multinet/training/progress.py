"""How a run shows its progress while it trains: a tqdm bar (a widget in Jupyter, a bar
redrawn in place on a terminal), or plain lines for a log: ``progress=True`` picks the
one that suits where stderr goes, for ``multinet train`` and ``multinet.fit`` alike.

A bar's frames make a log (CI, a batch job, ``multinet train 2> run.log``) unreadable,
and a log without them looks hung for the minutes a run takes; there ``Lines`` writes
one line to stderr every ``LINE_SECONDS`` seconds instead::

    multinet: train [numpy]: step 120/500 (24%), 14 s elapsed, about 45 s left; at step 110: loss 0.6103, dev accuracy 0.8120
"""

from __future__ import annotations

import sys
import time
import warnings

with warnings.catch_warnings():
    # A Jupyter kernel without ipywidgets: tqdm.auto warns and falls back to a text bar,
    # whose every frame becomes an output of its own; progress_display writes Lines there.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from tqdm.auto import tqdm

#: Seconds between two progress lines, and before the first: a run shorter than this
#: writes none.
LINE_SECONDS = 10.0

#: ``train(progress=LINES)``: plain lines instead of a bar.
LINES = "lines"

#: ``train(progress=BAR)``: the bar even where stderr is not a terminal (``--progress``).
BAR = "bar"


def progress_display(progress, *, total: int, initial: int, desc: str, batches: int):
    """What shows a run's progress, the same from the command line and from Python.

    Parameters
    ----------
    progress : bool or str
        True: a tqdm bar (``tqdm.auto``) where it redraws in place (a terminal, a Jupyter
        widget), else ``Lines`` (a log, a pipe, a Jupyter kernel without ipywidgets,
        where each frame would be an output of its own); ``LINES``: ``Lines``; ``BAR``:
        the bar wherever stderr goes (``multinet train --progress``); False: nothing.
    total, initial : int
        The run's last step and the step it starts from.
    desc : str
        What the bar or each line begins with.
    batches : int
        Steps per epoch.

    Returns
    -------
    tqdm or Lines
        Each takes ``update(steps)``, ``set_postfix(loss=, dev=)`` at a log point, and
        ``close()``.
    """
    chosen = progress if isinstance(progress, str) else None
    if chosen == LINES or (progress and chosen != BAR and not _redraws_in_place()):
        return Lines(total=total, initial=initial, desc=desc, batches=batches)
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not progress,
                leave=False)


def _redraws_in_place() -> bool:
    """Whether a bar's frames replace each other: a Jupyter widget, or a terminal."""
    if "ipykernel.zmqshell" in sys.modules:
        # In a kernel, tqdm.auto is the widget bar unless ipywidgets is missing.
        return any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr (pythonw), or a closed one
        return False


class Lines:
    """Progress as a plain line on stderr every ``LINE_SECONDS`` seconds: the step, the
    share done, the time this session and the time left at its pace, and the loss and dev
    accuracy of the last log point."""

    def __init__(self, *, total: int, initial: int, desc: str, batches: int):
        self.total, self.initial, self.n = total, initial, initial
        self.desc, self.batches = desc, batches
        self.start = self.last = time.perf_counter()
        self.logged = ""
        self.writing = True

    def update(self, steps: int) -> None:
        self.n += steps
        now = time.perf_counter()
        if self.writing and now - self.last >= LINE_SECONDS:
            self.last = now
            try:
                print(self.line(now - self.start), file=sys.stderr, flush=True)
            except OSError:  # a log that went away (a closed pipe, a full disk): the run
                self.writing = False  # goes on, and its errors are about its own files

    def set_postfix(self, *, loss: str, dev: str) -> None:
        self.logged = f"; at step {self.n}: loss {loss}, dev accuracy {dev}"

    def line(self, elapsed: float) -> str:
        """The line after ``elapsed`` seconds of this session."""
        epochs = -(-self.total // self.batches)
        epoch = (f"epoch {min(self.n // self.batches + 1, epochs)}/{epochs}, "
                 if self.batches > 1 else "")
        percent = 100 * self.n // self.total if self.total else 100
        done = self.n - self.initial
        rest = elapsed / done * (self.total - self.n) if done else 0
        left = f", about {duration(rest)} left" if rest >= 1 else ""
        return (f"multinet: {self.desc}: {epoch}step {self.n}/{self.total} ({percent}%), "
                f"{duration(elapsed)} elapsed{left}{self.logged}")

    def close(self) -> None:
        """Nothing to clear: each line is whole."""


def duration(seconds: float) -> str:
    """``"14 s"``, ``"2 min 05 s"``, ``"1 h 02 min"``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
