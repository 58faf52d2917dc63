"""``multinet bench`` runs and reports; it is not a timing test (no speed is asserted)."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli

from multinet.bench import BenchConfig, add_ratios, measure

REPO = Path(__file__).resolve().parent.parent


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
    from multinet.machine import describe_machine, machine

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


def test_bench_times_a_name_given_twice_once():
    out = bench("--backend", "numpy", "--backend", "numpy", "--workload", "floor",
                "--workload", "floor", "--json")
    assert [(r["backend"], r["workload"]) for r in json.loads(out.stdout)["rows"]] == [
        ("numpy", "floor")]


def test_every_peer_asked_for_is_in_the_report_even_when_not_installed(tmp_path):
    pytest.importorskip("jax", reason="JAX is not installed (the peer is optional)")
    # A Python in which `import torch` fails, whether or not PyTorch is installed.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    result = run_cli("bench", "--backend", "numpy", "--workload", "floor", "--peer", "all",
                     "--samples", "1280", "--repeats", "1",
                     env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "jax (native)" in result.stdout
    assert "peer:torch: skipped: torch is not installed" in result.stdout
    only_torch = run_cli("bench", "--peer", "torch", env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(only_torch, "--peer torch", "not installed")


@pytest.mark.parametrize("args, fragment", [
    (["--samples", "99999999999999"], "GiB"),
    (["--devices", "2", "--backend", "jax", "--peer", "torch"], "--peer"),
])
def test_bad_bench_options_are_one_line(args, fragment):
    assert_one_line_error(run_cli("bench", *args, timeout=120), fragment)


@pytest.mark.parametrize("args, fragment", [
    (["--samples", "99999999999999"], "GiB"),
    (["--backend", "bogus"], "error: unknown backend 'bogus'"),  # checked before any run
    (["--rounds", "0"], "--rounds"),
])
def test_bad_bench_heap_options_are_one_line(args, fragment):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench-heap.py"), *args],
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, fragment)


def test_the_table_shows_long_times_without_exponents():
    from multinet.commands.bench import _milliseconds

    assert [_milliseconds(s) for s in (0.000285, 0.0438, 3.9144)] == ["0.285", "43.8",
                                                                       "3,914"]


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux's /proc), empty where that is not known."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
            return [int(p) for p in file.read().split()]
    except OSError:
        return []


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_bench_stops_its_worker_too(signum):
    """Sent to the parent alone (as a service manager or a closed terminal may), the
    signal used to end the parent and leave the worker timing on its own."""
    bench_cmd = [sys.executable, "-m", "multinet", "bench", "--backend", "numpy",
                 "--workload", "mlp-epoch", "--samples", "12800", "--epoch-repeats", "50"]
    process = subprocess.Popen(bench_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while not workers and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = _children(process.pid)
        assert workers, "the bench started no worker"
        time.sleep(1.0)  # the worker is timing now, and the parent waits for it
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
        survivors = [w for w in workers if _alive(w)]
    finally:
        process.kill()
        for worker in workers:  # never leave one timing on its own, whatever happened
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)
    assert process.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("multinet: interrupted (") and "Traceback" not in err, err
    assert not survivors


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}") and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
def test_a_signal_another_thread_takes_still_stops_the_worker(monkeypatch):
    """The kernel may hand a signal to any thread of the process (BLAS's; it did with the
    second of SIGTERM and SIGHUP sent at once): the parent's wait in ``poll`` went on, and
    the handler ran only when the worker had finished all its timing (here, never)."""
    import threading

    from multinet import bench
    from multinet.commands.bench import _signals_interrupt
    from multinet.errors import TrainingInterrupted

    monkeypatch.setattr(bench, "_worker_command", lambda target, config: [
        sys.executable, "-c", "import time; time.sleep(600)"])
    stuck, done = [], threading.Event()

    def other_thread():
        deadline = time.monotonic() + 60
        workers = []
        while not workers and time.monotonic() < deadline:
            time.sleep(0.02)
            workers = _children(os.getpid())
        time.sleep(1.0)  # the parent waits in poll now
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread
        if done.wait(20):  # the parent stopped in time
            return
        # It still waits: end the worker it waits for (only that one: later tests' own
        # processes are children of this pytest too), and the test fails.
        stuck.extend(w for w in workers if _alive(w))
        for worker in stuck:
            os.kill(worker, signal.SIGKILL)

    thread = threading.Thread(target=other_thread, daemon=True)
    thread.start()
    try:
        with pytest.raises(TrainingInterrupted, match=r"interrupted \(SIGTERM\)"):
            with _signals_interrupt():
                bench.run_in_subprocess("numpy", BenchConfig())
    finally:
        done.set()
    thread.join(30)
    assert not stuck


def test_the_bench_leaves_the_signal_handlers_as_it_found_them():
    """``main`` called twice in one process (as the tests do): each bench puts back the
    handlers it found, so a later SIGTERM is no bench's interrupt."""
    from multinet import cli

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for _ in range(2):
        assert cli.main(["bench", "--samples", "10000000000"]) == 2
    assert {s: signal.getsignal(s) for s in before} == before
