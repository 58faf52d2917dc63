"""The CuPy backend (``backends/cupy.py``) where it cannot run: CuPy missing, or no CUDA
device. It says why, and what to install, in one line from the command."""

import sys
import types

import pytest

from helpers import assert_one_line_error, run_cli
from multinet.errors import BackendUnavailable


def test_missing_package_says_what_to_install(monkeypatch):
    from multinet.backends import cupy as cupy_backend

    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(BackendUnavailable, match=r"pip install 'multinet\[cuda12\]'"):
        cupy_backend.load()


def test_cupy_without_cuda_device_says_so(monkeypatch):
    from multinet.backends import cupy as cupy_backend

    class CUDARuntimeError(RuntimeError):
        pass

    def no_device():
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    runtime = types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=no_device)
    fake = types.SimpleNamespace(__version__="14.0.0", cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(BackendUnavailable, match="CuPy 14.0.0 is installed but no CUDA device"):
        cupy_backend.load()


def test_unavailable_backend_is_one_line_and_exit_2():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed here; this checks the no-CuPy message")
    assert_one_line_error(run_cli("train", "--backend", "cupy"), "cupy", "pip install")
