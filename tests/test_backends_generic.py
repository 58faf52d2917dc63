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
from multinet.errors import BackendUnavailable
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


OLD_STRICT = {"ARRAY_API_STRICT_API_VERSION": "2022.12"}


def test_an_older_standard_is_refused_before_anything_newer_is_called(mnist):
    refusal = "implements the array API standard 2022.12; multinet's network needs 2023.12"
    assert_one_line_error(run_cli("train", "--backend", "module://array_api_strict",
                                  "--iterations", "2", *data_args(mnist), env=OLD_STRICT),
                          refusal)
    assert_one_line_error(run_cli("parity", "--backend", "module://array_api_strict",
                                  *data_args(mnist), env=OLD_STRICT), refusal)
    probed = run_cli("backends", "--probe", "array_api_strict", env=OLD_STRICT)
    assert probed.returncode == 1 and "Traceback" not in probed.stderr, probed.stderr
    assert refusal in probed.stdout.splitlines()[1]


LIBRARY = """
import sys
import numpy
__array_api_version__ = "2024.12"
float32 = numpy.float32
class Array:
    def __array_namespace__(self, api_version=None):
        return sys.modules[__name__]
{body}
"""


@pytest.mark.parametrize(("body", "reason"), [
    ("def asarray(x, **kw): raise AssertionError()",
     "asarray() of a NumPy array failed: AssertionError with no message"),
    ("def asarray(x, **kw): return Array()\n"
     "def __array_namespace_info__(): raise RuntimeError('no GPU')",
     "failed while its backend was built: RuntimeError: no GPU"),
    ("def asarray(x, **kw): return Array()\ndef __array_namespace_info__(): raise KeyError()",
     "failed while its backend was built: KeyError with no message"),
])
def test_a_library_failing_while_the_backend_is_built_gives_a_reason(tmp_path, monkeypatch,
                                                                      body, reason):
    name = f"failing_library_{abs(hash(body))}"  # one module per case: imports are cached
    (tmp_path / f"{name}.py").write_text(LIBRARY.format(body=body))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailable, match=f"module '{name}'") as raised:
        generic.load(name)
    assert reason in str(raised.value)


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
