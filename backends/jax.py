"""jax.numpy on JAX's default device (GPU when a CUDA build of jaxlib finds one, else CPU).

``compile`` is ``jax.jit``. Two JAX settings matter for the numbers:

* 64-bit floats are off by default in JAX. ``enable_dtype("float64")`` turns on
  ``jax_enable_x64`` for the whole process, so multinet does it only when asked (the CLI
  asks for ``--dtype float64``); importing multinet never changes JAX's configuration.
* On GPUs JAX runs float32 matrix products in TF32 by default (a 10-bit mantissa). Compiled
  multinet functions run under ``jax.default_matmul_precision("highest")`` so that float32
  means float32 on every device, which is what the parity guarantee is about. Eager calls
  (``multinet.forward(params, x)`` on JAX arrays, outside anything multinet compiled) would
  still use the default, so loading this backend on a GPU also sets JAX's process-wide
  ``jax_default_matmul_precision`` to ``"highest"``, unless the user has set it: on a GPU,
  eager float32 gradients fall outside the parity tolerance without it (docs/gpu.md).
"""

import dataclasses
import functools
import math
import os
import socket
import sys
import threading
import time

import numpy as np

from multinet.errors import BackendUnavailable
from multinet.registry import DISTRIBUTED_ENV, Backend


def load() -> Backend:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise BackendUnavailable(
            "backend 'jax' needs JAX: pip install 'multinet[jax]' "
            "(or 'multinet[cuda12]' / 'multinet[cuda13]' for NVIDIA GPUs)"
        ) from None

    _join_processes(jax)
    try:
        devices = jax.local_devices()
    # A plugin that fails raises RuntimeError; JAX_PLATFORMS naming only platforms JAX
    # skips (cuda without an NVIDIA GPU) fails an assertion inside JAX with no message.
    except (RuntimeError, AssertionError) as exc:
        raise BackendUnavailable(no_device_reason(jax, exc)) from None
    device = devices[0]
    if device.platform != "cpu" and jax.config.jax_default_matmul_precision is None:
        jax.config.update("jax_default_matmul_precision", "highest")

    def host_array(array, dtype=None):
        array = np.asarray(array, dtype=dtype)
        if array.dtype.itemsize == 8 and not jax.config.jax_enable_x64:
            raise BackendUnavailable(
                f"JAX is in 32-bit mode and would silently turn {array.dtype} into a "
                "32-bit type; call backend.enable_dtype('float64') first, or set "
                "JAX_ENABLE_X64=1"
            )
        return array

    def asarray(array, dtype=None):
        return jax.device_put(host_array(array, dtype), device)

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

    def compile_scan(fn):
        # One program for a whole run of steps: XLA updates the parameters in place
        # and overlaps the steps. Measured on an mlp epoch: 1.29 s as 460 compiled
        # steps, 0.85 s as one scan (docs/performance.md).
        def scan(carry, xs, *args):
            return jax.lax.scan(lambda c, x: fn(c, x, *args), carry, xs)

        return compile(scan)

    def peak_memory():
        stats = device.memory_stats()  # None on the CPU
        return stats.get("peak_bytes_in_use") if stats else None

    def data_parallel(devices="all"):
        return _data_parallel(base, host_array, devices)

    base = Backend(
        name="jax",
        xp=jnp,
        device=device,
        asarray=asarray,
        to_numpy=np.asarray,
        synchronize=lambda *arrays: jax.block_until_ready(arrays),
        compile=compile,
        compile_scan=compile_scan,
        # A notebook iteration on a GPU is bound by launches (0.80 ms against 0.40 ms
        # native on an H200, docs/gpu.md): chunks of steps as one program there. On the
        # CPU, the full-MNIST notebook step takes the same time either way (paired runs
        # on 2 cores: 76 and 86 ms per step one at a time, 83 and 86 ms in chunks of 10,
        # CPU time), and one step at a time answers a Ctrl-C ten times sooner.
        scan_full_batch=device.platform != "cpu",
        enable_dtype=enable_dtype,
        peak_memory=peak_memory,
        version=jax.__version__,
        platform=device.platform,
        devices=tuple(f"{d.platform}:{d.id} ({d.device_kind})" for d in devices),
        data_parallel=data_parallel,
    )
    return base


