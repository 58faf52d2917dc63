"""PyTorch, MLX and any library by its import name: what their backends promise beyond
the parity suite (which runs them like every other backend): device choice, refusals,
compilers, and the generic path from the command line."""

import json

import numpy as np
import pytest

from helpers import assert_one_line_error, data_args, run_cli
from multinet import network
from multinet.errors import BackendUnavailable
from multinet.initializers import init_params
from multinet.registry import get_backend


def test_backends_lists_torch_and_mlx_with_devices_or_the_reason():
    rows = {row["name"]: row for row in json.loads(run_cli("backends", "--json").stdout)}
    for name in ("torch", "mlx"):
        assert rows[name]["devices"] if rows[name]["available"] else rows[name]["reason"]


# --- PyTorch ---------------------------------------------------------------------------

def torch_backend():
    pytest.importorskip("torch", reason="PyTorch is not installed (multinet[torch])")
    return get_backend("torch")


def test_torch_prefers_cuda_then_mps_then_cpu():
    backend = torch_backend()
    import torch

    present = [kind for kind, there in (("cuda", torch.cuda.is_available()),
                                        ("mps", torch.backends.mps.is_available()),
                                        ("cpu", True)) if there]
    assert backend.device_choices == tuple(present)
    assert backend.device.type == present[0]
    cpu = backend.configured("cpu")
    assert cpu.device.type == "cpu" and cpu.platform == "cpu"
    assert cpu.to_numpy(cpu.asarray(np.arange(3.0), "float32")).tolist() == [0, 1, 2]


def test_torch_refuses_a_device_it_does_not_have(mnist):
    backend = torch_backend()
    with pytest.raises(BackendUnavailable, match="--device cuda:99"):
        backend.configured("cuda:99")
    assert_one_line_error(run_cli("train", "--backend", "torch", "--device", "tpu",
                                  *data_args(mnist)), "--device tpu", "cpu")


def test_torch_on_mps_refuses_float64_in_one_line(monkeypatch):
    """Simulated where there is no Mac: the refusal depends only on the device kind."""
    torch_backend()
    import array_api_compat.torch as xp
    import torch

    from multinet.backends import torch as torch_module

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    mps = torch_module._on(torch, xp, "mps", torch_module._kinds(torch))
    assert mps.platform == "gpu" and mps.device.type == "mps"
    mps.enable_dtype("float32")
    with pytest.raises(BackendUnavailable, match="MPS has no float64"):
        mps.enable_dtype("float64")


def test_compile_flag_turns_on_torch_compile_only_when_asked():
    backend = torch_backend()
    assert backend.compile(network.forward) is network.forward  # eager by default
    compiled = backend.configured(compile=True)
    assert compiled.compile is backend.optional_compile and compiled.optional_compile is None
    assert get_backend("jax").configured(compile=True) is get_backend("jax")  # always compiles
    with pytest.raises(BackendUnavailable, match="--compile: backend 'numpy' has no compiler"):
        get_backend("numpy").configured(compile=True)


@pytest.mark.slow
def test_torch_compile_gives_the_eager_step(rng):
    """torch.compile of the whole training step (about a minute on two cores)."""
    backend = torch_backend().configured("cpu", compile=True)
    params = init_params((784, 16, 10), seed=1, backend=backend, dtype="float32")
    x = backend.asarray(rng.random((64, 784)), "float32")
    y = backend.asarray(rng.integers(0, 10, 64), "int32")
    compiled = backend.compile(network.train_step)(params, x, y, 0.5)
    eager = network.train_step(params, x, y, 0.5)
    for key in params:
        np.testing.assert_allclose(backend.to_numpy(compiled[0][key]),
                                   backend.to_numpy(eager[0][key]), rtol=1e-5, atol=1e-6)


# --- MLX -------------------------------------------------------------------------------

def mlx_backend():
    pytest.importorskip("mlx.core", reason="MLX is not installed (multinet[mlx], or "
                                           "mlx[cpu] on Linux)")
    return get_backend("mlx")


def test_mlx_compiles_a_step_once_for_every_learning_rate(rng):
    """mx.compile traces again for each new Python number; the backend passes the rate as
    an array of the parameters' dtype, so a schedule costs no retracing. (MLX itself may
    trace once more on the second call, when the first call's inputs are still being
    evaluated asynchronously: at most two traces, however many rates.)"""
    backend = mlx_backend()
    traces = []

    def step(params, x, y, lr):
        traces.append(lr)
        return network.train_step(params, x, y, lr)

    params = init_params((784, 8, 10), seed=0, backend=backend, dtype="float32")
    x = backend.asarray(rng.random((16, 784)), "float32")
    y = backend.asarray(rng.integers(0, 10, 16), "int32")
    compiled = backend.compile(step)
    for lr in (0.5, 0.25, 0.125, 0.0625, 0.03125):
        new, loss, _ = compiled(params, x, y, lr)
        expected = network.sgd_step(params, network.loss_and_grads(params, x, y)[1], lr)
        for key in params:
            assert new[key].dtype == params[key].dtype
            np.testing.assert_allclose(backend.to_numpy(new[key]),
                                       backend.to_numpy(expected[key]), rtol=1e-5, atol=1e-6)
    assert len(traces) <= 2


def test_mlx_float64_is_refused_where_it_is_not_float64():
    backend = mlx_backend()
    import mlx.core as mx

    from multinet.backends.mlx import _float64_exp_error

    if backend.platform == "cpu" and _float64_exp_error(mx) <= 1e-13:
        backend.enable_dtype("float64")  # an MLX whose CPU float64 is float64
        return
    with pytest.raises(BackendUnavailable, match="float64"):
        backend.enable_dtype("float64")


# --- Any library by its import name ------------------------------------------------------

def test_train_through_the_generic_path(mnist):
    result = run_cli("train", "--backend", "array_api_strict", "--iterations", "3",
                     "--hidden", "8", "--json", "--no-progress", *data_args(mnist))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["backend"] == "array_api_strict" and summary["iterations"] == 3


def test_parity_through_the_generic_path(mnist):
    result = run_cli("parity", "--backend", "array_api_strict", "--samples", "256",
                     "--steps", "10", "--json", *data_args(mnist))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["backend"], r["dtype"], r["verdict"]) for r in rows] == [
        ("array_api_strict", "float32", "pass"), ("array_api_strict", "float64", "pass")]


def test_a_module_that_is_no_namespace_is_one_line(mnist):
    assert_one_line_error(run_cli("train", "--backend", "json", *data_args(mnist)),
                          "'json' is no array-API namespace")


def test_a_name_that_does_not_import_lists_the_registered_backends(mnist):
    assert_one_line_error(run_cli("train", "--backend", "no_such_library", *data_args(mnist)),
                          "unknown backend 'no_such_library'", "numpy", "torch", "mlx",
                          "import name")


def test_a_module_that_exits_on_import_is_one_line(mnist, tmp_path):
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(3)\n")
    result = run_cli("train", "--backend", "exits_on_import", *data_args(mnist),
                     env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(result, "'exits_on_import' could not be imported: SystemExit: 3")
