"""``multinet bench`` runs and reports; it is not a timing test (no speed is asserted)."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from multinet.bench import BenchConfig, add_ratios, measure


def bench(*args):
    result = subprocess.run([sys.executable, "-m", "multinet", "bench", "--repeats", "2",
                             "--epoch-repeats", "1", "--samples", "2048", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_bench_json_has_every_requested_measurement():
    out = bench("--backend", "numpy", "--backend", "strict", "--workload", "floor",
                "--workload", "notebook-float32", "--workload", "mlp-epoch", "--json")
    report = json.loads(out.stdout)
    rows = {(r["backend"], r["workload"]): r for r in report["rows"]}
    assert set(rows) == {(b, w) for b in ("numpy", "strict")
                         for w in ("floor", "notebook-float32", "mlp-epoch")}
    for row in rows.values():
        assert row["min_seconds"] <= row["median_seconds"] <= row["max_seconds"]
        assert row["first_seconds"] > 0 and row["peak_host_bytes"] > 0
        assert row["samples_per_second"] > 0
    assert rows["numpy", "mlp-epoch"]["samples"] == 2048 // 128 * 128
    assert "x_floor" in rows["numpy", "notebook-float32"]
    assert report["machine"]["cpus"] >= 1


def test_bench_table_and_unavailable_backends_are_noted():
    out = bench("--backend", "numpy", "--backend", "cupy", "--workload", "inference")
    assert "inference" in out.stdout and "x floor" in out.stdout
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert "cupy: skipped" in out.stdout


def test_bench_with_the_torch_peer_beside_the_torch_backend():
    pytest.importorskip("torch", reason="PyTorch is not installed (the peer is optional)")
    out = bench("--backend", "numpy", "--backend", "torch", "--workload", "floor",
                "--workload", "notebook-float32", "--peer", "torch", "--json")
    rows = [r for r in json.loads(out.stdout)["rows"] if r["workload"] != "floor"]
    assert [(r["backend"], r.get("peer")) for r in rows] == [
        ("numpy", None), ("torch", None), ("torch (native)", "torch")]
    assert "x_peer" in rows[0] and "x_peer" in rows[1] and "x_peer" not in rows[2]


def test_peers_live_with_the_bench_not_among_the_backends():
    from multinet import backends, peers

    backend_dir = Path(backends.__file__).parent
    assert not any("peer" in path.name for path in backend_dir.iterdir())
    for name in peers.PEERS:
        module = importlib.import_module(f"multinet.peers.{name}")
        assert callable(module.bench)


def test_measure_synchronizes_before_every_clock_read():
    calls = []
    timing = measure(lambda: calls.append("run") or "result",
                     lambda result: calls.append(f"sync {result}"), 3)
    assert calls == ["run", "sync result"] * 4
    assert timing["repeats"] == 3


def test_ratios_use_the_fastest_floor_of_the_platform():
    rows = [{"backend": "a", "platform": "cpu", "workload": "floor", "dtype": "float32",
             "median_seconds": 2.0},
            {"backend": "b", "platform": "cpu", "workload": "floor", "dtype": "float32",
             "median_seconds": 1.0},
            {"backend": "a", "platform": "cpu", "workload": "x", "dtype": "float32",
             "median_seconds": 4.0},
            {"backend": "torch (native)", "peer": "torch", "platform": "cpu", "workload": "x",
             "dtype": "float32", "median_seconds": 8.0}]
    add_ratios(rows)
    assert rows[2]["x_floor"] == 4.0 and rows[2]["x_peer"] == 0.5


def test_config_defaults_are_mnist_shaped():
    config = BenchConfig()
    assert config.samples == 59000 and config.test_samples == 10000
