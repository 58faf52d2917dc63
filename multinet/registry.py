"""The one place that picks the array library.

A *backend* bundles what the network cannot get from the array API standard itself:
which namespace and device to use, how to move NumPy data on and off the device, how to
wait for asynchronous work and how to compile a function. Backends are registered under
the entry-point group ``multinet.backends`` (multinet's own included) and loaded
lazily, so choosing one never imports the others. Any other array-API library is named
``module://IMPORT_NAME`` (``module://dask.array``, as matplotlib names its third-party
backends) and runs through the generic backend (``multinet.backends.generic``). Only
that explicit form imports a module by the name given: a mistyped name runs no code.

Precedence for the name: the explicit argument (``--backend``), then the environment
variable ``MULTINET_BACKEND``, then ``numpy``.

The registry imports no backend module: it loads them when asked, by entry point (and
the generic one by its module name), so backends sit above it and import its ``Backend``
record without a cycle.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

from multinet.errors import (BackendUnavailable, InvalidArgument, MultinetError,
                             UnknownBackend, argument)
from multinet.network import ARRAY_API_VERSION

ENTRY_POINT_GROUP = "multinet.backends"
ENV_VAR = "MULTINET_BACKEND"
#: The backend used when neither ``--backend`` nor ``MULTINET_BACKEND`` names one.
DEFAULT_BACKEND = "numpy"
#: The explicit form for a library no backend registers: ``module://`` and its import name.
MODULE_PREFIX = "module://"
#: The floating-point types multinet trains and computes in, on every backend.
DTYPES = ("float32", "float64")
#: A multi-process (multi-host) run, through JAX: where process 0 listens, how many
#: processes, which one this is, and how long to wait for all of them. Keyed by the
#: ``multinet train`` option that sets each (``--coordinator``...); the backend reads them.
DISTRIBUTED_ENV = {"coordinator": "MULTINET_COORDINATOR",
                   "num_processes": "MULTINET_NUM_PROCESSES",
                   "process_id": "MULTINET_PROCESS_ID",
                   "init_timeout": "MULTINET_INIT_TIMEOUT"}


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
    """What the core needs from an array library, beyond its array-API namespace.

    A backend module's ``load()`` returns one. What a library can do is said by these
    fields, never by its name: the core reads ``mutable_arrays``, ``compile_scan``,
    ``device_choices``... and does not ask which library it runs on.

    Attributes
    ----------
    name : str
        The registered name (``"numpy"``, ``"jax"``), or ``module://`` and the import
        name of a library reached through the generic backend.
    xp : namespace
        The array-API namespace, as ``array_api_compat.array_namespace`` returns it.
    device : object
        The device new arrays are placed on.
    asarray : callable
        ``asarray(numpy_array, dtype=None)``: copy host data onto ``device``; ``dtype`` is
        a name (``"float32"``); None keeps the NumPy dtype (so uint8 images travel small).
    to_numpy : callable
        ``to_numpy(array)``: a NumPy copy on the host.
    version : str
        The library's version, for reports.
    array_api_version : str or None
        The array API standard the namespace implements (``"2024.12"``), checked against
        ``multinet.network.ARRAY_API_VERSION`` when loaded. Default: the namespace's
        ``__array_api_version__``; None where it declares none (MLX): not checked.
    synchronize : callable
        ``synchronize(*arrays)``: block until queued work (on ``arrays``, or all) is done.
        Call it before reading a clock. Default: nothing to wait for (eager CPU
        libraries).
    compile : callable
        ``compile(fn)``: a faster equivalent of a pure function (``jax.jit`` on JAX).
        Default: ``fn`` itself.
    compile_scan : callable or None
        ``compile_scan(fn)``: ``run(carry, xs, *args) -> (carry, ys)`` applying
        ``fn(carry, x, *args) -> (carry, y)`` to each slice of ``xs`` (a tuple of arrays)
        along its first axis, compiled as one program (``jax.lax.scan`` under
        ``jax.jit``). None where one compiled call per slice is as good (eager libraries).
    scan_full_batch : bool
        Run a full-batch run's steps as one ``compile_scan`` program per stretch between
        log points (at most ``SCAN_STEPS``): where faster (JAX on a GPU; not the CPU).
    capture_step : callable or None
        ``capture_step(fn, args) -> replay``: ``fn`` (a step on a flat tuple of arrays,
        returning one) captured once as a CUDA graph; ``replay(*args)`` copies in the
        arguments not already in its buffers and returns its outputs, which the next
        replay overwrites (``backends/graphs.py``). None: no capture.
    enable_dtype : callable
        ``enable_dtype(name)``: make a dtype usable, or raise ``BackendUnavailable``; it
        may change process-wide settings (JAX's 64-bit mode), so importing never calls it.
    devices : tuple of str
        Every device the library can see, as text, for ``multinet backends``.
    platform : {"cpu", "gpu"}
        What kind of device ``device`` is (for reports and test ids).
    fuse_chunk : int or None
        Rows per chunk for full-batch steps (``training.steps.chunked_backprop``) for
        libraries that run operation by operation: each chunk's images stay in cache from
        the forward product to the gradient's. None for compilers (XLA), better with one
        large product each (docs/performance.md).
    shard : callable or None
        ``shard(numpy_array, dtype=None)``: ``asarray`` for an array whose *last* axis runs
        over a batch's samples, split over the devices (data parallel). None: ``asarray``.
    device_count : int
        Devices a batch is split over.
    process_index, process_count : int
        This process's index in a multi-host run, and how many; only 0 writes and prints.
    data_parallel : callable or None
        ``data_parallel(devices)`` -> a ``Backend`` splitting every batch over ``devices``
        devices (an int or ``"all"``), across the processes of a multi-host run where
        ``DISTRIBUTED_ENV`` names a coordinator; None: not supported.
    peak_memory : callable
        ``peak_memory()``: peak bytes allocated on the device so far; None: not tracked.
    device_choices : tuple of str
        Kinds of device ``on_device`` accepts, the default first (``("cuda", "cpu")``),
        for ``--device`` and the parity suite, which checks each. Empty: ``device`` only.
    on_device : callable or None
        ``on_device(name)`` -> this backend placing arrays on device ``name`` (a kind from
        ``device_choices`` or a precise name such as ``"cuda:1"``); raises
        ``BackendUnavailable`` where it cannot. None: one device only.
    optional_compile : callable or None
        A compiler used only on request (``--compile``): its first compilation costs more
        than a short run saves (``torch.compile``: a minute for a step on two cores).
        None: ``compile`` is all there is.
    mutable_arrays : bool
        Whether arrays can be changed in place (``x -= y``): True for NumPy, CuPy,
        PyTorch and array-api-strict, whose optimizers then update parameters and state
        in place (``multinet.optim``); False for JAX and MLX (immutable arrays, whose
        buffers XLA reuses inside a compiled program instead).
    materialize : callable or None
        ``materialize(tree) -> tree``, for a lazy library (Dask): the arrays of a nest of
        tuples and dicts computed together, as values, not graphs. Its ``compile``
        materialises what it returns, so each step starts from values, not from every
        step before it. None: arrays hold values once made.
    """

    name: str
    xp: Any
    device: Any
    asarray: Callable[..., Any]
    to_numpy: Callable[[Any], Any]
    version: str
    synchronize: Callable[..., None] = _nothing_to_wait_for
    compile: Callable[[Callable], Callable] = _no_compilation
    compile_scan: Callable[[Callable], Callable] | None = None
    scan_full_batch: bool = False
    capture_step: Callable[[Callable, tuple], Callable] | None = None
    enable_dtype: Callable[[str], None] = _any_dtype_works
    devices: tuple[str, ...] = field(default=())
    platform: str = "cpu"
    fuse_chunk: int | None = None
    shard: Callable[..., Any] | None = None
    device_count: int = 1
    process_index: int = 0
    process_count: int = 1
    data_parallel: Callable[..., Backend] | None = None
    peak_memory: Callable[[], int | None] = _not_tracked
    device_choices: tuple[str, ...] = ()
    on_device: Callable[[str], Backend] | None = None
    optional_compile: Callable[[Callable], Callable] | None = None
    mutable_arrays: bool = False
    array_api_version: str | None = None
    materialize: Callable[[Any], Any] | None = None

    def __post_init__(self):
        if self.array_api_version is None:
            # Read once, when loaded: array-api-strict can change it process-wide later.
            object.__setattr__(self, "array_api_version",
                               getattr(self.xp, "__array_api_version__", None))

    def batch_asarray(self, array, dtype=None):
        """Place an array whose last axis indexes the samples of a batch.

        Parameters
        ----------
        array : numpy.ndarray
            Host data; its last axis runs over the samples (batch indices, ``(steps,
            batch)``).
        dtype : str, optional
            A dtype's name; None keeps the NumPy dtype.

        Returns
        -------
        array
            On the device, split over the devices by ``shard`` where the backend is data
            parallel, else as ``asarray`` places it.
        """
        return (self.shard or self.asarray)(array, dtype)

    def configured(self, device: str | None = None, compile: bool = False) -> Backend:
        """This backend on ``device``, with its optional compiler if ``compile``.

        A backend that always compiles (JAX, MLX) accepts ``compile`` as it is; one with
        a single device accepts that device's kind.

        Parameters
        ----------
        device : str, optional
            A kind from ``device_choices`` (``"cuda"``) or a precise name (``"cuda:1"``);
            None: the default device.
        compile : bool
            Use ``optional_compile`` (``--compile``).

        Returns
        -------
        Backend

        Raises
        ------
        BackendUnavailable
            Saying why the device or the compiler cannot be had.
        """
        backend = self
        if device is not None and self.on_device is not None:
            backend = self.on_device(device)
        elif device is not None and device != self.platform:
            raise BackendUnavailable(f"{argument('device', device)}: backend {self.name!r} "
                                     f"runs on {self.platform} only")
        if compile and backend.optional_compile is not None:
            backend = dataclasses.replace(backend, compile=backend.optional_compile,
                                          optional_compile=None)
        elif compile and backend.compile is _no_compilation:
            raise BackendUnavailable(f"{argument('compile', True)}: backend {self.name!r} "
                                     "has no compiler; it runs operation by operation")
        return backend

    @property
    def is_primary(self) -> bool:
        """Whether this process writes checkpoints, metrics and results."""
        return self.process_index == 0

    def dtype(self, name: str):
        """The namespace's dtype object for a name.

        Parameters
        ----------
        name : str
            ``"float32"``, ``"int32"``...

        Returns
        -------
        dtype
            ``xp.float32`` and so on.

        Raises
        ------
        UnknownDtype
            Where the namespace has no such dtype.
        """
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


def check_standard(backend: Backend) -> Backend:
    """``backend`` itself, if its namespace implements the standard the network needs.

    Parameters
    ----------
    backend : Backend

    Returns
    -------
    Backend

    Raises
    ------
    BackendUnavailable
        Where ``backend.array_api_version`` is older than
        ``multinet.network.ARRAY_API_VERSION`` (or no version), naming both.
    """
    declared = backend.array_api_version
    try:
        too_old = declared is not None and (tuple(map(int, declared.split(".")))
                                            < tuple(map(int, ARRAY_API_VERSION.split("."))))
    except (AttributeError, ValueError):
        too_old = True
    if too_old:
        raise BackendUnavailable(
            f"backend {backend.name!r} ({backend.version}) implements the array API "
            f"standard {declared}; multinet's network needs {ARRAY_API_VERSION} or later")
    return backend


@functools.cache
def _load(name: str) -> Backend:
    registered = _registered()
    if name.startswith(MODULE_PREFIX):
        generic = importlib.import_module("multinet.backends.generic")
        return check_standard(generic.load(name[len(MODULE_PREFIX):]))
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none (is multinet installed?)"
        raise UnknownBackend(f"unknown backend {name!r}; known backends: {known}, or "
                             f"{MODULE_PREFIX}IMPORT_NAME for any array-API library")
    try:
        loader = registered[name].load()
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} could not be imported: {exc}") from exc
    try:
        backend = loader()
    except MultinetError:
        raise
    # A library that half works here (a platform it cannot start, a plugin that breaks)
    # is a reason this backend cannot run, said in one line, not a traceback.
    except Exception as exc:  # noqa: BLE001
        raise BackendUnavailable(f"backend {name!r} failed to start: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if backend.name != name:
        raise BackendUnavailable(
            f"entry point {name!r} returned a backend named {backend.name!r}"
        )
    return check_standard(backend)


def get_backend(name: str | None = None) -> Backend:
    """The backend for ``name`` (after the precedence rule), loaded once per process.

    Raises ``UnknownBackend`` for a name nobody registered, ``BackendUnavailable``
    (with the reason and the fix) for one that cannot run here, and ``InvalidArgument``
    for a ``name`` that is no str.
    """
    if name is not None and not isinstance(name, str):
        raise InvalidArgument(f"name must be a backend's name (a str) or None, got "
                              f"{type(name).__name__}")
    return _load(resolve_name(name))


def resolve_backend(backend: Backend | str | None = None, devices: int | str | None = None,
                    *, device: str | None = None, compile: bool = False) -> Backend:
    """The backend a run uses: the one place that turns what the user gave into one.

    Parameters
    ----------
    backend : Backend, str or None
        A ``Backend``, a backend's name (``"numpy"``, ``"jax"``, ``"module://"`` and an
        array-API library's import name), or None for ``$MULTINET_BACKEND``, else numpy.
    devices : int, "all" or None
        Split every batch over this many devices (data parallelism; JAX). None: one.
    device : str, optional
        The device to place arrays on (``"cuda"``, ``"cuda:1"``, ``"cpu"``...); None: the
        backend's default.
    compile : bool
        Use the backend's optional compiler (``torch.compile``).

    Returns
    -------
    Backend

    Raises
    ------
    UnknownBackend
        For a name nobody registered, not in the ``module://`` form.
    BackendUnavailable
        For a backend, device or compiler that cannot run here (with the reason), or a
        namespace older than the standard the network needs.
    InvalidArgument
        For a ``backend`` that is neither a name nor a ``Backend``.
    MultinetError
        For ``devices`` on a backend without data parallelism, or a multi-process run
        (``$MULTINET_COORDINATOR``) without ``devices``.
    """
    coordinator = DISTRIBUTED_ENV["coordinator"]
    if os.environ.get(coordinator) and not devices:
        raise MultinetError(f"a multi-process run (${coordinator}) needs "
                            f"{argument('devices', 'all')}")
    if backend is None or isinstance(backend, str):
        chosen = get_backend(backend)
    elif isinstance(backend, Backend):
        chosen = check_standard(backend)
    else:
        raise InvalidArgument(f"backend must be a name or a Backend, got "
                              f"{type(backend).__name__}")
    chosen = chosen.configured(device, compile)
    if not devices:
        return chosen
    if chosen.data_parallel is None:
        raise MultinetError(
            f"{argument('devices', devices)}: backend {chosen.name!r} runs on one device; "
            f"data parallelism over several devices and hosts is supported through JAX "
            f"({argument('backend', 'jax')})")
    return chosen.data_parallel(devices)


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
