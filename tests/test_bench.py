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


#: A cnn small enough for the suite: 2 channels, 3x3 kernels, 2 batches of 128.
TINY_CNN = dict(samples=256, workloads=("cnn-epoch",), epoch_repeats=1, cnn_batches=1,
                cnn_layers=("conv:2:3x3:same", "relu", "maxpool:2", "flatten"))


def test_a_cnn_epoch_row_names_the_batches_it_timed_and_scales_them_to_the_epoch():
    from multinet.bench import bench_backend

    [row] = bench_backend("numpy", BenchConfig(**TINY_CNN))
    assert (row["workload"], row["batches"], row["epoch_batches"]) == ("cnn-epoch", 1, 2)
    assert row["samples"] == 128
    assert row["epoch_seconds"] == pytest.approx(2 * row["median_seconds"])


def test_the_cnn_epoch_defaults_to_the_cnn_presets_layers_and_stops_at_the_epoch():
    from multinet.bench import cnn_batches, cnn_network
    from multinet.training.config import PRESETS

    config = BenchConfig(samples=512, cnn_batches=99)
    assert tuple(config.cnn_layers) == tuple(PRESETS["cnn"]["layers"])
    assert cnn_batches(config) == (4, 4)
    layers, params = cnn_network(config)
    assert [str(layer) for layer in layers] == [*PRESETS["cnn"]["layers"], "dense:10"]
    assert params["W1"].shape[:2] == (layers[0].kernel, layers[0].kernel)


@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_each_native_peer_times_the_cnn_epoch(peer):
    pytest.importorskip(peer, reason=f"{peer} is not installed (the peer is optional)")
    module = importlib.import_module(f"multinet.peers.{peer}")
    [row] = module.bench(BenchConfig(**TINY_CNN))
    assert (row["peer"], row["workload"], row["batches"], row["samples"]) == (
        peer, "cnn-epoch", 1, 128)
    assert row["median_seconds"] > 0


@pytest.mark.parametrize("peer", ["torch", "jax"])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note
def test_the_native_peers_cnn_is_multinets_from_the_same_start(peer):
    # Same layers, same starting numbers in each library's layout (channels-first and
    # the dense rows after a flatten reordered for PyTorch): the same loss.
    library = pytest.importorskip(peer, reason=f"{peer} is not installed")
    import numpy as np

    from multinet import network
    from multinet.bench import cnn_network
    from multinet.peers import jax as jax_peer, torch as torch_peer

    config = BenchConfig(cnn_layers=("conv:3:3x3:valid", "relu", "maxpool:2", "conv:2:2x2:same",
                                     "avgpool:2", "flatten", "dense:5", "relu"))
    layers, host = cnn_network(config)
    rng = np.random.default_rng(1)
    x, y = rng.random((4, 784)), rng.integers(0, 10, 4)
    expected = float(network.loss(host, x, y, layers))
    if peer == "torch":
        start, logits_of = torch_peer._cnn_model(library, library.device("cpu"), layers, host)
        with library.no_grad():
            logits = logits_of(start(), library.tensor(x, dtype=library.float32))
            got = float(library.nn.functional.cross_entropy(logits, library.tensor(y)))
    else:
        params = {k: library.numpy.asarray(v, "float32") for k, v in host.items()}
        got = float(jax_peer._cnn_loss(library, layers)(params, library.numpy.asarray(
            x, "float32"), library.numpy.asarray(y)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_a_backend_that_captures_steps_gets_a_captured_row_beside_each_eager_one(monkeypatch):
    import dataclasses

    import numpy as np

    from multinet import bench, registry
    from multinet.backends import graphs
    from multinet.bench import bench_backend

    captures = []

    def record(call):  # a graph's stand-in on the CPU: launching runs the step again
        outputs = tuple(np.asarray(o) for o in call())
        captures.append(outputs)
        return outputs, lambda: [np.copyto(b, v) for b, v in zip(outputs, call())]

    def capture_step(fn, args):
        return graphs.capture(fn, args, clone=np.copy, copy_into=np.copyto, record=record)

    numpy = registry.get_backend("numpy")
    monkeypatch.setattr(bench, "get_backend",
                        lambda name: dataclasses.replace(numpy, capture_step=capture_step))
    rows = bench_backend("numpy", BenchConfig(
        samples=256, repeats=1, epoch_repeats=1, mlp_sizes=(784, 8, 10),
        workloads=("notebook-float32", "mlp-epoch", "inference")))
    assert [(r["backend"], r["workload"]) for r in rows] == [
        (name, workload) for workload in ("notebook-float32", "mlp-epoch", "inference")
        for name in ("numpy", "numpy (captured)")]
    assert all(r["variant"] == "captured" for r in rows[1::2])
    assert len(captures) == 3  # once per workload, however often it is run


def test_an_eager_gpu_backend_that_cannot_capture_says_so_in_its_captured_row(monkeypatch):
    import dataclasses

    from multinet import bench, registry
    from multinet.bench import bench_backend

    numpy = registry.get_backend("numpy")
    monkeypatch.setattr(bench, "get_backend",
                        lambda name: dataclasses.replace(numpy, platform="gpu"))
    rows = bench_backend("numpy", BenchConfig(samples=128, repeats=1,
                                              workloads=("notebook-float32",)))
    assert rows[1]["backend"] == "numpy (captured)"
    assert rows[1]["skipped"] == f"numpy {numpy.version} captures no steps here"
