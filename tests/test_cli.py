"""The command line: JSON output, and one-line errors with exit status 2."""

import json

import pytest

from helpers import assert_one_line_error, data_args, run_cli
from multinet.cli import main
from multinet.errors import BackendUnavailable
from multinet.registry import get_backend


def test_train_json_summary(mnist, capsys):
    code = main(["train", *data_args(mnist), "--iterations", "3",
                 "--hidden", "8", "--json", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("backend", "device", "dtype", "iterations", "train_accuracy", "dev_accuracy",
                "test_accuracy", "seconds", "samples_per_second"):
        assert key in summary
    assert summary["iterations"] == 3 and summary["sizes"] == [784, 8, 10]


def test_train_text_summary_and_backend_from_environment(mnist, capsys, monkeypatch):
    monkeypatch.setenv("MULTINET_BACKEND", "strict")
    assert main(["train", *data_args(mnist), "--iterations", "2",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "backend strict" in out and "accuracy: train" in out and "samples/s" in out


def test_unavailable_backend_is_one_line_and_exit_2():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed here; this checks the no-CuPy message")
    assert_one_line_error(run_cli("train", "--backend", "cupy"), "cupy", "pip install")


def test_unknown_backend_is_one_line_listing_known_names():
    assert_one_line_error(run_cli("train", "--backend", "tensorflow_nonexistent"),
                          "unknown backend 'tensorflow_nonexistent'", "numpy", "torch")


def test_missing_data_says_where_it_looked(tmp_path):
    result = run_cli("train", "--data-dir", str(tmp_path), env={"MULTINET_DATA": ""})
    assert_one_line_error(result, str(tmp_path), "--data-dir")


@pytest.mark.parametrize("args", [["train", "--lr", "-1"], ["train", "--iterations", "x"],
                                  ["train", "--dtype", "float16"]])
def test_bad_arguments_exit_2_without_traceback(args):
    result = run_cli(*args)
    assert_one_line_error(result, f"argument {args[1]}", "multinet train --help")


def test_a_mistyped_command_is_one_line_too():
    assert_one_line_error(run_cli("trian"), "invalid choice: 'trian'")


def test_backends_lists_every_backend(capsys):
    assert main(["backends", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    assert {"numpy", "jax", "cupy", "strict"} <= names
    assert main(["backends"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in names)


def test_parity_table_passes_here(mnist, capsys):
    code = main(["parity", *data_args(mnist), "--samples", "256",
                 "--steps", "10", "--backend", "numpy", "--backend", "strict"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 steps" in out and out.count(" pass") == 4


def test_parity_json_and_skipped_backends(mnist, capsys):
    assert main(["parity", *data_args(mnist), "--samples", "128", "--steps",
                 "3", "--dtype", "float32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["backend"]: row for row in report["rows"]}
    assert rows["numpy"]["verdict"] == "pass"
    assert set(rows["numpy"]["errors"]) >= {"forward", "grads", "train", "predictions"}
    for row in rows.values():
        assert row["verdict"] in ("pass", "skipped")
        assert row["verdict"] != "skipped" or row["reason"]


# math: importable, but not an array library; cupy: registered, but not installed (or no GPU).
@pytest.mark.parametrize("name", ["math", "cupy"])
def test_parity_of_a_named_backend_that_cannot_run_is_one_line_and_exit_2(mnist, name):
    """As for train, with train's reason; unasked, such a backend is a skipped row (the
    test above)."""
    try:
        get_backend(name)
    except BackendUnavailable as exc:
        reason = str(exc)
    else:
        pytest.skip(f"{name} runs here; this checks a backend that cannot")
    result = run_cli("parity", *data_args(mnist), "--backend", "numpy", "--backend", name,
                     "--samples", "64", "--steps", "1")
    assert_one_line_error(result, reason)
    assert not result.stdout


def test_parity_exits_1_when_a_backend_is_out_of_tolerance(mnist, tmp_path):
    """A plugin backend that computes in float16 is reported as failing, exit status 1."""
    (tmp_path / "half_backend.py").write_text(
        "import dataclasses\nimport numpy as np\nfrom multinet.registry import get_backend\n"
        "def asarray(a, dtype=None):\n"
        "    a = np.asarray(a, dtype=dtype)\n"
        "    return a.astype(np.float16).astype(a.dtype) if a.dtype.kind == 'f' else a\n"
        "def load():\n"
        "    return dataclasses.replace(get_backend('numpy'), name='half', asarray=asarray)\n")
    dist = tmp_path / "half_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: half-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[multinet.backends]\nhalf = half_backend:load\n")
    result = run_cli("parity", *data_args(mnist), "--backend", "half",
                     "--samples", "128", "--steps", "2", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert "fail" in result.stdout


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


def test_every_command_module_has_a_docstring_its_arguments_and_run():
    from multinet.commands import COMMANDS, load_command

    for name in COMMANDS:
        module = load_command(name)
        assert module.__doc__ and module.DESCRIPTION, name
        assert callable(module.add_arguments) and callable(module.run), name


def test_the_parser_of_one_command_reads_it_as_the_whole_parser_does():
    """``main`` builds only the command it runs; its help and its arguments are those of
    the parser with every command."""
    from multinet.cli import build_parser

    whole, one = build_parser(), build_parser(["predict"])
    argv = ["predict", "x.st", "--index", "3", "--json"]
    assert vars(whole.parse_args(argv)) == vars(one.parse_args(argv))
    assert whole.format_help() == one.format_help()
