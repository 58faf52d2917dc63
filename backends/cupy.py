"""CuPy on the current NVIDIA GPU.

CuPy runs float32 matrix products in full float32 unless ``CUPY_TF32=1`` is set in the
environment; multinet leaves that setting to the user and the parity suite expects it off.
"""

import numpy as np

from multinet.errors import BackendUnavailable
from multinet.registry import Backend


def _cuda_device_count(cupy) -> int:
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendUnavailable(
            f"CuPy {cupy.__version__} is installed but no CUDA device is available ({exc})"
        ) from None


def load() -> Backend:
    try:
        import cupy
    except ImportError:
        raise BackendUnavailable(
            "backend 'cupy' needs CuPy and an NVIDIA GPU: "
            "pip install 'multinet[cuda12]' or 'multinet[cuda13]'"
        ) from None
    count = _cuda_device_count(cupy)
    if count == 0:
        raise BackendUnavailable(
            f"CuPy {cupy.__version__} is installed but no CUDA device is available"
        )
    import array_api_compat.cupy as xp

    device = cupy.cuda.Device()

    def asarray(array, dtype=None):
        with device:
            return cupy.asarray(np.asarray(array, dtype=dtype))

    def synchronize(*arrays):
        device.synchronize()

    def describe(index):
        props = cupy.cuda.runtime.getDeviceProperties(index)
        return f"cuda:{index} ({props['name'].decode()})"

    def peak_memory():
        # CuPy's pool keeps what it has allocated, so its total is the peak in use.
        return cupy.get_default_memory_pool().total_bytes()

    return Backend(
        name="cupy",
        xp=xp,
        device=device,
        asarray=asarray,
        to_numpy=cupy.asnumpy,
        synchronize=synchronize,
        peak_memory=peak_memory,
        version=cupy.__version__,
        platform="gpu",
        devices=tuple(describe(i) for i in range(count)),
        mutable_arrays=True,
    )
