"""``multinet bench``: how fast each backend runs multinet's workloads, side by side.

Workloads, on synthetic data of MNIST's shape (uint8 pixels, seeded):

* ``floor``: one read of the 59,000 x 784 float32 training images (a sum over them), on
  the backend's device: the memory floor of a full-batch iteration, which must read them.
* ``notebook-float32`` / ``notebook-float64``: one full-batch iteration of the notebook's
  784-10-10 network (forward, backprop, update), images resident and scaled.
* ``mlp-epoch``: one epoch of ``--preset mlp`` (784-512-256-10, Adam, batches of 128:
  460 compiled steps, each gathering and scaling its batch on the device).
* ``cnn-epoch``: the first ``cnn_batches`` batches of an epoch of ``--preset cnn`` (its
  layers, Adam, batches of 128), through the same compiled step or scan as ``mlp-epoch``;
  a whole epoch of 460 batches costs minutes on two cores, so the row names the batches
  it ran (``batches``) and the epoch's (``epoch_batches``), and ``epoch_seconds`` scales
  the median to the whole epoch.
* ``inference``: predictions for the 10,000 test images (uint8 in, labels out).

Where a backend captures steps as CUDA graphs (``Backend.capture_step``), the notebook
iteration, the ``mlp`` epoch and inference get a row ``NAME (captured)`` too: the same
function captured once and replayed (``multinet.captured``).

Each backend runs in its own process (so one library's threads and memory do not
disturb another's, and its peak host memory is its own). Every workload is run once to
warm up (that first run, compilation included, is reported on its own), then
``repeats`` times with ``synchronize`` before every clock read; the median and the
spread (min and max) are reported, with samples per second, the ratio to the same
backend's memory floor and, with ``--peer torch|jax|all``, to the same math written
natively (``multinet.peers``; rows marked ``"peer"``): ``x_peer`` against PyTorch eager,
``x_best_peer`` against the fastest peer row of the workload, named in ``best_peer``
(both on the row's own platform, CPU or GPU).
Beside the torch backend's row, ``x_peer`` is the cost of writing the network to the
standard rather than in PyTorch.

The report names the machine (``multinet.machine``): the processor from ``/proc/cpuinfo``, the
cores this process may use, the GPUs, library versions, and, per process, the BLAS and
OpenMP pools each library loaded with their thread counts (threadpoolctl, the
``bench`` extra), since the same bench ranks the libraries differently on different
processors.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from multinet import optim
from multinet.captured import captured_call, captured_epoch, captured_predict, flatten
from multinet.checks import describe_device
from multinet.data import scale_images
from multinet.errors import MultinetError
from multinet.heap import retain_freed_memory
from multinet.initializers import draw_layer_params, init_params, to_backend
from multinet.machine import thread_pools
from multinet.registry import get_backend
from multinet.training.config import FEATURES, PRESETS, TrainConfig
from multinet.training.memory import physical_memory
from multinet.training.prediction import make_predictor
from multinet.training.splits import DeviceSplit, full_batch_inputs
from multinet.training.state import own_copy
from multinet.training.steps import make_epoch_runner, make_minibatch_step, make_step

WORKLOADS = ("floor", "notebook-float32", "notebook-float64", "mlp-epoch", "cnn-epoch",
             "inference")


@dataclass
class BenchConfig:
    samples: int = 59000
    test_samples: int = 10000
    repeats: int = 5
    #: An epoch takes seconds, not milliseconds: fewer repeats by default.
    epoch_repeats: int = 3
    workloads: tuple = WORKLOADS
    seed: int = 0
    mlp_sizes: tuple = (784, 512, 256, 10)
    batch_size: int = 128
    notebook_sizes: tuple = (784, 10, 10)
    #: The hidden layers of the cnn epoch (the output ``dense:10`` is added), as text.
    cnn_layers: tuple = PRESETS["cnn"]["layers"]
    #: Batches per timed cnn "epoch": 20 of 460 keep a bench run within minutes.
    cnn_batches: int = 20
    extra: dict = field(default_factory=dict)


def synthetic_data(config: BenchConfig):
    rng = np.random.default_rng(config.seed)
    features = config.notebook_sizes[0]
    return {
        "images": rng.integers(0, 256, (config.samples, features), dtype=np.uint8),
        "labels": rng.integers(0, 10, config.samples).astype(np.int32),
        "test_images": rng.integers(0, 256, (config.test_samples, features), dtype=np.uint8),
        "order": rng.permutation(config.samples)[: config.samples // config.batch_size
                                                 * config.batch_size]
                  .reshape(-1, config.batch_size).astype(np.int32),
    }


def cnn_network(config: BenchConfig):
    """The cnn epoch's network and its starting parameters, the same for every backend
    and peer.

    Parameters
    ----------
    config : BenchConfig
        ``cnn_layers`` (the hidden layers as text; the output ``dense:10`` is added, as
        ``--preset cnn`` adds it) and ``seed``.

    Returns
    -------
    tuple
        ``(layers, params)``: the whole network as ``Layer`` records, and float64 NumPy
        parameters in multinet's layout (conv ``W`` ``(k, k, C_in, C_out)``, dense ``W``
        ``(fan_in, units)``), He-initialised as ``--preset cnn`` is
        (``initializers.draw_layer_params``).

    Raises
    ------
    ValueError
        For layers that cannot be read or do not fit 28 x 28 images.
    """
    layers = TrainConfig.from_preset("cnn", layers=tuple(config.cnn_layers)).network_layers()
    return layers, draw_layer_params(layers, FEATURES, seed=config.seed, init="he")


def cnn_batches(config: BenchConfig) -> tuple[int, int]:
    """The batches of the timed cnn epoch.

    Parameters
    ----------
    config : BenchConfig
        ``cnn_batches``, ``samples`` and ``batch_size``.

    Returns
    -------
    tuple of int
        ``(timed, whole)``: the batches a timed cnn epoch runs (``cnn_batches``, at most
        the whole epoch) and the whole epoch's (``samples // batch_size``).
    """
    whole = config.samples // config.batch_size
    return min(config.cnn_batches, whole), whole


def images_bytes(config: BenchConfig) -> int:
    """Host memory a worker needs at least, in bytes: the synthetic uint8 training and
    test images and one float32 copy of the training images (which the floor and the
    notebook iteration read); each library adds its own on top."""
    features = config.notebook_sizes[0]
    return config.samples * features * (1 + 4) + config.test_samples * features


def check_images_fit(config: BenchConfig) -> None:
    """Raise ``MultinetError`` before any worker starts where the images alone
    (``images_bytes``) exceed the memory this machine (or its container) has, the bound
    ``multinet train`` checks against too (``training.memory.physical_memory``)."""
    needed, memory = images_bytes(config), physical_memory()
    if memory and needed > memory:
        raise MultinetError(f"--samples {config.samples}: the images alone need "
                            f"{needed / 2**30:,.1f} GiB, and this machine has "
                            f"{memory / 2**30:,.1f} GiB")


def measure(run, synchronize, repeats: int) -> dict:
    """Time ``run()`` once cold and ``repeats`` times warm; ``synchronize(result)`` before
    every clock read, so asynchronous libraries are timed for the work, not the launch."""
    start = time.perf_counter()
    synchronize(run())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        synchronize(run())
        times.append(time.perf_counter() - start)
    return {"first_seconds": first, "median_seconds": statistics.median(times),
            "min_seconds": min(times), "max_seconds": max(times), "repeats": repeats}


def _sync_for(backend):
    return lambda result: backend.synchronize(*flatten(result)[0])


def bench_backend(name: str, config: BenchConfig) -> list[dict]:
    """All workloads on one backend, in this process."""
    backend = get_backend(name)
    # As `multinet train` does (multinet.heap); the peers' processes keep glibc's defaults.
    heap_status = (retain_freed_memory() if config.extra.get("retain_heap", True)
                   else "allocator default")
    devices = config.extra.get("devices")
    if devices:
        backend = backend.data_parallel(devices)
    xp = backend.xp
    data = synthetic_data(config)
    synchronize = _sync_for(backend)
    split = DeviceSplit.from_host(backend, data["images"], data["labels"])
    images, labels = split.images, split.labels
    rows = []

    def row(workload, samples, timing, dtype="float32", **extra):
        variant = extra.get("variant")
        rows.append({"backend": f"{name} ({variant})" if variant else name,
                     "version": backend.version,
                     "device": describe_device(backend.device, backend.platform),
                     "devices": backend.device_count,
                     "platform": backend.platform, "workload": workload,
                     "dtype": dtype, "samples": samples, **timing,
                     "samples_per_second": samples / timing["median_seconds"],
                     "peak_device_bytes": backend.peak_memory(), "heap": heap_status,
                     **extra})

    def captured(workload, samples, timing, dtype="float32"):
        """``workload`` again, its step captured (``timing()``), where the backend can."""
        if backend.capture_step is not None:
            row(workload, samples, timing(), dtype, variant="captured")
        elif backend.platform == "gpu" and backend.compile_scan is None:
            rows.append({"backend": f"{name} (captured)", "variant": "captured",
                         "workload": workload, "dtype": dtype, "heap": heap_status,
                         "skipped": f"{name} {backend.version} captures no steps here"})

    def epoch_timing(params, order, layers=None, capture=False):
        """The step or program `multinet train` runs, over the batches of ``order``.
        Where the backend compiles runs of steps, train runs them SCAN_STEPS at a time
        (to answer signals) and the bench as one: the same time within the noise
        (docs/performance.md)."""
        optimizer = optim.Optimizer("adam")
        state = optim.init_state(optimizer, params)
        order = backend.batch_asarray(order, "int32")
        run_epoch = make_epoch_runner(backend, optimizer, "float32", layers=layers)
        in_place = config.extra.get("in_place", backend.mutable_arrays)
        step = backend.compile(make_minibatch_step(optimizer, in_place, layers=layers))
        if capture:  # the same step, captured (each epoch from the same state, as below)
            return measure(captured_epoch(backend, step, params, state, images, labels, order,
                                          backend.asarray(np.asarray(1e-3), "float32")),
                           synchronize, config.epoch_repeats)

        def epoch():
            if run_epoch is not None:
                return run_epoch(params, state, images, labels, order,
                                 [1e-3] * order.shape[0])[0]
            p, s = params, state
            if in_place:  # as `multinet train` does: on arrays of the run's own
                p, s = own_copy(backend, p), own_copy(backend, s)
            for i in range(order.shape[0]):
                p, s, loss, _ = step(p, s, images, labels, order[i, :], 1e-3)
            return p

        return measure(epoch, synchronize, config.epoch_repeats)

    for workload in config.workloads:
        if workload == "floor":
            x = scale_images(images, xp.float32)
            total = backend.compile(lambda x: xp.sum(x))
            row("floor", config.samples, measure(lambda: total(x), synchronize, config.repeats))
            del x
        elif workload.startswith("notebook-"):
            dtype = workload.split("-", 1)[1]
            try:
                backend.enable_dtype(dtype)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                rows.append({"backend": name, "workload": workload, "dtype": dtype,
                             "skipped": str(exc), "heap": heap_status})
                continue
            # Exactly what `multinet train` runs for a full-batch iteration.
            x, x_t = full_batch_inputs(backend, split, dtype)
            params = init_params(config.notebook_sizes, seed=0, backend=backend, dtype=dtype)
            optimizer = optim.Optimizer("sgd")
            opt_state = optim.init_state(optimizer, params)
            step = backend.compile(make_step(optimizer, backend.fuse_chunk))
            row(workload, config.samples,
                measure(lambda: step(params, opt_state, x, labels, 0.2, x_t), synchronize,
                        config.repeats), dtype)
            lr = backend.asarray(np.asarray(0.2), dtype)
            captured(workload, config.samples, lambda: measure(captured_call(
                backend, step, params, opt_state, x, labels, lr, x_t), synchronize,
                config.repeats), dtype)
            del x, x_t
        elif workload == "mlp-epoch":
            params = init_params(config.mlp_sizes, seed=0, backend=backend, dtype="float32",
                                 init="he")
            row("mlp-epoch", data["order"].size, epoch_timing(params, data["order"]))
            captured("mlp-epoch", data["order"].size,
                     lambda: epoch_timing(params, data["order"], capture=True))
        elif workload == "cnn-epoch":
            layers, host = cnn_network(config)
            timed, whole = cnn_batches(config)
            timing = epoch_timing(to_backend(host, backend, "float32"), data["order"][:timed],
                                  layers)
            row("cnn-epoch", timed * config.batch_size, timing, batches=timed,
                epoch_batches=whole, epoch_seconds=timing["median_seconds"] * whole / timed)
        elif workload == "inference":
            params = init_params(config.mlp_sizes, seed=0, backend=backend, dtype="float32",
                                 init="he")
            test = backend.asarray(data["test_images"])
            predict = make_predictor(backend)
            row("inference", config.test_samples,
                measure(lambda: predict(params, test), lambda result: None, config.repeats))
            captured("inference", config.test_samples, lambda: measure(
                captured_predict(backend, params, test), lambda result: None, config.repeats))
    return rows


def _worker_command(target: str, config: BenchConfig, entry: str = __name__) -> list[str]:
    return [sys.executable, "-m", entry, target, json.dumps(asdict(config))]


def run_in_subprocess(target: str, config: BenchConfig, timeout: float = 3600,
                      env: dict | None = None, entry: str = __name__) -> dict:
    """Run one backend (or a peer, ``peer:torch``) in a fresh process; its rows and
    peak RSS. ``entry``: the module the worker runs as ``python -m`` (one that calls
    ``worker_main``; ``multinet bench``'s words its messages for the command line).
    A worker that fails gives ``{"error": its last line of stderr}``.

    Waited for in half seconds, killed on any exception: a signal the kernel hands to
    another of this process's threads (BLAS's, as it did to one of SIGTERM and SIGHUP
    sent at once, as systemd sends them) does not end a wait in ``poll``, and its handler
    (``multinet bench``'s, which stops the worker) ran only once the worker had finished
    all its timing."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(_worker_command(target, config, entry), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})}) as worker:
        try:
            while True:
                try:
                    stdout, stderr = worker.communicate(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
        except BaseException:
            worker.kill()
            raise
    if worker.returncode != 0:
        reason = (stderr.strip().splitlines() or ["no output"])[-1]
        return {"target": target, "error": reason, "rows": []}
    return json.loads(stdout.strip().splitlines()[-1])


def scaling(devices: int, config: BenchConfig, backend: str = "jax",
            entry: str = __name__) -> list[dict]:
    """The ``mlp`` epoch on 1, 2, 4, ... ``devices`` devices (each in its own process),
    with speedup and efficiency against one device. On a machine without accelerators
    the devices are virtual CPU devices sharing its cores (XLA_FLAGS). ``entry``: as for
    ``run_in_subprocess``."""
    counts = sorted({n for n in (2 ** k for k in range(8)) if n < devices} | {devices})
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    rows = []
    for n in counts:
        run = dataclasses.replace(config, workloads=("mlp-epoch",), extra={"devices": n})
        result = run_in_subprocess(backend, run, env=env, entry=entry)
        if result.get("error"):
            raise RuntimeError(f"{backend} on {n} devices: {result['error']}")
        rows += result["rows"]
    base = rows[0]["median_seconds"]
    for row in rows:
        row["speedup"] = base / row["median_seconds"]
        row["efficiency"] = row["speedup"] / row["devices"]
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """Ratios of every time: to the memory floor of its platform (``x_floor``), to
    PyTorch eager doing the same math on the same platform (``x_peer``, the plain
    ``torch (native)`` row) and to the fastest peer row of the same workload and dtype on
    the same platform (``x_best_peer``, naming it in ``best_peer``).

    The floor of a platform is the fastest read measured on it by any library in this
    run: a slow reduction in one library must not flatter its ratios. The best peer is
    chosen per workload, so each multinet row is set against the strongest native
    formulation measured, not one library's. A row with no timed peer of its workload,
    dtype and platform (the peer skipped that dtype, or ran only on the GPU while the row
    ran on the CPU) gets no peer ratio rather than one across devices."""
    floors: dict = {}
    for r in rows:
        if r.get("workload") == "floor" and "median_seconds" in r:
            platform_ = r.get("platform", "cpu")
            floors[platform_] = min(floors.get(platform_, math.inf), r["median_seconds"])
    timed_peers = [r for r in rows if r.get("peer") and "median_seconds" in r]
    torch_eager = {(r["workload"], r["dtype"], r.get("platform", "cpu")): r["median_seconds"]
                   for r in timed_peers if r["peer"] == "torch" and not r.get("variant")}
    best: dict = {}
    for r in timed_peers:
        key = (r["workload"], r["dtype"], r.get("platform", "cpu"))
        if key not in best or r["median_seconds"] < best[key]["median_seconds"]:
            best[key] = r
    for r in rows:
        if "median_seconds" not in r:
            continue
        floor = floors.get(r.get("platform", "cpu"))
        if floor and r["workload"] != "floor":
            r["x_floor"] = r["median_seconds"] / floor
        if r.get("peer"):
            continue
        key = (r["workload"], r["dtype"], r.get("platform", "cpu"))
        peer = torch_eager.get(key)
        if peer:
            r["x_peer"] = r["median_seconds"] / peer
        fastest = best.get(key)
        if fastest and fastest["median_seconds"] > 0:
            r["x_best_peer"] = r["median_seconds"] / fastest["median_seconds"]
            r["best_peer"] = fastest["backend"]
    return rows


def worker_main(target: str, config_json: str) -> int:
    """The worker: time ``target`` and print its rows and thread pools as one JSON line.

    Parameters
    ----------
    target : str
        A backend's name, or ``peer:NAME`` for a native peer (``multinet.peers``).
    config_json : str
        A ``BenchConfig`` as JSON.

    Returns
    -------
    int
        The exit status: 0, or 2 after a ``MultinetError``, whose message alone is
        printed on stderr (the line the bench reports).
    """
    config = BenchConfig(**json.loads(config_json))
    try:
        if target.startswith("peer:"):
            rows = importlib.import_module(f"multinet.peers.{target[5:]}").bench(config)
        else:
            rows = bench_backend(target, config)
    except MultinetError as exc:
        print(exc, file=sys.stderr)
        return 2
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for r in rows:
        r["peak_host_bytes"] = peak_kb * 1024
        r.setdefault("heap", "allocator default")
    print(json.dumps({"target": target, "rows": rows, "threads": thread_pools()}))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], sys.argv[2]))