def no_device_reason(jax, exc: BaseException) -> str:
    """Why JAX found no device, in one line, with what to change.

    Parameters
    ----------
    jax : module
        The imported ``jax``.
    exc : BaseException
        What asking JAX for its devices raised (a ``RuntimeError`` from a plugin, or an
        ``AssertionError`` with no message for ``JAX_PLATFORMS`` it cannot start).

    Returns
    -------
    str
        Never empty; with ``JAX_PLATFORMS`` set, it says how to change it.
    """
    # JAX's own advice ends its message; ours replaces it.
    detail = str(exc).split("\n")[0].split(" (set JAX_PLATFORMS")[0]
    platforms = jax.config.jax_platforms  # JAX_PLATFORMS, or what the program set
    if not platforms:
        return f"JAX {jax.__version__} found no usable device: {detail}"
    detail = detail or ("none of those platforms can start here (NVIDIA GPUs need a GPU "
                        "and the CUDA plugin: pip install 'multinet[cuda12]')")
    return (f"JAX {jax.__version__} found no usable device for JAX_PLATFORMS={platforms!r}: "
            f"{detail}; unset JAX_PLATFORMS or set JAX_PLATFORMS=cpu")


#: A multi-process (multi-host) run: where process 0 listens, how many processes, and
#: which one this is. ``multinet train --coordinator/--num-processes/--process-id`` sets them.
COORDINATOR_ENV = tuple(DISTRIBUTED_ENV[flag]
                        for flag in ("coordinator", "num_processes", "process_id"))


#: Seconds a process waits for the whole multi-process run to come together, unless
#: ``MULTINET_INIT_TIMEOUT`` (``--init-timeout``) says otherwise. JAX's own default is 300 s,
#: after which it aborts the process (SIGABRT, a C++ stack trace).
INIT_TIMEOUT = 60.0
INIT_TIMEOUT_ENV = DISTRIBUTED_ENV["init_timeout"]


def _join_processes(jax) -> None:
    """``jax.distributed.initialize`` from the environment, before JAX picks devices.

    Says on stderr what it waits for and for how long. A process other than 0 first waits
    for the coordinator's port to accept connections, and gives up with a one-line error
    naming the address when nothing answers in time. JAX itself cannot be stopped from
    aborting the process when its deadline passes, so a watchdog thread ends the process
    first, with one line and exit status 2.
    """
    address, count, index = (os.environ.get(name) for name in COORDINATOR_ENV)
    if not address:
        return
    if count is None or index is None:
        raise BackendUnavailable(f"{COORDINATOR_ENV[0]} needs {COORDINATOR_ENV[1]} and "
                                 f"{COORDINATOR_ENV[2]} too")
    try:
        count, index = int(count), int(index)
    except ValueError:
        raise BackendUnavailable(f"{COORDINATOR_ENV[1]} and {COORDINATOR_ENV[2]} must be "
                                 f"integers, got {count!r} and {index!r}") from None
    if not 0 <= index < count:
        raise BackendUnavailable(f"process id {index} is not among the {count} processes "
                                 f"(0 to {count - 1})")
    timeout = _init_timeout()
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackendUnavailable(f"coordinator {address!r}: expected HOST:PORT, with a "
                                 "port from 1 to 65535")
    host = host.strip("[]")  # an IPv6 literal, [::1]:1234
    print(f"multinet: process {index} of {count}: joining the run at {address}, waiting up "
          f"to {timeout:g} s for all {count} processes (--init-timeout)", file=sys.stderr,
          flush=True)
    deadline = time.monotonic() + timeout
    if index > 0:
        _wait_for_coordinator(host, int(port), address, deadline, timeout)
    remaining = max(deadline - time.monotonic(), 1.0)
    watchdog = threading.Timer(remaining, _give_up, args=(
        f"the multi-process run at {address} did not come together within {timeout:g} s "
        f"(this is process {index} of {count}): start all {count} processes with the same "
        "--coordinator and --num-processes, or allow longer with --init-timeout",))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=count,
                                   process_id=index,
                                   initialization_timeout=int(math.ceil(remaining)) + 30)
    except (RuntimeError, ValueError) as exc:
        raise BackendUnavailable(f"jax.distributed could not join {address}: {exc}") from None
    finally:
        watchdog.cancel()


