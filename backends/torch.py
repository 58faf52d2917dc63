"""PyTorch through ``array_api_compat.torch``: CUDA when present, else Apple's MPS, else
the CPU; ``--device`` (``on_device``) chooses another.

Three settings matter for the numbers:

* PyTorch runs float32 matrix products in full float32 unless told otherwise
  (``torch.get_float32_matmul_precision() == "highest"``, TF32 off, on CUDA the
  default since PyTorch 1.12). multinet leaves that setting to the user, and the parity
  suite expects it off: ``torch.set_float32_matmul_precision("high")`` turns on TF32,
  whose 10-bit mantissa no float32 tolerance allows.
* MPS has no float64: ``enable_dtype("float64")`` refuses it there.
* ``compile`` is eager; ``torch.compile`` is the ``optional_compile`` that
  ``--compile`` turns on. Its first compilation of a training step takes about a
  minute on two CPU cores (measured: 62 s, then 17 s once more when the learning rate
  changes and it makes the rate an input), more than a notebook run takes eagerly.
* ``capture_step``, on CUDA devices only: a training step captured once as a CUDA graph
  (``torch.cuda.CUDAGraph`` under ``torch.cuda.graph``, after a warm-up on a side stream,
  as PyTorch's "CUDA Graphs" notes do it) over static buffers and replayed
  (``backends.graphs``). ``torch.compile(mode="reduce-overhead")`` would capture graphs
  too, but only after the compilation ``compile`` avoids; the bench can time it against
  this (``--compile``).
"""

import functools
import warnings

import numpy as np

from multinet.backends import graphs
from multinet.errors import BackendUnavailable
from multinet.registry import Backend


def _kinds(torch) -> tuple[str, ...]:
    """Device kinds present here, in order of preference."""
    kinds = []
    if torch.cuda.is_available():
        kinds.append("cuda")
    if torch.backends.mps.is_available():
        kinds.append("mps")
    return (*kinds, "cpu")


def _describe(torch, kind) -> list[str]:
    if kind == "cuda":
        return [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                for i in range(torch.cuda.device_count())]
    return [kind]


def _device(torch, name, kinds):
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in kinds:
        raise BackendUnavailable(f"--device {name}: PyTorch {torch.__version__} can use "
                                 f"{', '.join(kinds)} here")
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise BackendUnavailable(f"--device {name}: PyTorch sees "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", index)
    return device


def _compile(torch, fn):
    compiled = torch.compile(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        # Dynamo warns that it traces through array-api-compat's lru_cache'd helpers; they
        # only look up namespaces, so the warning says nothing about multinet's results.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Dynamo detected a call to a "
                                    "`functools.lru_cache`")
            return compiled(*args, **kwargs)

    return run


def _record(torch, device, call):
    """``backends.graphs``'s ``record`` through ``torch.cuda.CUDAGraph``."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(graphs.WARMUP_CALLS):
            call()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # torch.cuda.graph captures on a stream of its own, into a memory pool of the
    # graph's: a buffer each replay writes is never handed to another tensor.
    with torch.cuda.device(device), torch.cuda.graph(graph):
        outputs = call()
    return outputs, graph.replay


def _copy_into(destination, source):
    destination.copy_(source)


def _capture_step(torch, device, fn, args):
    return graphs.capture(fn, args, clone=torch.clone, copy_into=_copy_into,
                          record=functools.partial(_record, torch, device))


def _on(torch, xp, name, kinds) -> Backend:
    device = _device(torch, name, kinds)

    def asarray(array, dtype=None):
        return torch.asarray(np.asarray(array, dtype=dtype), device=device, copy=True)

    def to_numpy(array):
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu()
        return np.asarray(array)

    def enable_dtype(dtype):
        if dtype == "float64" and device.type == "mps":
            raise BackendUnavailable("MPS has no float64: use --dtype float32, "
                                     "or --device cpu")

    def synchronize(*arrays):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    def peak_memory():
        # The caching allocator's high-water mark; MPS and the CPU report none.
        return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    return Backend(
        name="torch",
        xp=xp,
        device=device,
        asarray=asarray,
        to_numpy=to_numpy,
        version=torch.__version__,
        synchronize=synchronize,
        enable_dtype=enable_dtype,
        peak_memory=peak_memory,
        platform="cpu" if device.type == "cpu" else "gpu",
        devices=tuple(d for kind in kinds for d in _describe(torch, kind)),
        device_choices=kinds,
        on_device=lambda other: _on(torch, xp, other, kinds),
        optional_compile=functools.partial(_compile, torch),
        mutable_arrays=True,
        capture_step=(functools.partial(_capture_step, torch, device)
                      if device.type == "cuda" else None),
        # No chunks (fuse_chunk None), even on the CPU: a full-batch notebook step on
        # 59,000 images took 0.39-0.80 s in one pass (with the transposed copy x_t) and
        # 2.1-2.9 s in chunks of 4,096 rows, whose many small operations each pay
        # PyTorch's threading overhead (on two cores; docs/performance.md).
    )


def load() -> Backend:
    try:
        import torch
    except ImportError:
        raise BackendUnavailable(
            "backend 'torch' needs PyTorch: pip install 'multinet[torch]'"
        ) from None
    import array_api_compat.torch as xp

    kinds = _kinds(torch)
    return _on(torch, xp, kinds[0], kinds)
