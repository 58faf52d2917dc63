"""``multinet bench`` as a user runs it: the rows it reports (it is not a timing test:
no speed is asserted), peers asked for even when they are not installed, options refused
in one line, the table's numbers; and signals: one sent to the bench stops its worker too,
whichever thread takes it, and the handlers are put back. The bench's measurements and
ratios are in test_bench.py."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import assert_one_line_error, one_line_error, run_cli
from multinet.bench import BenchConfig
from multinet.cli import main


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


def test_bench_table_says_how_many_batches_of_the_cnn_epoch_it_timed():
    out = bench("--backend", "numpy", "--workload", "cnn-epoch", "--cnn-batches", "1",
                "--samples", "256")
    assert "cnn-epoch" in out.stdout
    assert "cnn-epoch: the first 1 of an epoch's 2 batches (--cnn-batches)" in out.stdout


def test_bench_times_a_name_given_twice_once():
    out = bench("--backend", "numpy", "--backend", "numpy", "--workload", "floor",
                "--workload", "floor", "--json")
    assert [(r["backend"], r["workload"]) for r in json.loads(out.stdout)["rows"]] == [
        ("numpy", "floor")]


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


def test_the_table_shows_long_times_without_exponents():
    from multinet.commands.bench import _milliseconds

    assert [_milliseconds(s) for s in (0.000285, 0.0438, 3.9144)] == ["0.285", "43.8",
                                                                       "3,914"]


# --- Options refused --------------------------------------------------------------------

def test_bench_refuses_what_it_cannot_time(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--samples", "1"])
    assert info.value.code == 2 and "--samples: must be an integer >= 128" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["bench", "--cnn-batches", "0"])
    assert info.value.code == 2 and "--cnn-batches: must be an integer >= 1" in capsys.readouterr().err
    one_line_error(main(["bench", "--backend", "bogus", "--workload", "floor"]),
                   capsys.readouterr(), "unknown backend 'bogus'")


@pytest.mark.parametrize("args, fragment", [
    (["--samples", "99999999999999"], "GiB"),
    (["--devices", "2", "--backend", "jax", "--peer", "torch"], "--peer"),
])
def test_bad_bench_options_are_one_line(args, fragment):
    assert_one_line_error(run_cli("bench", *args, timeout=120), fragment)


# --- Signals ----------------------------------------------------------------------------

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
    from multinet.commands.bench import signals_interrupt
    from multinet.errors import TrainingInterrupted

    monkeypatch.setattr(bench, "_worker_command", lambda target, config, entry: [
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
            with signals_interrupt("the bench stopped"):
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


def test_a_signal_while_a_backend_loads_ends_the_bench_with_its_status(monkeypatch, capsys):
    """Loading a backend raised the signal's ``TrainingInterrupted``, a ``MultinetError``,
    which the bench took for a backend that cannot run: a skipped row, and exit 0."""
    from multinet.commands import bench as command

    def loading(name):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in here
        raise AssertionError("the signal was not acted on")

    monkeypatch.setattr(command, "get_backend", loading)
    status = main(["bench", "--workload", "floor", "--samples", "1280"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 128 + signal.SIGTERM, err
    assert len(err) == 1 and err[0].startswith("multinet: interrupted (SIGTERM)"), err


def test_a_failing_worker_is_reported_by_its_message_alone():
    from multinet import bench
    from multinet.commands.bench import WORKER

    result = bench.run_in_subprocess("bogus", BenchConfig(samples=1280), entry=WORKER)
    assert result["rows"] == [] and result["error"].startswith("unknown backend 'bogus'")


def test_the_workers_word_their_messages_for_the_command_line():
    pytest.importorskip("mlx", reason="MLX is not installed (its float64 is refused)")
    result = run_cli("bench", "--backend", "mlx", "--workload", "notebook-float64",
                     "--workload", "floor", "--samples", "1280", "--repeats", "1", "--json")
    assert result.returncode == 0, result.stderr
    skipped = next(r for r in json.loads(result.stdout)["rows"] if "skipped" in r)
    assert "--dtype float32" in skipped["skipped"] and "dtype=" not in skipped["skipped"]


def test_the_table_fits_100_columns_and_explains_its_columns():
    out = bench("--backend", "numpy", "--backend", "cupy", "--workload", "floor",
                "--workload", "notebook-float32").stdout
    assert max(map(len, out.splitlines())) <= 100, out
    header = next(line for line in out.splitlines() if line.startswith("backend "))
    legend = out[out.index(header) + len(header):]
    for column in ("median ms", "spread", "samples/s", "x floor", "x peer", "x best",
                   "first ms", "host MB"):
        assert column in header and f"{column}:" in legend, column
    assert "heap (above): retained:" in legend
