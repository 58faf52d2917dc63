"""The ``multinet`` command: the parser, the exit statuses and the one-line errors.

Each command is a module of ``multinet.commands``, imported only when it runs: ``main``
builds the parser of the command named on the command line alone, so ``multinet --help``,
``multinet --version`` and a bare ``multinet`` import none of them (nor NumPy).

Every failure the user can fix (unknown backend, missing package, missing or corrupt
data, an empty value, a closed standard output) ends as one line on stderr and exit
status 2, never a traceback, and nothing printed fails on the terminal's encoding (what
it cannot show is escaped: ``\\xfc``). The commands are a layer over the Python API
(``multinet.api``): they parse their options and call it, and its messages name the
flags (``multinet.commands.wording``).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
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
#: What is a negative number, not an option: argparse's own pattern misses ``-1e-3``,
#: ``-1.`` and ``-inf``, so ``--lr -1e-3`` read as a missing value, not as out of range.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                             re.IGNORECASE)
#: Metavars of options that take a path: an empty one is "an empty path" (``multinet.files``).
PATH_METAVARS = ("PATH", "DIR", "CKPT", "OUT.onnx")


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
        self._negative_number_matcher = NEGATIVE_NUMBER

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


def import_command(argv: list[str]) -> None:
    """Import the modules of the command ``argv`` names (NumPy and the rest), as ``main``
    would: ``multinet.__main__`` does it first, with Ctrl-C held back until it is done.

    Parameters
    ----------
    argv : list of str
        The arguments, as ``main`` takes them.
    """
    name = _named_command(argv)
    if name in COMMANDS:
        load_command(name)


def main(argv: list[str] | None = None) -> int:
    """Run ``multinet`` with the arguments ``argv`` (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0, 1 where a command says so (a check that failed), 2 for a
        mistake the user can fix (one line on stderr), 128 + N for signal N (130 for
        Ctrl-C), 141 when the reader of the output went away.
    """
    if not _standard_streams():
        print("multinet: error: cannot write the output: standard output is closed",
              file=sys.stderr)
        return EXIT_USAGE
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


def _standard_streams() -> bool:
    """Make printing safe; returns whether standard output is open.

    A standard descriptor left closed (``>&-``) is given ``/dev/null``, so that no file
    multinet opens takes its number and receives what a library prints there; stderr
    then writes there too, not into stdout. Where stdout or stderr would raise on what
    their encoding cannot show (``PYTHONIOENCODING=ascii`` and a file named ``ünï.png``),
    they write it as an escape instead.
    """
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None or 2 in closed:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 -- for the process
    for stream in (sys.stdout, sys.stderr):  # surrogateescape (a C locale) stays as it is
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    return sys.stdout is not None and 1 not in closed


def _given_empty(parser: argparse.ArgumentParser, args) -> str | None:
    """Why an option given an empty value (``--data-dir ''``) is refused, or None.

    Every option that takes one string refuses it alike: some read it as "not given",
    others as the current folder. ``predict --image`` (several pictures, each reported)
    is the one exception, and reports it itself. No such option defaults to "".
    """
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.nargs is None and action.type is None and (
                value == "" or (isinstance(value, list) and "" in value)):
            kind = "path" if action.metavar in PATH_METAVARS else "value"
            name = (action.option_strings or [action.metavar])[0]
            advice = f"give it a value or leave {name} out" if action.option_strings else "name a file"
            return f"argument {name}: an empty {kind}; {advice}"
    return None


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
    owner = parser.command_parsers[args.command]
    empty = _given_empty(owner, args)
    if empty is not None:
        print(f"multinet: error: {empty} (see '{owner.prog} --help')", file=sys.stderr)
        return EXIT_USAGE
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
