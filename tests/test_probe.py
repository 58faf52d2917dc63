"""``multinet backends --probe``: a library's gaps, function by function, then its parity."""

import dataclasses
import json
import os
import textwrap
from pathlib import Path

import numpy as np

from helpers import assert_one_line_error, mnist_slice, run_cli
from multinet import probe
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import train
from multinet.training.state import non_finite
from shims import Shim

TESTS = Path(__file__).resolve().parent

#: A deliberately incomplete namespace: array-api-strict without argmax and take, and
#: with a mean that forgets to divide by the count.
INCOMPLETE = textwrap.dedent('''
    import sys

    import array_api_strict
    from shims import Shim

    sys.modules[__name__] = Shim(unknown="known", missing=("argmax", "take"),
                                 replace={"mean": array_api_strict.sum}, name=__name__)
''')


def probe_cli(tmp_path, module, source, *args):
    (tmp_path / f"{module}.py").write_text(source)
    path = os.pathsep.join([str(tmp_path), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return run_cli("backends", "--probe", module, *args, env={"PYTHONPATH": path})


def test_an_incomplete_namespace_is_reported_function_by_function(tmp_path):
    result = probe_cli(tmp_path, "tinyxp", INCOMPLETE)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "missing   argmax" in lines and "missing   take" in lines
    wrong = [line for line in lines if line.startswith("wrong")]
    assert len(wrong) == 1 and wrong[0].startswith("wrong     mean(x): got 4.25"), lines
    parity = [line for line in lines if line.startswith("parity")]
    assert len(parity) == 2 and all(": fail: " in line for line in parity), parity
    assert "Traceback" not in result.stdout + result.stderr


def test_the_probe_as_json(tmp_path):
    result = probe_cli(tmp_path, "tinyxp", INCOMPLETE, "--json")
    report = json.loads(result.stdout)
    assert report["namespace"] == "tinyxp" and not report["ok"]
    assert [line.split()[:2] for line in report["findings"]] == [
        ["missing", "argmax"], ["missing", "take"], ["wrong", "mean(x):"]]


def test_a_module_that_is_no_namespace_says_so_in_one_line(tmp_path):
    result = probe_cli(tmp_path, "notxp", "def asarray(x):\n    return x\n")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert sum("no array-API namespace" in line for line in lines) == 1
    assert "missing   argmax" in lines


def test_a_compliant_library_passes_every_check_and_parity():
    report = probe.probe("array_api_strict")
    assert report["ok"] and report["findings"] == []
    assert [(r["dtype"], r["verdict"]) for r in report["parity"]] == [
        ("float32", "pass"), ("float64", "pass")]


def test_every_namespace_call_of_a_training_run_is_probed(mnist):
    """Record what training really calls (full batch, minibatch with each optimizer,
    the divergence check); the probe must check every one of those functions."""
    called = set()
    shim = Shim(unknown="known", record=called)
    strict = get_backend("strict")
    backend = dataclasses.replace(
        strict, name="shim", xp=shim, device=None, fuse_chunk=None,
        asarray=lambda array, dtype=None: shim.asarray_from_numpy(array, dtype),
        to_numpy=lambda array: array.to_numpy() if hasattr(array, "to_numpy")
        else np.asarray(array))
    data = mnist_slice(mnist, 300, 50)
    runs = [TrainConfig(epochs=2, dev_size=50, log_every=1),
            *(TrainConfig.from_preset("mlp", hidden=(8,), epochs=1, batch_size=50,
                                      optimizer=name, dev_size=50)
              for name in ("sgd", "momentum", "adam"))]
    for config in runs:
        result = train(config, backend, data, progress=False)
        assert non_finite(backend, result.state) == []
    probed = set(probe.ATTRIBUTES) | {name for c in probe.CHECKS for name in c.needs}
    assert called, "the recording namespace was not used"
    assert called - probed == set(), f"calls no probe check covers: {called - probed}"


def test_a_module_that_exits_on_import_is_reported_not_obeyed(tmp_path):
    """A script that calls sys.exit() when imported must not end multinet silently."""
    result = probe_cli(tmp_path, "exits_on_import", "raise SystemExit(3)\n")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    assert "could not be imported: SystemExit: 3" in result.stdout


def test_an_empty_module_name_is_one_line():
    assert_one_line_error(run_cli("backends", "--probe", ""), "--probe", "an empty value")
