"""``python -m multinet`` and the ``multinet`` script (pyproject.toml's entry point).

The command's modules take a few tenths of a second to import (NumPy, tqdm, the
registry's entry points). They are imported inside ``main`` with Ctrl-C held back: a
``KeyboardInterrupt`` raised inside an import can come out as something else (NumPy's C
start turns it into "Importing the numpy C-extensions failed"), or as "Exception ignored"
lines. A Ctrl-C in that time takes effect once the imports are done, and ends as it does
later in a run: one line, exit status 130. A second one takes effect at once. This module
and ``multinet/__init__.py`` import next to nothing before that. Left uncovered: Python's
own start (``site``, ``.pth`` files) and about a millisecond after it.

An interrupted command ends the process itself, with ``os._exit(130)`` once the exit
handlers have run and the output is flushed. Returning 130 is not enough: when a
``KeyboardInterrupt`` left code that C ran through ``PyRun_*`` (an array library's own
import, later in the run), CPython remembers it as unhandled, however it was caught
afterwards, and after the one line ends the process by SIGINT at exit.
"""

import atexit
import os
import sys

EXIT_INTERRUPTED = 130  # as multinet.cli.EXIT_INTERRUPTED, which is not imported yet


def main(argv: list[str] | None = None) -> int:
    """Run the ``multinet`` command (call it from the main thread).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (see ``multinet.cli.main``). An interrupted command (130) does
        not return: it ends the process with that status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        import signal

        held = []

        def hold(signum, frame):
            if held:  # the second: at once
                raise KeyboardInterrupt
            held.append(signum)

        previous = signal.getsignal(signal.SIGINT)
        holding = previous is signal.default_int_handler  # not when ignored (``nohup``)
        if holding:
            signal.signal(signal.SIGINT, hold)
        try:
            from multinet.cli import import_command
            from multinet.cli import main as run

            import_command(argv)
        finally:
            if holding:
                signal.signal(signal.SIGINT, previous)
        if held:
            raise KeyboardInterrupt
        code = run(argv)  # which reports a Ctrl-C itself, once it is inside
    except KeyboardInterrupt:
        print("multinet: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        _end_interrupted()
    return code


def _end_interrupted() -> None:
    """End the process with status 130, after what Python's own exit would run and
    write; a second Ctrl-C meanwhile only cuts that short."""
    try:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # noqa: BLE001 -- the status is decided: nothing may change it
        pass
    os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
