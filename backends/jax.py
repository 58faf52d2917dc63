"""jax.numpy on JAX's default device (GPU when a CUDA build of jaxlib finds one, else CPU).

``compile`` is ``jax.jit``. Two JAX settings matter for the numbers:

* 64-bit floats are off by default in JAX. ``enable_dtype("float64")`` turns on
  ``jax_enable_x64`` for the whole process, so multinet does it only when asked (the CLI
  asks for ``--dtype float64``); importing multinet never changes JAX's configuration.
* On GPUs JAX may run float32 matrix products in TF32. Compiled multinet functions run
  under ``jax.default_matmul_precision("highest")`` so that float32 means float32 on every
  device, which is what the parity guarantee is about.
"""

import functools

import numpy as np

from multinet.errors import BackendUnavailable
from multinet.registry import Backend


def load() -> Backend:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise BackendUnavailable(
            "backend 'jax' needs JAX: pip install 'multinet[jax]' "
            "(or 'multinet[cuda12]' / 'multinet[cuda13]' for NVIDIA GPUs)"
        ) from None

    try:
        devices = jax.devices()
    except RuntimeError as exc:  # a broken plugin or an unusable JAX_PLATFORMS setting
        raise BackendUnavailable(f"JAX {jax.__version__} found no usable device: {exc}") from None
    device = devices[0]

    def asarray(array, dtype=None):
        array = np.asarray(array, dtype=dtype)
        if array.dtype.itemsize == 8 and not jax.config.jax_enable_x64:
            raise BackendUnavailable(
                f"JAX is in 32-bit mode and would silently turn {array.dtype} into a "
                "32-bit type; call backend.enable_dtype('float64') first, or set "
                "JAX_ENABLE_X64=1"
            )
        return jax.device_put(array, device)

    def enable_dtype(dtype):
        if dtype in ("float64", "int64") and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)

    def compile(fn):
        jitted = jax.jit(fn)

        @functools.wraps(fn)
        def run_at_full_precision(*args, **kwargs):
            with jax.default_matmul_precision("highest"):
                return jitted(*args, **kwargs)

        return run_at_full_precision

    def peak_memory():
        stats = device.memory_stats()  # None on the CPU
        return stats.get("peak_bytes_in_use") if stats else None

    return Backend(
        name="jax",
        xp=jnp,
        device=device,
        asarray=asarray,
        to_numpy=np.asarray,
        synchronize=lambda *arrays: jax.block_until_ready(arrays),
        compile=compile,
        enable_dtype=enable_dtype,
        peak_memory=peak_memory,
        version=jax.__version__,
        platform=device.platform,
        devices=tuple(f"{d.platform}:{d.id} ({d.device_kind})" for d in devices),
    )
