"""Any library by its import name (``backends/generic.py``): ``train`` and ``parity``
through the generic path, and one line for a module that is no array-API namespace, a
name that does not import, and a module that exits on import."""

import json

from helpers import assert_one_line_error, data_args, run_cli


def test_train_through_the_generic_path(mnist):
    result = run_cli("train", "--backend", "array_api_strict", "--iterations", "3",
                     "--hidden", "8", "--json", "--no-progress", *data_args(mnist))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["backend"] == "array_api_strict" and summary["iterations"] == 3


def test_parity_through_the_generic_path(mnist):
    result = run_cli("parity", "--backend", "array_api_strict", "--samples", "256",
                     "--steps", "10", "--json", *data_args(mnist))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["backend"], r["dtype"], r["verdict"]) for r in rows] == [
        ("array_api_strict", "float32", "pass"), ("array_api_strict", "float64", "pass")]


def test_a_module_that_is_no_namespace_is_one_line(mnist):
    assert_one_line_error(run_cli("train", "--backend", "json", *data_args(mnist)),
                          "'json' is no array-API namespace")


def test_a_name_that_does_not_import_lists_the_registered_backends(mnist):
    assert_one_line_error(run_cli("train", "--backend", "no_such_library", *data_args(mnist)),
                          "unknown backend 'no_such_library'", "numpy", "torch", "mlx",
                          "import name")


def test_a_module_that_exits_on_import_is_one_line(mnist, tmp_path):
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(3)\n")
    result = run_cli("train", "--backend", "exits_on_import", *data_args(mnist),
                     env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(result, "'exits_on_import' could not be imported: SystemExit: 3")
