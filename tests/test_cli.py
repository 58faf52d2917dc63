"""The entry module (``multinet/cli.py``) and the table of commands: the version and
the help, every option's default stated, no more imported than the command that runs, and
the exit statuses every command shares: one error line and 2 for a mistake (argparse's
included), 130 for a Ctrl-C even while the command is still starting, a closed pipe
ended quietly, an output that cannot be written said in one line. What each command
does is in test_cli_<command>.py."""

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import helpers
from helpers import DATA, LONG, assert_one_line_error, run_cli


# --- What multinet is: the version, the help, every default -----------------------------

def test_version_and_a_bare_command_show_what_multinet_is():
    from multinet import __version__

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"multinet {__version__}"
    bare = run_cli()
    assert bare.returncode == 0 and "usage: multinet" in bare.stdout and not bare.stderr
    for command in ("train", "evaluate", "predict", "parity", "data", "bench", "backends"):
        assert command in bare.stdout


def test_every_subcommand_is_described_and_every_option_shows_its_default():
    """An option whose value is not chosen by the user must say what it will be: either
    argparse shows its default, or the help text states it (presets decide many)."""
    import argparse

    from multinet.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert sub.description, f"{name} has no description"
        text = sub.format_help()
        for action in sub._actions:
            shown = action.default not in (None, argparse.SUPPRESS) and action.nargs != 0
            if shown and action.option_strings:
                assert "default" in (action.help or "") or f"default: {action.default}" in text, (
                    name, action.option_strings)


#: Options that, left out, mean a thing is not done (no checkpoint written, no scaling run,
#: no peer timed...): they have no default to state. Of ``predict``'s ``--index`` and
#: ``--image`` one is required, and ``--index`` says so.
NOT_DONE_WITHOUT = {("train", "--save"), ("train", "--resume"), ("train", "--metrics"),
                    ("train", "--plots"), ("evaluate", "--against"), ("predict", "--index"),
                    ("predict", "--image"), ("predict", "--save-inputs"),
                    ("export", "--onnx"), ("export", "--onnx-train"), ("bench", "--peer"),
                    ("bench", "--devices"), ("backends", "--probe")}


def test_an_option_without_a_value_of_its_own_says_what_it_defaults_to():
    """argparse shows no default of None: the help must state it (an environment variable,
    the backend's first device, one process...)."""
    import argparse

    from multinet.cli import build_parser

    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    unstated = [(name, action.option_strings[0]) for name, sub in commands.choices.items()
                for action in sub._actions
                if action.option_strings and action.nargs != 0 and action.default is None
                and not action.required and "default" not in (action.help or "")
                and (name, action.option_strings[0]) not in NOT_DONE_WITHOUT]
    assert unstated == []
    index = next(a for a in commands.choices["predict"]._actions if a.dest == "index")
    assert "--image" in index.help


def test_the_parser_of_one_command_reads_it_as_the_whole_parser_does():
    """``main`` builds only the command it runs; its help and its arguments are those of
    the parser with every command."""
    from multinet.cli import build_parser

    whole, one = build_parser(), build_parser(["predict"])
    argv = ["predict", "x.st", "--index", "3", "--json"]
    assert vars(whole.parse_args(argv)) == vars(one.parse_args(argv))
    assert whole.format_help() == one.format_help()


def test_every_command_module_has_a_docstring_its_arguments_and_run():
    from multinet.commands import COMMANDS, load_command

    for name in COMMANDS:
        module = load_command(name)
        assert module.__doc__ and module.DESCRIPTION, name
        assert callable(module.add_arguments) and callable(module.run), name


# --- What the command imports -----------------------------------------------------------

def _modules_after(*argv) -> set[str]:
    """The modules ``python -m multinet ARGV...`` has imported when it exits."""
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            f"sys.argv = ['multinet', *{list(argv)!r}]\n"
            "try:\n"
            "    runpy.run_module('multinet', run_name='__main__', alter_sys=True)\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('MODULES', *sorted(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.rsplit("MODULES", 1)[1].split())


@pytest.mark.parametrize("argv", [["--help"], [], ["--version"], ["trian"]])
def test_what_multinet_is_imports_no_command_and_no_numpy(argv):
    """``multinet --help`` lists every command from the table alone: fast, and without
    an array library."""
    from multinet.commands import COMMANDS

    imported = _modules_after(*argv)
    assert "multinet.cli" in imported
    assert "numpy" not in imported
    assert imported.isdisjoint(info.module for info in COMMANDS.values())


