"""``python -m multinet`` and the ``multinet`` script (pyproject.toml's entry point).

The command's modules take a few tenths of a second to import (NumPy, tqdm, the
registry's entry points). They are imported inside ``main``, so that a Ctrl-C in that time
ends as it does later in a run (one line, exit status 130) rather than as a traceback;
this module and ``multinet/__init__.py`` import next to nothing before that. Left
uncovered: Python's own start (``site``, ``.pth`` files) and about a millisecond after it.
"""

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from multinet.cli import main as run

        return run(argv)  # which reports a Ctrl-C itself, once it is inside
    except KeyboardInterrupt:  # as multinet.cli does (EXIT_INTERRUPTED)
        print("multinet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
