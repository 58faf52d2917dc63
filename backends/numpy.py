"""NumPy on the CPU: the reference every other backend is compared with."""

import array_api_compat.numpy as xp
import numpy as np

from multinet.registry import Backend


def _asarray(array, dtype=None):
    return np.asarray(array, dtype=dtype)


def load() -> Backend:
    return Backend(
        name="numpy",
        xp=xp,
        device="cpu",
        asarray=_asarray,
        to_numpy=np.asarray,
        version=np.__version__,
        fuse_chunk=4096,
        devices=("cpu",),
        mutable_arrays=True,
    )