def test_a_command_imports_its_own_module_only():
    from multinet.commands import COMMANDS

    imported = _modules_after("train", "--help")
    modules = {info.module for info in COMMANDS.values()}
    assert imported & modules == {"multinet.commands.train"}


# --- Exit statuses: one line and 2, pipes, Ctrl-C ---------------------------------------

def test_a_mistyped_command_is_one_line_too():
    assert_one_line_error(run_cli("trian"), "invalid choice: 'trian'")


@pytest.mark.parametrize("args", [["train", "--lr", "-1"], ["train", "--iterations", "x"],
                                  ["train", "--dtype", "float16"]])
def test_bad_arguments_exit_2_without_traceback(args):
    result = run_cli(*args)
    assert_one_line_error(result, f"argument {args[1]}", "multinet train --help")


@pytest.mark.parametrize("args, message", [
    (["evaluate", "nowhere.safetensors"], "no such checkpoint"),
    (["train", "--resume", "nowhere.safetensors"], "no such checkpoint"),
    (["predict", "nowhere.safetensors"], "exactly one of --index"),
])
def test_cli_errors_are_one_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_standard_output_that_cannot_be_written_is_one_line():
    """``multinet ... > /dev/full``: a traceback before."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "multinet", "backends", "--json"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    helpers.assert_one_line_error(result, "cannot write the output: No space left on device")


@pytest.mark.parametrize("args", [["data", "where", *DATA[:2]],
                                  ["train", *DATA, "--iterations", "2", "--json"]])
def test_a_closed_pipe_ends_quietly(args):
    """``multinet ... | head -c 10``: the reader goes away before the output is written
    (block-buffered, as Python buffers a pipe unless told otherwise)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen([sys.executable, "-m", "multinet", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert err == ""


def test_a_closed_standard_output_is_one_line_and_no_work():
    """``multinet evaluate ... >&-``: a traceback before (``sys.stdout`` is None). As
    ``cat`` and ``ls`` do: one line on stderr, a non-zero status."""
    result = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m",
                             "multinet", "data", "where", *DATA[:2]],
                            stderr=subprocess.PIPE, text=True, timeout=120)
    assert_one_line_error(result, "cannot write the output: standard output is closed")


def test_a_closed_standard_error_takes_no_file_multinet_opens(tmp_path):
    """``2>&-``: the first file opened would take descriptor 2 and receive what is printed
    there. A checkpoint written by such a run is a checkpoint, and the status is kept."""
    result = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m",
                             "multinet", "train", *DATA, "--iterations", "2", "--save",
                             str(tmp_path / "a.st"), "--progress"],
                            stdout=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0 and "checkpoint:" in result.stdout
    assert run_cli("evaluate", str(tmp_path / "a.st"), *DATA).returncode == 0


@pytest.mark.parametrize("encoding", ["ascii", "latin-1:strict"])
def test_a_name_the_terminal_cannot_show_is_escaped_not_a_traceback(tmp_path, encoding):
    """``PYTHONIOENCODING=ascii multinet ... "ünï"``: a UnicodeEncodeError before."""
    folder = tmp_path / "ünï€"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-m", "multinet", "data", "where", "--data-dir",
                             str(folder)], capture_output=True, timeout=120,
                            env={**os.environ, "PYTHONIOENCODING": encoding})
    out, err = (stream.decode("latin-1") for stream in (result.stdout, result.stderr))
    assert_one_line_error(SimpleNamespace(returncode=result.returncode, stderr=err),
                          "files not found", "\\u20ac")  # the euro sign, escaped
    assert f"{tmp_path}" in out and "\\u20ac" in out


def _plain_string_options():
    """``(command, option, argv)`` for every option (and positional) that takes one string:
    ``argv`` runs the command with that one empty and its other positionals filled."""
    import argparse

    from multinet.cli import build_parser

    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    cases = []
    for name, sub in commands.choices.items():
        positionals = [a for a in sub._actions if not a.option_strings]
        filled = [a.choices[0] if a.choices else "x.st" for a in positionals]
        for action in sub._actions:
            if action.nargs is not None or action.type is not None or action.choices:
                continue
            required = [arg for other in sub._actions if other.required and
                        other.option_strings and other is not action
                        for arg in (other.option_strings[0], "x")]
            if action.option_strings:
                cases.append((name, action.option_strings[0],
                              [name, *filled, *required, action.option_strings[0], ""]))
            else:
                index = positionals.index(action)
                cases.append((name, action.metavar, [name, *filled[:index], "",
                                                     *filled[index + 1:], *required]))
    return cases


