"""The ``multinet`` command: the parser, the exit statuses and the one-line errors.

Each command is a module of ``multinet.commands``, imported only when it runs: ``main``
builds the parser of the command named on the command line alone, so ``multinet --help``,
``multinet --version`` and a bare ``multinet`` import none of them (nor NumPy).

Every failure the user can fix (unknown backend, missing package, missing or corrupt
data) ends as one line on stderr and exit status 2, never a traceback. The commands are
a layer over the Python API (``multinet.api``): they parse their options and call it, and
its messages name the flags (``multinet.commands.wording``).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Iterable

from multinet._version import __version__
from multinet.commands import COMMANDS, EXIT_USAGE, load_command
from multinet.commands.wording import WORDING
from multinet.errors import MultinetError, TrainingInterrupted, spelled

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE, like other Unix tools
#: Why writing standard output can fail, besides a closed pipe.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already states it or
    there is none to state (flags, options whose default comes from the preset)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, argparse.SUPPRESS)
                or action.nargs == 0 or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """The parser of ``multinet`` and of each of its commands: shows every default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """One line, as for every other mistake (argparse would print the usage too)."""
        self.exit(EXIT_USAGE, f"multinet: error: {message} (see '{self.prog} --help')\n")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``multinet``.

    Parameters
    ----------
    commands : iterable of str, optional
        The commands whose modules are imported and whose arguments are added. Every
        command is listed (``multinet --help``) and can be named either way; one left
        out has no arguments and nothing to run. None: all of them.

    Returns
    -------
    argparse.ArgumentParser
        Its ``parse_args`` gives ``command`` (the name, or None) and ``run``, the
        command's ``run(args) -> int`` (None for a bare ``multinet``).
    """
    wanted = set(COMMANDS if commands is None else commands)
    parser = _Parser(
        prog="multinet",
        description="One array-API neural network, trained on NumPy, CuPy, JAX, PyTorch, "
                    "MLX or any library that implements the array API standard.")
    parser.add_argument("--version", action="version", version=f"multinet {__version__}")
    parser.set_defaults(run=None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, info in COMMANDS.items():
        if name not in wanted:
            subparsers.add_parser(name, help=info.summary)
            continue
        module = load_command(name)
        sub = subparsers.add_parser(name, help=info.summary, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    parser.command_parsers = subparsers.choices  # for errors that belong to a command
    return parser


def _named_command(argv: list[str]) -> str | None:
    """The command ``argv`` names: its first argument that is not an option (no option
    of ``multinet`` itself takes a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Run ``multinet`` with the arguments ``argv`` (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0, 1 where a command says so (a check that failed), 2 for a
        mistake the user can fix (one line on stderr), 128 + N for signal N (130 for
        Ctrl-C), 141 when the reader of the output went away.
    """
    try:
        code = _run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit handler
        return code
    except BrokenPipeError:
        # Whoever read the output went away (``| head``): stop quietly, as cat and grep
        # do, with their status.
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # Standard output on a full disk (``> /dev/full``) or a failing device: every
        # file multinet writes itself reports its own failure (``OutputError``), so an
        # operating-system error without a file name that gets here is the output's.
        if exc.filename is not None or exc.errno not in OUTPUT_ERRNOS:
            raise
        _stdout_to_devnull()
        print(f"multinet: error: cannot write the output: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE


def _stdout_to_devnull() -> None:
    """Point stdout at devnull, so that Python's own flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (tests)
        pass


def _one_line(message) -> str:
    """The message with its line breaks shown as ``\\n``: a name read from a file (a
    tensor's, a path's) may hold one, and the error must stay one line."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


def _run(argv: list[str]) -> int:
    name = _named_command(argv)
    parser = build_parser([name] if name in COMMANDS else [])
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command's parser, which points to the command's help
        owner = parser.command_parsers.get(args.command, parser)
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.run is None:  # a bare ``multinet``: show what it can do
        parser.print_help()
        return 0
    try:
        with spelled(WORDING):  # the library's messages name these flags, not arguments
            return args.run(args)
    except TrainingInterrupted as exc:  # SIGINT 130, SIGTERM 143, SIGHUP 129
        print(f"multinet: {_one_line(exc)}", file=sys.stderr)
        return 128 + int(exc.signum)
    except MultinetError as exc:
        print(f"multinet: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("multinet: error: out of memory", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("multinet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
