"""The one place that picks the array library.

A *backend* bundles what the network cannot get from the array API standard itself:
which namespace and device to use, how to move NumPy data on and off the device, how to
wait for asynchronous work and how to compile a function. Backends are registered under
the entry-point group ``multinet.backends`` (multinet's own included) and loaded
lazily, so choosing one never imports the others. A name nobody registered may be the
import name of any array-API library (``array_api_strict``): it runs through the
generic backend (``multinet.backends.generic``), with no plugin code.

Precedence for the name: the explicit argument (``--backend``), then the environment
variable ``MULTINET_BACKEND``, then ``numpy``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

from multinet.backends import DEFAULT_BACKEND
from multinet.errors import BackendUnavailable, UnknownBackend

ENTRY_POINT_GROUP = "multinet.backends"
ENV_VAR = "MULTINET_BACKEND"


def _any_dtype_works(dtype: str) -> None:
    """Default for ``Backend.enable_dtype``: most libraries support every float dtype."""


def _no_compilation(fn):
    return fn


def _not_tracked() -> None:
    """Default for ``Backend.peak_memory``: the library does not say."""


def _nothing_to_wait_for(*arrays) -> None:
    """Default for ``Backend.synchronize``: eager CPU libraries are never behind."""


@dataclass(frozen=True)
class Backend:
    """What the core needs from an array library, beyond its array-API namespace."""

    name: str
    #: The array-API namespace, as ``array_api_compat.array_namespace`` returns it.
    xp: Any
    #: The device new arrays are placed on.
    device: Any
    #: ``asarray(numpy_array, dtype=None)``: copy host data onto ``device``; ``dtype`` is
    #: a name ("float32"); ``None`` keeps the NumPy dtype (so uint8 images travel small).
    asarray: Callable[..., Any]
    #: ``to_numpy(array)``: a NumPy copy on the host.
    to_numpy: Callable[[Any], Any]
    #: ``version``: the library's version string, for reports.
    version: str
    #: ``synchronize(*arrays)``: block until queued work (on ``arrays``, or all) is done.
    #: Call it before reading a clock.
    synchronize: Callable[..., None] = _nothing_to_wait_for
    #: ``compile(fn)``: a faster equivalent of a pure function (``jax.jit`` on JAX).
    compile: Callable[[Callable], Callable] = _no_compilation
    #: ``compile_scan(fn)``: ``run(carry, xs, *args) -> (carry, ys)`` applying
    #: ``fn(carry, x, *args) -> (carry, y)`` to each slice of ``xs`` (a tuple of arrays)
    #: along its first axis, compiled as one program (``jax.lax.scan`` under ``jax.jit``).
    #: None where calling the compiled step once per slice is as good (eager libraries).
    compile_scan: Callable[[Callable], Callable] | None = None
    #: ``enable_dtype(name)``: make a dtype usable, or raise ``BackendUnavailable``. This
    #: may change the library's process-wide settings (JAX's 64-bit mode), which is why
    #: it is an explicit call and never a side effect of importing multinet.
    enable_dtype: Callable[[str], None] = _any_dtype_works
    #: Every device the library can see, as text, for ``multinet backends``.
    devices: tuple[str, ...] = field(default=())
    #: What kind of device ``device`` is: "cpu" or "gpu" (for reports and test ids).
    platform: str = "cpu"
    #: Rows per chunk for full-batch steps (``multinet.train.chunked_backprop``), for
    #: libraries that run operation by operation: each chunk's images stay in cache from
    #: the forward product to the gradient's. None for compilers (XLA) that do better
    #: with one large product each (measured in docs/performance.md).
    fuse_chunk: int | None = None
    #: ``shard(numpy_array, dtype=None)``: like ``asarray`` for an array whose *last* axis
    #: runs over the samples of a batch; a data-parallel backend splits that axis over its
    #: devices. None: ``asarray``.
    shard: Callable[..., Any] | None = None
    #: Devices a batch is split over, this process's index among the processes of a
    #: multi-host run (only process 0 writes files and prints results), and how many.
    device_count: int = 1
    process_index: int = 0
    process_count: int = 1
    #: ``data_parallel(devices, coordinator=None, num_processes=None, process_id=None)``
    #: -> a ``Backend`` that splits every batch over ``devices`` devices (an int or
    #: "all"), across processes when a coordinator is given. None: not supported.
    data_parallel: Callable[..., "Backend"] | None = None
    #: ``peak_memory()``: peak bytes allocated on the device so far, or None where the
    #: library does not track it (host memory is measured by the process instead).
    peak_memory: Callable[[], int | None] = _not_tracked
    #: Kinds of device ``on_device`` accepts, the default first (``("cuda", "cpu")``),
    #: for ``--device`` and for the parity suite, which checks each. Empty: ``device`` only.
    device_choices: tuple[str, ...] = ()
    #: ``on_device(name)`` -> this backend placing arrays on device ``name`` (a kind from
    #: ``device_choices`` or a precise name such as ``"cuda:1"``); raises
    #: ``BackendUnavailable`` where it cannot. None: one device only.
    on_device: Callable[[str], "Backend"] | None = None
    #: ``optional_compile(fn)``: a compiler used only on request (``--compile``), because
    #: its first compilation costs more than a short run saves (``torch.compile``: about a
    #: minute for a training step on two cores); ``compile`` stays eager. None: ``compile`` is all there is.
    optional_compile: Callable[[Callable], Callable] | None = None
    #: Whether the library's arrays can be changed in place (the array API's in-place
    #: operators, ``x -= y``): True for NumPy, CuPy, PyTorch and array-api-strict, whose
    #: optimizers then update parameters and state in place (``multinet.optim``) instead
    #: of allocating new arrays every step; False for JAX and MLX, whose arrays are
    #: immutable (XLA reuses their buffers inside a compiled program instead).
    mutable_arrays: bool = False

    def batch_asarray(self, array, dtype=None):
        """Place an array whose last axis indexes the samples of a batch (see ``shard``)."""
        return (self.shard or self.asarray)(array, dtype)

    def configured(self, device: str | None = None, compile: bool = False) -> "Backend":
        """This backend on ``device`` (``--device``), with its optional compiler if
        ``compile`` (``--compile``); raises ``BackendUnavailable`` saying why not.

        A backend that always compiles (JAX, MLX) accepts ``compile`` as it is; one with
        a single device accepts that device's kind.
        """
        backend = self
        if device is not None and self.on_device is not None:
            backend = self.on_device(device)
        elif device is not None and device != self.platform:
            raise BackendUnavailable(f"--device {device}: backend {self.name!r} runs on "
                                     f"{self.platform} only")
        if compile and backend.optional_compile is not None:
            backend = dataclasses.replace(backend, compile=backend.optional_compile,
                                          optional_compile=None)
        elif compile and backend.compile is _no_compilation:
            raise BackendUnavailable(f"--compile: backend {self.name!r} has no compiler; "
                                     "it runs operation by operation")
        return backend

    @property
    def is_primary(self) -> bool:
        """Whether this process writes checkpoints, metrics and results."""
        return self.process_index == 0

    def dtype(self, name: str):
        """The namespace's dtype object for a name such as ``"float32"``."""
        try:
            return getattr(self.xp, name)
        except AttributeError:
            raise UnknownDtype(f"backend {self.name!r} has no dtype {name!r}") from None