@pytest.mark.parametrize("command, option, argv", _plain_string_options())
def test_an_empty_value_is_refused_by_every_option_alike(command, option, argv, capsys):
    """``--data-dir ''`` and ``--backend ''`` meant "not given" while ``--save ''`` was
    refused: every option refuses an explicit empty value, naming itself."""
    from helpers import one_line_error
    from multinet.cli import main

    line = one_line_error(main(argv), capsys.readouterr(), f"argument {option}: an empty")
    assert ("name a file" if option.isupper() else f"leave {option} out") in line


def test_every_command_has_options_that_take_a_string():
    """The list the test above runs on is not empty by mistake, and no option defaults to
    an empty value (which would then be refused as if given)."""
    from multinet.cli import build_parser

    options = {(command, option) for command, option, _ in _plain_string_options()}
    assert {("train", "--save"), ("train", "--backend"), ("evaluate", "CKPT"),
            ("data", "--data-dir"), ("train", "--mirror")} <= options
    parser = build_parser()
    assert all(action.default != "" for sub in parser.command_parsers.values()
               for action in sub._actions)


@pytest.mark.parametrize("value", ["-1e-3", "-1E+2", "-.5e-1", "-1.", "-inf", "-Infinity",
                                   "-nan"])
def test_a_negative_number_in_any_notation_reaches_the_range_check(value):
    """``--lr -1e-3`` was read as an option, so "expected one argument"."""
    result = run_cli("train", "--lr", value)
    assert_one_line_error(result, f"argument --lr: must be a finite number > 0, got {value}")


def console_script(folder: Path) -> Path:
    """The ``multinet`` script as an installer writes it from pyproject.toml's entry point
    (the one installed here may predate a change to it)."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    module, function = re.search(r'^multinet = "([\w.]+):(\w+)"$', text, re.M).groups()
    script = folder / "multinet-script.py"
    script.write_text(f"import sys\nfrom {module} import {function}\n"
                      f"if __name__ == '__main__':\n    sys.exit({function}())\n")
    return script


def ctrl_c(program: list[str], cwd: Path, imported: str, delay: float = 0.0):
    """Run ``python PROGRAM`` on a long training run and send SIGINT ``delay`` seconds after
    Python reports ``imported`` (``PYTHONPROFILEIMPORTTIME``: each import as it ends).
    Returns the exit status and stderr without the import lines."""
    process = subprocess.Popen([sys.executable, *program, *LONG], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    watchdog = threading.Timer(120, process.kill)  # the import never reported: fail, not hang
    watchdog.start()
    signal_timer = threading.Timer(delay, process.send_signal, (signal.SIGINT,))
    try:
        for line in process.stderr:
            if line.startswith("import time:") and line.split("|")[-1].strip() == imported:
                signal_timer.start()  # and read on, so that the imports never wait for us
                break
        else:
            raise AssertionError(f"{imported} was never imported")
        err = process.stderr.read()
        process.wait()
    finally:
        watchdog.cancel()
        signal_timer.cancel()
    return process.returncode, "".join(line for line in err.splitlines(keepends=True)
                                       if not line.startswith("import time:"))


@pytest.mark.parametrize("entry", ["-m", "script"])
@pytest.mark.parametrize("imported", ["numpy", "multinet.registry", "multinet.cli"])
def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130(tmp_path, entry, imported):
    """The command's imports take tenths of a second: a Ctrl-C then is one line and 130,
    as later in the run, for ``python -m multinet`` and the installed script alike. The
    signal is sent when ``imported`` is, to land in the imports after it (or, on a slow
    reader, in the run)."""
    program = ["-m", "multinet"] if entry == "-m" else [str(console_script(tmp_path))]
    status, err = ctrl_c(program, tmp_path, imported)
    assert "Traceback" not in err, err
    assert status == 130, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("multinet: interrupted"), lines


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5])
def test_ctrl_c_at_any_moment_of_the_start_is_exit_130_not_death_by_sigint(tmp_path, delay):
    """From the moment multinet's code runs (``multinet.cli`` imported) through NumPy's
    import and the command's, to the training run: Python ended some of these by SIGINT
    (status -2) after the one line, since a ``KeyboardInterrupt`` that left code run from
    C is "unhandled" for CPython however it was caught afterwards."""
    status, err = ctrl_c(["-m", "multinet"], tmp_path, "multinet.cli", delay)
    assert "Traceback" not in err, err
    assert status == 130, (status, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("multinet: interrupted"), lines
