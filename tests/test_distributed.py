"""Data parallelism through JAX's sharding: N devices (virtual CPU devices here) and two
processes on 127.0.0.1 give the parameters a single device gives, within the parity
tolerance; a process that cannot join a multi-process run says what it waited for, in one
line."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax", reason="data parallelism runs on JAX (pip install jax)")

import helpers  # noqa: E402
from helpers import DATA, data_args, load_code  # noqa: E402
from multinet import checkpoint as ckpt  # noqa: E402
from multinet import parity  # noqa: E402

VIRTUAL = "--xla_force_host_platform_device_count={}"


def python(code, devices, timeout=600):
    env = {**os.environ, "XLA_FLAGS": VIRTUAL.format(devices)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_one_two_four_eight_devices_give_the_same_parameters(mnist):
    errors = python(f"""
        import dataclasses, json
        import numpy as np
        from multinet.data import load_dataset
        from multinet.registry import get_backend
        from multinet.training.config import TrainConfig
        from multinet.training.loop import train
        from multinet import parity

        data = {load_code(mnist)}
        data = dataclasses.replace(data, train_images=data.train_images[:2048],
                                   train_labels=data.train_labels[:2048],
                                   test_images=data.test_images[:512],
                                   test_labels=data.test_labels[:512])
        config = TrainConfig.from_preset("mlp", hidden=(32,), batch_size=64, epochs=2,
                                         dev_size=200)
        jax = get_backend("jax")
        def params(backend):
            result = train(config, backend, data, progress=False)
            return {{k: backend.to_numpy(v) for k, v in result.params.items()}}, result
        reference, single = params(jax)
        out = {{"steps": single.state.step}}
        for n in (1, 2, 4, 8):
            found, result = params(jax.data_parallel(n))
            out[n] = [parity.max_relative_error(found, reference),
                      result.summary["test_accuracy"] - single.summary["test_accuracy"]]
        print(json.dumps(out))
    """, devices=8)
    bound = parity.tolerance("float32", errors.pop("steps"))
    for n, (error, accuracy_change) in errors.items():
        assert error <= bound, (n, error, bound)
        assert abs(accuracy_change) <= 0.001 + 1e-12, (n, accuracy_change)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_match_one_process_and_write_one_checkpoint(mnist,
                                                                              tmp_path):
    common = [sys.executable, "-m", "multinet", "train", "--backend", "jax", "--preset", "mlp",
              "--hidden", "16", "--epochs", "1", "--no-progress", "--json",
              *data_args(mnist)]
    env = {**os.environ, "XLA_FLAGS": VIRTUAL.format(2)}
    port = free_port()
    runs = tmp_path / "two"
    runs.mkdir()
    processes = [subprocess.Popen(
        [*common, "--devices", "all", "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i), "--save", str(runs / "ckpt.safetensors"),
         "--metrics", str(runs / "metrics.jsonl")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    summary = json.loads(outputs[0][0].strip().splitlines()[-1])
    assert summary["devices"] == 4 and summary["processes"] == 2
    assert not any(line.startswith("{") for line in outputs[1][0].splitlines())
    assert sorted(p.name for p in runs.iterdir()) == ["ckpt.safetensors", "metrics.jsonl"]

    single = subprocess.run([*common, "--devices", "4", "--save", str(tmp_path / "one.st")],
                            env={**os.environ, "XLA_FLAGS": VIRTUAL.format(4)},
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = ckpt.load(runs / "ckpt.safetensors"), ckpt.load(tmp_path / "one.st")
    steps = one.metadata["progress"]["step"]
    assert parity.max_relative_error(two.params, one.params) <= parity.tolerance("float32",
                                                                                   steps)


@pytest.mark.parametrize("backend", ["numpy", "strict"])
def test_devices_on_other_backends_is_a_clear_error(backend):
    result = subprocess.run([sys.executable, "-m", "multinet", "train", "--backend", backend,
                             "--devices", "2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "supported through JAX" in result.stderr and "Traceback" not in result.stderr


def test_more_devices_than_exist_and_uneven_batches_are_clear_errors(mnist):
    base = [sys.executable, "-m", "multinet", "train", "--backend", "jax", "--preset", "mlp",
            "--epochs", "1", *data_args(mnist)]
    env = {**os.environ, "XLA_FLAGS": VIRTUAL.format(2)}
    too_many = subprocess.run([*base, "--devices", "3"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert too_many.returncode == 2 and "JAX sees 2 device(s)" in too_many.stderr
    uneven = subprocess.run([*base, "--devices", "2", "--batch-size", "127"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert uneven.returncode == 2 and "divide evenly by 2" in uneven.stderr


# --- Processes that cannot join ---------------------------------------------------------

@pytest.mark.parametrize("process_id, fragment", [
    (1, "nothing answers at the coordinator 127.0.0.1:{port}"),
    (0, "the multi-process run at 127.0.0.1:{port} did not come together within 1 s"),
])
def test_a_process_that_cannot_join_says_what_it_waited_for_and_gives_up(process_id,
                                                                         fragment):
    pytest.importorskip("jax")
    port = free_port()
    result = helpers.run_cli(
        "train", *DATA, "--backend", "jax", "--devices", "all", "--coordinator",
        f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(process_id),
        "--init-timeout", "1", timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0] == (f"multinet: process {process_id} of 2: joining the run at "
                        f"127.0.0.1:{port}, waiting up to 1 s for all 2 processes "
                        "(--init-timeout)")
    assert len(lines) == 2 and lines[1].startswith("multinet: error: ")
    assert fragment.format(port=port) in lines[1]


def test_a_coordinator_port_out_of_range_is_refused_at_once():
    pytest.importorskip("jax")
    result = helpers.run_cli(
        "train", *DATA, "--backend", "jax", "--devices", "all", "--coordinator",
        "127.0.0.1:99999", "--num-processes", "2", "--process-id", "1",
        "--init-timeout", "30", timeout=120)
    helpers.assert_one_line_error(result, "127.0.0.1:99999", "port from 1 to 65535")


# --- The full preset, and the bench -----------------------------------------------------

@pytest.mark.slow
def test_mlp_preset_on_four_devices_matches_one_device(full_mnist):
    mnist = full_mnist
    """The full preset: 4,600 Adam steps. Over that many float32 steps the parameters of
    *any* two summation orders drift apart (measured: NumPy against JAX on one device,
    29% relative), so the parameters are held to that natural spread, and the accuracy
    to 0.1 points; the parity tolerance itself is checked on shorter runs above."""
    found = python(f"""
        import json
        from multinet import parity
        from multinet.data import load_dataset
        from multinet.registry import get_backend
        from multinet.training.config import TrainConfig
        from multinet.training.loop import train
        data = {load_code(mnist)}
        config = TrainConfig.from_preset("mlp")
        jax, numpy = get_backend("jax"), get_backend("numpy")
        runs = [train(config, b, data, progress=False)
                for b in (jax, jax.data_parallel(4), numpy)]
        params = [{{k: jax.to_numpy(v) for k, v in r.params.items()}} for r in runs]
        print(json.dumps({{"accuracy": [r.summary["test_accuracy"] for r in runs],
                          "devices": parity.max_relative_error(params[1], params[0]),
                          "libraries": parity.max_relative_error(params[2], params[0])}}))
    """, devices=4, timeout=1800)
    one, four, _ = found["accuracy"]
    assert abs(one - four) <= 0.001 and min(one, four) >= 0.98
    assert found["devices"] <= 2 * found["libraries"], found


def test_bench_scaling_reports_speedup_and_efficiency():
    result = subprocess.run([sys.executable, "-m", "multinet", "bench", "--devices", "2",
                             "--epoch-repeats", "1", "--samples", "1024", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)["rows"]
    assert [r["devices"] for r in rows] == [1, 2]
    assert rows[0]["speedup"] == 1.0
    assert rows[1]["efficiency"] == pytest.approx(rows[1]["speedup"] / 2)


def test_a_cnn_step_split_over_two_devices_matches_one_device(mnist):
    """The convolutional network's minibatch step, its batch split over two devices (the
    gradients' sum an all-reduce that XLA inserts), gives the single device's parameters
    step after step. (The loop around the step is the MLP's, tested above.)"""
    found = python(f"""
        import json
        import jax
        import numpy as np
        from multinet import parity
        from multinet.data import load_dataset
        from multinet.registry import get_backend
        from multinet.training.config import TrainConfig
        from multinet.training.loop import initial_state
        from multinet.training.steps import epoch_order, make_minibatch_step

        data = {load_code(mnist)}
        config = TrainConfig.from_preset("cnn", layers={helpers.TINY_CNN!r}, batch_size=32)
        images, labels = data.train_images[:256].reshape(-1, 784), data.train_labels[:256]
        rows = epoch_order(256, 32, 0, 0)[:4]
        params, all_reduce = [], None
        for backend in (get_backend("jax"), get_backend("jax").data_parallel(2)):
            state = initial_state(config, backend, 784)
            step = jax.jit(make_minibatch_step(config.optimizer_spec(),
                                               layers=config.network_layers()))
            p, s = state.params, state.opt_state
            x, y = backend.asarray(images), backend.asarray(labels, "int32")
            for row in rows:
                p, s, _, _ = step(p, s, x, y, backend.batch_asarray(row, "int32"), 1e-3)
            params.append({{k: np.asarray(backend.to_numpy(v)) for k, v in p.items()}})
            all_reduce = "all-reduce" in step.lower(
                state.params, state.opt_state, x, y, backend.batch_asarray(rows[0], "int32"),
                1e-3).compile().as_text()
        print(json.dumps({{"error": parity.max_relative_error(params[1], params[0]),
                          "split": all_reduce}}))
    """, devices=2)
    assert found["split"]  # the two-device program sums the gradients across devices
    assert found["error"] <= parity.tolerance("float32", 4)
