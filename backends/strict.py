"""array-api-strict: the standard and nothing else.

It rejects everything the standard does not define (NumPy-only functions, implicit
mixing of kinds, ...). The network running here is the proof that it is portable.
"""

import numpy as np

from multinet.errors import BackendUnavailable
from multinet.registry import Backend


def load() -> Backend:
    try:
        import array_api_strict as xp
    except ImportError:
        raise BackendUnavailable(
            "backend 'strict' needs array-api-strict: pip install array-api-strict"
        ) from None

    device = xp.Device("CPU_DEVICE")

    def asarray(array, dtype=None):
        array = np.asarray(array)
        return xp.asarray(array, dtype=getattr(xp, dtype or array.dtype.name), device=device)

    return Backend(
        name="strict",
        xp=xp,
        device=device,
        asarray=asarray,
        to_numpy=np.from_dlpack,
        version=xp.__version__,
        fuse_chunk=4096,
        devices=(str(device),),
        mutable_arrays=True,
    )
