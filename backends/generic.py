"""Any array-API library by its import name, with no plugin code.

``--backend module://NAME`` lands here (``multinet.registry.MODULE_PREFIX``). The
module ``NAME`` is an array-API namespace when it declares ``__array_api_version__``
(array-api-strict, ndonnx, NumPy >= 2.0 ...) or when array-api-compat wraps it
(``array_api_compat.NAME``: as it does ``dask.array``). Everything else the ``Backend`` record needs comes from the
standard itself: devices and dtypes from ``__array_namespace_info__`` (2023.12), host
copies through DLPack, the kind of device from ``__dlpack_device__``. What the standard
does not say (how to wait for queued work, how to compile) stays at the defaults: no
waiting, no compiler; a library that needs more deserves a registered backend.

One thing is taken from the library beyond the standard, because without it a lazy
library's training cost grows with the square of the steps: where the library's package
offers ``persist`` (Dask's collection protocol: compute these arrays together and keep
the results as arrays of the same kind), it becomes ``Backend.materialize``, and
``compile`` materialises what the compiled function returns.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as device_of

from multinet.backends.jax import no_device_reason
from multinet.checks import describe_device
from multinet.errors import BackendUnavailable
from multinet.registry import MODULE_PREFIX, Backend, check_standard

#: DLPack device types whose memory the host reads directly (kDLCPU, kDLCUDAHost,
#: kDLROCMHost), from dlpack.h.
_HOST_DLPACK_DEVICES = (1, 3, 11)


def importable(name: str) -> bool:
    """Whether ``name`` is a module that could be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, an empty or relative name
        return False


def namespace(name: str):
    """``(module, xp)``: the imported module and the namespace its arrays use.

    Raises ``BackendUnavailable`` when the module cannot be imported or is no namespace.
    """
    try:
        module = importlib.import_module(name)
    # Any failure of a user's module, said in one line: a script's sys.exit() too.
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise BackendUnavailable(f"module {name!r} could not be imported: "
                                 f"{type(exc).__name__}: {exc}") from None
    candidate = module if hasattr(module, "__array_api_version__") else _compat_wrapper(name)
    if candidate is None:
        raise BackendUnavailable(
            f"module {name!r} is no array-API namespace: it has no __array_api_version__ "
            "and array-api-compat does not wrap it")
    try:
        xp = array_namespace(candidate.asarray(np.zeros(1, np.float32)))
    except Exception as exc:  # noqa: BLE001
        raise BackendUnavailable(f"module {name!r}: asarray() of a NumPy array failed: "
                                 f"{_reason(name, exc)}") from None
    return module, xp


def _reason(name: str, exc: BaseException) -> str:
    """Why ``exc`` was raised, never empty: its type, its message, or what it means."""
    if name.split(".")[0] == "jax" and isinstance(exc, (RuntimeError, AssertionError)):
        # JAX fails so (an assertion with no message) when JAX_PLATFORMS names only
        # platforms it cannot start: the registered backend words that case.
        jax = importlib.import_module("jax")
        if jax.config.jax_platforms:
            return no_device_reason(jax, exc)
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else (
        f"{type(exc).__name__} with no message, raised inside the library")


def _compat_wrapper(name: str):
    try:
        wrapper = importlib.import_module(f"array_api_compat.{name}")
    except ImportError:
        return None
    return wrapper if hasattr(wrapper, "__array_api_version__") else None


def _platform(array) -> str:
    try:
        kind, _ = array.__dlpack_device__()
    except (AttributeError, TypeError, BufferError):
        return "cpu"
    return "cpu" if int(kind) in _HOST_DLPACK_DEVICES else "gpu"


def _materializer(package):
    """``materialize(tree) -> tree`` from the package's ``persist``, or None without one."""
    persist = getattr(package, "persist", None)
    if not callable(persist):
        return None

    def materialize(tree):
        # One call for the whole tree: what its arrays share (a step's forward and
        # backward pass) is computed once, not once per array.
        return persist(tree)[0]

    return materialize


def _materializing(materialize):
    """``compile(fn)``: ``fn``, whose results are materialised before they are returned."""
    def compile(fn):
        @functools.wraps(fn)
        def materialized(*args, **kwargs):
            return materialize(fn(*args, **kwargs))

        return materialized

    return compile


def load(name: str) -> Backend:
    """The generic backend for module ``name`` (an import name, without ``module://``).

    Parameters
    ----------
    name : str
        The module's import name (``array_api_strict``, ``dask.array``).

    Returns
    -------
    Backend
        Named ``module://NAME``, as ``--backend`` takes it.

    Raises
    ------
    BackendUnavailable
        Where the module cannot be imported, is no array-API namespace, implements an
        older standard than the network needs, or fails while the backend is built.
    """
    module, xp = namespace(name)
    top = importlib.import_module(name.split(".")[0])
    version = str(getattr(module, "__version__", getattr(top, "__version__", "?")))
    # Before anything newer than the declared standard is called (array-api-strict
    # refuses ``__array_namespace_info__`` below 2023.12 with a RuntimeError).
    check_standard(Backend(name=MODULE_PREFIX + name, xp=xp, device=None,
                           asarray=xp.asarray, to_numpy=np.asarray, version=version))
    try:
        return _build(name, xp, top, version)
    except BackendUnavailable:
        raise
    # Whatever the library raises while it is asked for its devices and dtypes.
    except Exception as exc:  # noqa: BLE001
        raise BackendUnavailable(f"module {name!r} failed while its backend was built: "
                                 f"{_reason(name, exc)}") from None


def _build(name: str, xp, top, version: str) -> Backend:
    """``load``'s record, from a namespace that implements the standard the network needs."""
    info = xp.__array_namespace_info__() if hasattr(xp, "__array_namespace_info__") else None
    sample = xp.asarray(np.zeros(1, np.float32))
    if info is not None:
        device = info.default_device()
    else:
        try:
            device = device_of(sample)
        except AttributeError:
            device = None
    placement = {} if device is None else {"device": device}

    def asarray(array, dtype=None):
        array = np.asarray(array, dtype=dtype)
        return xp.asarray(array, dtype=getattr(xp, array.dtype.name), **placement)

    def to_numpy(array):
        try:
            return np.from_dlpack(array)
        except (AttributeError, TypeError, BufferError, RuntimeError):
            return np.asarray(array)

    def enable_dtype(dtype):
        if not hasattr(xp, dtype):
            raise BackendUnavailable(f"{name} has no {dtype}")
        floating = info.dtypes(kind="real floating", **placement) if info is not None else {}
        if dtype.startswith("float") and info is not None and dtype not in floating:
            raise BackendUnavailable(f"{name} has no {dtype} on {device}")

    if info is not None:
        with warnings.catch_warnings():
            # array-api-compat's torch info tries every device type, deprecated ones too.
            warnings.simplefilter("ignore")
            devices = tuple(map(describe_device, info.devices()))
    else:
        devices = (describe_device(device),)
    materialize = _materializer(top)
    lazy = {} if materialize is None else {"materialize": materialize,
                                           "compile": _materializing(materialize)}
    return Backend(
        name=MODULE_PREFIX + name,
        xp=xp,
        device=device,
        asarray=asarray,
        to_numpy=to_numpy,
        version=version,
        enable_dtype=enable_dtype,
        platform=_platform(sample),
        devices=devices,
        **lazy,
    )
