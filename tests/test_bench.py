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
        ("numpy", None), ("torch", None), ("torch (native)", "torch"),
        ("torch (careful)", "torch")]
    assert rows[3]["variant"] == "careful"
    assert "x_peer" in rows[0] and "x_peer" in rows[1] and "x_peer" not in rows[2]
    assert rows[0]["x_peer"] == pytest.approx(rows[0]["median_seconds"]
                                              / rows[2]["median_seconds"])
    fastest = min(rows[2:], key=lambda r: r["median_seconds"])
    assert rows[0]["best_peer"] == fastest["backend"]


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


def test_every_row_is_set_against_the_fastest_peer_of_its_workload():
    rows = [{"backend": "jax", "platform": "cpu", "workload": "x", "dtype": "float32",
             "median_seconds": 3.0},
            {"backend": "torch (native)", "peer": "torch", "platform": "cpu",
             "workload": "x", "dtype": "float32", "median_seconds": 6.0},
            {"backend": "torch (careful)", "peer": "torch", "variant": "careful",
             "platform": "cpu", "workload": "x", "dtype": "float32", "median_seconds": 4.0},
            {"backend": "jax (native)", "peer": "jax", "platform": "cpu", "workload": "x",
             "dtype": "float32", "median_seconds": 2.0},
            {"backend": "jax", "platform": "cpu", "workload": "y", "dtype": "float32",
             "median_seconds": 1.0},
            {"backend": "torch (native)", "peer": "torch", "platform": "cpu",
             "workload": "y", "dtype": "float32", "median_seconds": 4.0}]
    add_ratios(rows)
    assert rows[0]["x_peer"] == 0.5  # PyTorch eager, not its careful variant
    assert (rows[0]["x_best_peer"], rows[0]["best_peer"]) == (1.5, "jax (native)")
    assert (rows[4]["x_best_peer"], rows[4]["best_peer"]) == (0.25, "torch (native)")
    assert not any("x_best_peer" in r for r in rows if r.get("peer"))


def test_the_report_names_the_processor_and_the_blas():
    from multinet.bench import describe_machine, machine

    m = machine()
    assert m["cpu"]["model"] and m["cpu"]["model"] != "x86_64" or not Path(
        "/proc/cpuinfo").exists()
    assert m["versions"]["numpy"] and m["usable_cpus"] >= 1
    pytest.importorskip("threadpoolctl")
    assert any(pool.get("user_api") == "blas" for pool in m["numpy_threads"])
    assert m["cpu"]["model"] in describe_machine(m)[0]


def test_bench_with_every_peer():
    pytest.importorskip("torch", reason="PyTorch is not installed (the peer is optional)")
    pytest.importorskip("jax", reason="JAX is not installed (the peer is optional)")
    out = bench("--backend", "numpy", "--workload", "inference", "--peer", "all", "--json")
    report = json.loads(out.stdout)
    rows = {r["backend"]: r for r in report["rows"]}
    assert {rows["torch (native)"]["peer"], rows["jax (native)"]["peer"]} == {"torch", "jax"}
    fastest = min(("torch (native)", "jax (native)"), key=lambda b: rows[b]["median_seconds"])
    assert rows["numpy"]["best_peer"] == fastest
    assert rows["numpy"]["x_best_peer"] == pytest.approx(
        rows["numpy"]["median_seconds"] / rows[fastest]["median_seconds"])
    assert report["machine"]["cpu"]["model"]
    assert any(pool.get("user_api") == "blas" for pool in report["threads"]["numpy"])
    # multinet's backends run as `multinet train` does (multinet.heap), the peers as is.
    assert rows["numpy"]["heap"] in ("retained", "not glibc")
    assert rows["torch (native)"]["heap"] == rows["jax (native)"]["heap"] == "allocator default"
    help_text = subprocess.run([sys.executable, "-m", "multinet", "bench", "--help"],
                               capture_output=True, text=True).stdout
    assert "--peer {torch,jax,all}" in help_text  # what scripts/gpu-check.sh looks for


def test_config_defaults_are_mnist_shaped():
    config = BenchConfig()
    assert config.samples == 59000 and config.test_samples == 10000