def _init_timeout() -> float:
    text = os.environ.get(INIT_TIMEOUT_ENV)
    if not text:
        return INIT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BackendUnavailable(f"{INIT_TIMEOUT_ENV}={text!r}: expected seconds > 0")
    return value


def _wait_for_coordinator(host: str, port: int, address: str, deadline: float,
                          timeout: float) -> None:
    """Until ``deadline``: try to connect to process 0's port, every half second."""
    while True:
        try:
            with socket.create_connection((host, port),
                                          timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except socket.gaierror as exc:
            raise BackendUnavailable(f"coordinator {address}: cannot resolve {host!r} "
                                     f"({exc.strerror})") from None
        except OSError:
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"nothing answers at the coordinator {address} after {timeout:g} s: is "
                    f"process 0 running there, and can this host reach {host} port {port}? "
                    "(allow longer with --init-timeout)") from None
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _give_up(message: str) -> None:
    sys.stderr.write(f"multinet: error: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def _data_parallel(base: Backend, host_array, devices) -> Backend:
    """The same backend with every batch split over a one-axis mesh of devices.

    Parameters, optimizer state and the (uint8) images are replicated on every device;
    the indices of each batch are split along the batch, so each device gathers and
    processes only its share, and XLA (GSPMD) inserts the all-reduce of the gradients
    when it compiles the step. With a coordinator, ``jax.distributed`` joins several
    processes (hosts) into one mesh, and each process places only the shards of its own
    devices.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    available = jax.devices()  # every process's devices, in a multi-process run
    count = len(available) if devices == "all" else int(devices)
    if not 1 <= count <= len(available):
        raise BackendUnavailable(
            f"--devices {devices}: JAX sees {len(available)} device(s) "
            f"({', '.join(sorted({d.platform for d in available}))}); on a CPU, "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N virtual devices")
    if count < len(available) and jax.process_count() > 1:
        raise BackendUnavailable("a multi-process run uses every device: --devices all")
    mesh = Mesh(np.array(available[:count]), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(array, dtype, sharding):
        array = host_array(array, dtype)
        # Each process materializes only what its own devices hold.
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    def asarray(array, dtype=None):
        return place(array, dtype, replicated)

    def shard(array, dtype=None):
        array = np.asarray(array)
        if array.shape[-1] % count:
            raise BackendUnavailable(f"a batch of {array.shape[-1]} samples does not split "
                                     f"evenly over {count} devices")
        spec = PartitionSpec(*([None] * (array.ndim - 1)), "batch")
        return place(array, dtype, NamedSharding(mesh, spec))

    def to_numpy(array):
        if getattr(array, "is_fully_addressable", True):
            return np.asarray(array)
        # Replicated across processes: any local copy is the whole value.
        return np.asarray(array.addressable_data(0))

    return dataclasses.replace(
        base, asarray=asarray, shard=shard, to_numpy=to_numpy, device=mesh,
        device_count=count, process_index=jax.process_index(),
        process_count=jax.process_count(), data_parallel=None,
        devices=tuple(f"{d.platform}:{d.id}" for d in available[:count]))
