"""CuPy on the current NVIDIA GPU.

CuPy runs float32 matrix products in full float32 unless ``CUPY_TF32=1`` is set in the
environment; multinet leaves that setting to the user and the parity suite expects it off.

``capture_step`` captures a training step as a CUDA graph through CuPy's stream capture
(``Stream.begin_capture``/``end_capture``, ``Graph.launch``), with the memory the capture
allocates taken from a pool of the graph's own (``backends.graphs``), where this CuPy can
capture the step's matrix products: CuPy up to 14.2 (and its main branch of 2026-08)
refuses any cuBLAS call on a capturing stream ("calling cuBLAS API during stream capture
is currently unsupported", ``cupy_backends/cuda/libs/cublas.pyx``, ``setStream``), so a
one-product probe at ``load`` decides, and the field is None where it is refused.
"""

import functools

import numpy as np

from multinet.backends import graphs
from multinet.errors import BackendUnavailable
from multinet.registry import Backend


def _cuda_device_count(cupy) -> int:
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendUnavailable(
            f"CuPy {cupy.__version__} is installed but no CUDA device is available ({exc})"
        ) from None


def _capture_refusal(cupy) -> str | None:
    """Why this CuPy cannot capture a matrix product on a stream, or None where it can."""
    a = cupy.ones((2, 2), dtype=cupy.float32)
    a @ a  # the cuBLAS handle, created outside any capture
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            a @ a
        except NotImplementedError as exc:
            return f"CuPy {cupy.__version__} cannot capture cuBLAS calls ({exc})"
        finally:
            stream.end_capture()
    return None


def _record(cupy, call):
    """``backends.graphs``'s ``record`` through CuPy's stream capture."""
    for _ in range(graphs.WARMUP_CALLS):
        call()
    # What the capture allocates comes from a pool nothing else allocates from: a buffer
    # the graph writes at every replay is never handed to another array. Arrays the
    # captured call freed go back to that pool, for its own later allocations only.
    pool = cupy.cuda.MemoryPool()
    # Not the legacy default stream, on which CUDA allows no capture.
    stream = cupy.cuda.Stream(non_blocking=True)
    with cupy.cuda.using_allocator(pool.malloc), stream:
        stream.begin_capture()
        try:
            outputs = call()
        except BaseException:
            try:  # leave capture mode; the error that stopped the capture is the one to see
                stream.end_capture()
            except cupy.cuda.runtime.CUDARuntimeError:
                pass
            raise
        graph = stream.end_capture()

    def launch():
        graph.launch(cupy.cuda.get_current_stream())

    launch.owns = (pool, stream)  # they live as long as the graph that uses them
    return outputs, launch


def _capture_step(cupy, fn, args):
    def copy_into(destination, source):
        cupy.copyto(destination, source)

    return graphs.capture(fn, args, clone=cupy.copy, copy_into=copy_into,
                          record=functools.partial(_record, cupy))


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

    try:
        refusal = _capture_refusal(cupy)
    except cupy.cuda.runtime.CUDARuntimeError as exc:  # a driver without stream capture
        refusal = f"CuPy {cupy.__version__} cannot capture a stream here ({exc})"
    capture_step = None if refusal else functools.partial(_capture_step, cupy)

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
        capture_step=capture_step,
    )
