"""The bench (``multinet/bench.py``, its native peers in ``multinet/peers/``, and
``scripts/bench-heap.py``): how it times, how rows are set against the floor and the
peers, and what a skipped row says. No speed is asserted. The command is in
test_cli_bench.py."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_one_line_error
from multinet.bench import BenchConfig, add_ratios, measure

REPO = Path(__file__).resolve().parent.parent


def test_config_defaults_are_mnist_shaped():
    config = BenchConfig()
    assert config.samples == 59000 and config.test_samples == 10000


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


def test_peer_ratios_stay_within_a_platform_and_skip_what_no_peer_timed():
    def row(backend, platform, workload, dtype="float32", seconds=1.0, **extra):
        return {"backend": backend, "platform": platform, "workload": workload,
                "dtype": dtype, **({"median_seconds": seconds} if seconds is not None else {}),
                **extra}

    rows = [row("numpy", "cpu", "x", seconds=4.0),
            row("cupy", "gpu", "x", seconds=0.5),
            row("numpy", "cpu", "x", "float64", seconds=8.0),
            row("numpy", "cpu", "lonely", seconds=3.0),
            row("torch (native)", "gpu", "x", seconds=0.25, peer="torch"),
            row("torch (native)", "gpu", "x", "float64", seconds=None, peer="torch",
                skipped="no float64 here"),
            row("jax (native)", "cpu", "x", seconds=2.0, peer="jax"),
            row("jax (native)", "cpu", "x", "float64", seconds=0.0, peer="jax")]
    add_ratios(rows)
    numpy32, cupy, numpy64, lonely = rows[:4]
    # The CPU row is not set against PyTorch on the GPU, only against the CPU peer.
    assert "x_peer" not in numpy32
    assert (numpy32["x_best_peer"], numpy32["best_peer"]) == (2.0, "jax (native)")
    assert (cupy["x_peer"], cupy["x_best_peer"], cupy["best_peer"]) == (
        2.0, 2.0, "torch (native)")
    # A skipped peer row and a zero time (no ratio, no division by zero) give nothing.
    assert not {"x_peer", "x_best_peer", "best_peer"} & (set(numpy64) | set(lonely))


def test_a_skipped_workload_names_the_heap_of_its_process(monkeypatch):
    import dataclasses

    from multinet import bench, registry
    from multinet.bench import bench_backend

    def refuse(dtype):
        raise registry.BackendUnavailable(f"no {dtype} here")

    numpy = registry.get_backend("numpy")
    monkeypatch.setattr(bench, "get_backend",
                        lambda name: dataclasses.replace(numpy, enable_dtype=refuse))
    [row] = bench_backend("numpy", BenchConfig(samples=128, workloads=("notebook-float64",),
                                               extra={"retain_heap": False}))
    assert row["skipped"] == "no float64 here" and row["heap"] == "allocator default"


def test_peers_live_with_the_bench_not_among_the_backends():
    from multinet import backends, peers

    backend_dir = Path(backends.__file__).parent
    assert not any("peer" in path.name for path in backend_dir.iterdir())
    for name in peers.PEERS:
        module = importlib.import_module(f"multinet.peers.{name}")
        assert callable(module.bench)


@pytest.mark.parametrize("args, fragment", [
    (["--samples", "99999999999999"], "GiB"),
    (["--backend", "bogus"], "error: unknown backend 'bogus'"),  # checked before any run
    (["--rounds", "0"], "--rounds"),
])
def test_bad_bench_heap_options_are_one_line(args, fragment):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench-heap.py"), *args],
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, fragment)
