"""The PyTorch backend (``backends/torch.py``), beyond the parity suite that runs it
like every other backend: the device it prefers and the ones it refuses, float64 on MPS,
and ``torch.compile`` only when asked."""

import numpy as np
import pytest

from helpers import assert_one_line_error, data_args, run_cli
from multinet import network
from multinet.errors import BackendUnavailable
from multinet.initializers import init_params
from multinet.registry import get_backend


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
    with pytest.raises(BackendUnavailable, match="compile=True: backend 'numpy' has no compiler"):
        get_backend("numpy").configured(compile=True)
    # The command line names its flag, in the same message.
    assert_one_line_error(run_cli("train", "--compile", "--iterations", "1"),
                          "--compile: backend 'numpy' has no compiler")


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
