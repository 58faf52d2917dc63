"""Any library by its import name (``backends/generic.py``), named ``module://NAME``:
``train`` and ``parity`` through the generic path; one line for a module that is no
array-API namespace, one that does not import and one that exits on import; and a lazy
library (Dask) whose results are materialised, so a run's cost grows with its steps."""

import json

import numpy as np
import pytest

from helpers import assert_one_line_error, data_args, run_cli
from multinet import network
from multinet.backends import generic
from multinet.initializers import init_params


def test_train_through_the_generic_path(mnist):
    result = run_cli("train", "--backend", "module://array_api_strict", "--iterations", "3",
                     "--hidden", "8", "--json", "--no-progress", *data_args(mnist))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["backend"] == "module://array_api_strict" and summary["iterations"] == 3


def test_parity_through_the_generic_path(mnist):
    result = run_cli("parity", "--backend", "module://array_api_strict", "--samples", "256",
                     "--steps", "10", "--json", *data_args(mnist))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["backend"], r["dtype"], r["verdict"]) for r in rows] == [
        ("module://array_api_strict", "float32", "pass"),
        ("module://array_api_strict", "float64", "pass")]


def test_a_module_that_is_no_namespace_is_one_line(mnist):
    assert_one_line_error(run_cli("train", "--backend", "module://json", *data_args(mnist)),
                          "'json' is no array-API namespace")


def test_a_module_that_does_not_import_is_one_line(mnist):
    assert_one_line_error(
        run_cli("train", "--backend", "module://no_such_library", *data_args(mnist)),
        "module 'no_such_library' could not be imported")


def test_a_module_that_exits_on_import_is_one_line(mnist, tmp_path):
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(3)\n")
    result = run_cli("train", "--backend", "module://exits_on_import", *data_args(mnist),
                     env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(result, "'exits_on_import' could not be imported: SystemExit: 3")


def test_an_eager_library_has_nothing_to_materialise():
    assert generic.load("array_api_strict").materialize is None


def test_a_lazy_library_starts_every_step_from_values_not_from_the_history():
    """Dask offers ``persist``: the compiled step's results are computed, so after 20
    steps the parameters' task graph is as small as after one (without it, each step's
    graph holds every step before it, and the run's cost grows with their square)."""
    pytest.importorskip("dask.array")
    backend = generic.load("dask.array")
    assert backend.materialize is not None
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.random((64, 30)), "float32")
    y = backend.asarray(rng.integers(0, 10, 64), "int32")
    params = init_params((30, 8, 10), seed=0, backend=backend, dtype="float32")
    step = backend.compile(network.train_step)
    sizes = []
    for _ in range(20):
        params, loss, _ = step(params, x, y, 0.1)
        sizes.append(len(params["W1"].__dask_graph__()))
    assert sizes[-1] == sizes[0], sizes
    assert np.isfinite(float(backend.to_numpy(loss)))


def test_train_on_dask(mnist):
    pytest.importorskip("dask.array")
    result = run_cli("train", "--backend", "module://dask.array", "--iterations", "3",
                     "--hidden", "8", "--json", "--no-progress", *data_args(mnist))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "module://dask.array"
