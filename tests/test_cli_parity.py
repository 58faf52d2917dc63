"""``multinet parity`` as a user runs it: the table and its JSON, a backend named that
cannot run is one line, and exit status 1 when a backend is out of tolerance. (The
comparison itself is in test_parity.py.)"""

import dataclasses
import json

import pytest

from helpers import assert_one_line_error, data_args, run_cli
from multinet.cli import main
from multinet.errors import BackendUnavailable
from multinet.registry import get_backend


def test_parity_table_passes_here(mnist, capsys):
    code = main(["parity", *data_args(mnist), "--samples", "256",
                 "--steps", "10", "--backend", "numpy", "--backend", "strict"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 steps" in out and [line.endswith("  pass") for line in out.splitlines()
                                  if line.startswith(("numpy ", "strict "))] == [True] * 4
    assert max(map(len, out.splitlines())) <= 100, out


def test_parity_of_the_cnn_preset_checks_its_layers_with_the_length_aware_tolerance(
        mnist, capsys):
    from multinet.training.config import TrainConfig

    layers = ", ".join(map(str, TrainConfig.from_preset("cnn").network_layers()))
    code = main(["parity", "--preset", "cnn", *data_args(mnist), "--samples", "8",
                 "--steps", "1", "--backend", "numpy", "--dtype", "float32", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["rows"][0]["verdict"] == "pass", report
    assert (report["preset"], report["network"], report["samples"], report["steps"]) == (
        "cnn", layers, 8, 1)
    row = report["rows"][0]
    # The first convolution's weight gradient sums 8 images x its output positions.
    assert row["tolerances"]["grads"] > row["tolerances"]["forward"]
    code = main(["parity", "--preset", "cnn", *data_args(mnist), "--samples", "4",
                 "--steps", "0", "--backend", "numpy", "--dtype", "float32"])
    out = capsys.readouterr().out
    assert code == 0 and "network: conv:" in out, out
    assert max(map(len, out.splitlines())) <= 100, out


def test_parity_where_every_row_is_skipped_is_one_line_and_exit_2(mnist, monkeypatch, capsys):
    """Nothing compared is no pass: the table of skipped rows, then one error line."""
    from multinet import parity

    def refuse(dtype):  # float32 only: the float64 reference runs on NumPy too
        if dtype == "float32":
            raise BackendUnavailable(f"{dtype} refused here")

    numpy = get_backend("numpy")
    monkeypatch.setattr(parity, "get_backend",
                        lambda name: dataclasses.replace(numpy, enable_dtype=refuse))
    for json_flag in ([], ["--json"]):
        code = main(["parity", *data_args(mnist), "--samples", "64", "--steps", "1",
                     "--backend", "numpy", "--dtype", "float32", *json_flag])
        out, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("multinet: error: nothing was compared: every backend and dtype "
                              "was skipped (numpy float32: float32 refused here)"), err
        assert "float32 refused here" in out  # the skipped row, in the table or the JSON


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


# module://math: importable, but not an array library; cupy: registered, but not installed
# (or no GPU).
@pytest.mark.parametrize("name", ["module://math", "cupy"])
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


def test_a_signal_to_parity_is_one_line_and_128_plus_its_number(mnist, monkeypatch, capsys):
    import os
    import signal
    import time

    from multinet import parity

    def report(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in here
        raise AssertionError("the signal was not acted on")

    monkeypatch.setattr(parity, "report", report)
    code = main(["parity", *data_args(mnist), "--samples", "64", "--steps", "1",
                 "--backend", "numpy"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 128 + signal.SIGTERM, err
    assert err == ["multinet: interrupted (SIGTERM); the parity check stopped"]
