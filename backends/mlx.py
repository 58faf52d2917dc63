"""MLX on its default device: the Metal GPU on Apple silicon, the CPU elsewhere.

MLX arrays have no ``device`` (memory is unified; a computation runs where its stream
says), so the network creates its arrays without ``device=`` here. Three more things
differ from the other backends:

* MLX is lazy: nothing is computed until a value is needed. ``synchronize`` is
  ``mx.eval``, and every compiled call starts computing its results at once
  (``mx.async_eval``), as MLX's own training loops do, so that a loop of steps does not
  build one ever-growing graph.
* The Metal GPU has no float64: ``enable_dtype("float64")`` refuses it there. MLX's CPU
  has the dtype, but in MLX 0.32 its ``exp`` is only float32-accurate (measured: up to
  1.6e-6 relative error against NumPy over [-20, 0], where float64 means 1e-16), which puts the loss 2,700
  times outside the float64 parity tolerance; ``enable_dtype`` measures ``exp`` and
  refuses float64 while that is so. ``mx.array`` of a float64 NumPy array makes float32
  unless told the dtype, so ``asarray`` always names one.
* ``compile`` is ``mx.compile``, which traces again whenever a Python number argument
  changes value; the learning rate is therefore passed in as a 0-d array of the
  parameters' dtype (a scalar of another dtype would change the result's).
"""

import functools

import numpy as np

from multinet.errors import BackendUnavailable
from multinet.registry import Backend


def _floating_dtype(mx, args):
    """The dtype of the first floating-point array among ``args`` (nested in dicts)."""
    stack = list(args)
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            stack[:0] = list(item.values())
        elif isinstance(item, (tuple, list)):
            stack[:0] = list(item)
        elif isinstance(item, mx.array) and mx.issubdtype(item.dtype, mx.floating):
            return item.dtype
    return mx.float32


def _float64_exp_error(mx) -> float:
    """Largest relative error of MLX's float64 ``exp`` against NumPy's, over [-20, 0]."""
    x = np.linspace(-20.0, 0.0, 201)
    actual = np.array(mx.exp(mx.array(x, dtype=mx.float64)), dtype=np.float64)
    return float(np.max(np.abs(actual - np.exp(x)) / np.exp(x)))


def load() -> Backend:
    try:
        import mlx.core as mx
    except ImportError:
        raise BackendUnavailable(
            "backend 'mlx' needs MLX: pip install 'multinet[mlx]' "
            "(on Linux without Apple silicon: 'mlx[cpu]')"
        ) from None

    device = mx.default_device()
    on_gpu = device.type == mx.gpu

    def asarray(array, dtype=None):
        array = np.asarray(array, dtype=dtype)
        return mx.array(array, dtype=getattr(mx, array.dtype.name))

    def to_numpy(array):
        return np.array(array, copy=True)

    def enable_dtype(dtype):
        if dtype != "float64":
            return
        if on_gpu:
            raise BackendUnavailable("MLX has no float64 on the GPU (Metal): "
                                     "use --dtype float32")
        error = _float64_exp_error(mx)
        if error > 1e-13:
            raise BackendUnavailable(
                f"MLX {mx.__version__}'s float64 exp is accurate to {error:.1e} only "
                "(float32's precision), so float64 results would not be float64's: "
                "use --dtype float32")

    def synchronize(*arrays):
        mx.eval(*arrays) if arrays else mx.synchronize()

    def compile(fn):
        compiled = mx.compile(fn)

        @functools.wraps(fn)
        def run(*args):
            dtype = _floating_dtype(mx, args)
            args = [mx.array(a, dtype=dtype) if isinstance(a, float) else a for a in args]
            result = compiled(*args)
            mx.async_eval(result)
            return result

        return run

    return Backend(
        name="mlx",
        xp=mx,
        device=device,
        asarray=asarray,
        to_numpy=to_numpy,
        version=mx.__version__,
        synchronize=synchronize,
        compile=compile,
        enable_dtype=enable_dtype,
        peak_memory=mx.get_peak_memory,
        platform="gpu" if on_gpu else "cpu",
        devices=(f"{device.type.name} ({mx.device_info().get('device_name', '?')})",),
    )