class UnknownDtype(BackendUnavailable):
    """The backend's namespace has no such dtype."""


@functools.cache
def _registered() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # multinet's own entry wins a name clash, so a stray plugin cannot hijack "numpy".
        if ep.name not in found or ep.value.startswith("multinet.backends."):
            found[ep.name] = ep
    return found


def backend_names() -> list[str]:
    """Every registered backend name, available here or not."""
    return sorted(_registered())


def resolve_name(name: str | None = None) -> str:
    """Apply the precedence rule: argument, then ``MULTINET_BACKEND``, then the default."""
    return name or os.environ.get(ENV_VAR) or DEFAULT_BACKEND


@functools.cache
def _load(name: str) -> Backend:
    registered = _registered()
    if name not in registered:
        # Not registered: any importable array-API module, through the generic backend.
        from multinet.backends import generic

        if generic.importable(name):
            return generic.load(name)
        known = ", ".join(sorted(registered)) or "none (is multinet installed?)"
        raise UnknownBackend(f"unknown backend {name!r}; known backends: {known}, or the "
                             "import name of an array-API library")
    try:
        loader = registered[name].load()
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} could not be imported: {exc}") from exc
    backend = loader()
    if backend.name != name:
        raise BackendUnavailable(
            f"entry point {name!r} returned a backend named {backend.name!r}"
        )
    return backend


def get_backend(name: str | None = None) -> Backend:
    """The backend for ``name`` (after the precedence rule), loaded once per process.

    Raises ``UnknownBackend`` for a name nobody registered and ``BackendUnavailable``
    (with the reason and the fix) for one that cannot run here.
    """
    return _load(resolve_name(name))


def as_backend(backend: Backend | str | None) -> Backend:
    """Accept a ``Backend``, a name or ``None`` wherever a backend is expected."""
    return backend if isinstance(backend, Backend) else get_backend(backend)


def describe_backends() -> list[dict[str, Any]]:
    """One record per registered backend: available or not and why, version, devices.

    This loads every backend, so it imports every installed array library.
    """
    rows = []
    for name in backend_names():
        try:
            backend = _load(name)
        except BackendUnavailable as exc:
            rows.append({"name": name, "available": False, "reason": str(exc),
                         "version": None, "devices": []})
        else:
            rows.append({"name": name, "available": True, "reason": None,
                         "version": backend.version, "devices": list(backend.devices)})
    return rows
