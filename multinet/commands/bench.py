"""``multinet bench``: the workloads timed on every backend (each in a process of its
own), with ratios to the memory floor and to PyTorch; or, with ``--devices``, JAX's
scaling over devices.

SIGTERM and SIGHUP stop a bench as Ctrl-C does (``_signals_interrupt``): the worker it
waits for is killed with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import signal
import sys
import threading

from multinet import bench
from multinet.checks import POSITIVE_INTEGER, Range
from multinet.commands import options
from multinet.errors import MultinetError, TrainingInterrupted, UnknownBackend
from multinet.machine import describe_machine, describe_threads, machine
from multinet.peers import PEERS
from multinet.registry import backend_names, get_backend

DESCRIPTION = ("Times a notebook iteration (float32, float64), an epoch of the mlp preset "
               "and inference over 10,000 images on synthetic data of MNIST's shape, each "
               "backend in its own process, after a warm-up run.")


#: Training images the bench may take: at least one batch of the mlp epoch.
SAMPLES = Range(128, integer=True)


def add_arguments(parser) -> None:
    """``--backend``, ``--workload`` (each repeatable), ``--peer``, the repeats,
    ``--devices``, ``--samples`` and ``--json``."""
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help="backend to time (repeatable; default: every available)")
    parser.add_argument("--workload", action="append", choices=bench.WORKLOADS,
                        help="workload (repeatable; default: all)")
    parser.add_argument("--peer", choices=(*PEERS, "all"),
                        help="also time the same math written natively in that library "
                             "(torch: PyTorch eager; jax: jax.value_and_grad, jit, "
                             "lax.scan; all: every one installed)")
    parser.add_argument("--repeats", type=options.in_range(POSITIVE_INTEGER), default=5,
                        help="timed runs per workload (default: 5)")
    parser.add_argument("--epoch-repeats", type=options.in_range(POSITIVE_INTEGER), default=3,
                        help="timed runs of the mlp epoch (default: 3)")
    parser.add_argument("--devices", type=options.in_range(POSITIVE_INTEGER), metavar="N",
                        help="instead: scaling of the mlp epoch over 1, 2, 4 ... N "
                             "devices (JAX; virtual CPU devices where there is no GPU)")
    parser.add_argument("--samples", type=options.in_range(SAMPLES),
                        default=59000,
                        help="training images, at least 128 (default: 59,000, as after "
                             "the dev split)")
    options.add_json_option(parser)


def run(args) -> int:
    """The table (or JSON) of the timings; SIGTERM and SIGHUP stop it as Ctrl-C does."""
    with _signals_interrupt():
        return _bench_table(args)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP end a bench as Ctrl-C does: an exception in the parent, so
    ``bench.run_in_subprocess`` kills the worker it waits for (it does on any exception)
    instead of leaving it to run on alone; one line and 128 + the signal's number. Only
    the first signal raises: a second (SIGTERM then SIGHUP, as systemd sends them) could
    raise again in the handler that kills the worker, before the kill."""
    raised = []

    def interrupt(signum, frame):
        if raised:
            return
        raised.append(signum)
        raise TrainingInterrupted(f"interrupted ({signal.Signals(signum).name}); the bench "
                                  "stopped, with any worker it was running", None, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, interrupt)
                    for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: one set outside Python
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _bench_table(args) -> int:
    # A name given twice is timed once (dict: first-seen order).
    workloads = tuple(dict.fromkeys(args.workload or bench.WORKLOADS))
    config = bench.BenchConfig(repeats=args.repeats, epoch_repeats=args.epoch_repeats,
                               workloads=workloads, samples=args.samples)
    bench.check_images_fit(config)
    if args.devices:
        if args.peer:
            raise MultinetError("bench --devices times JAX over devices, without peers: "
                                "drop --peer")
        return _bench_scaling(args, config)
    targets = list(dict.fromkeys(args.backend or backend_names()))
    if args.peer:
        wanted = PEERS if args.peer == "all" else (args.peer,)
        installed = [p for p in wanted if importlib.util.find_spec(p) is not None]
        if not installed:
            raise MultinetError(f"--peer {args.peer}: {' and '.join(wanted)} "
                                f"{'is' if len(wanted) == 1 else 'are'} not installed "
                                f"(pip install {' '.join(wanted)})")
        targets += [f"peer:{p}" for p in installed]
    rows, notes, threads, heaps = [], [], {}, {}
    if args.peer:  # --peer all where one peer library is missing: say so, not nothing
        notes += [f"peer:{p}: skipped: {p} is not installed (pip install {p})"
                  for p in wanted if p not in installed]
    for target in targets:
        if not target.startswith("peer:"):
            try:
                get_backend(target)
            except UnknownBackend:
                if args.backend:  # named on the command line: a typo, not a missing library
                    raise
                continue
            except MultinetError as exc:
                notes.append(f"{target}: skipped: {exc}")
                continue
        if not args.json:
            print(f"running {target}...", file=sys.stderr)
        result = bench.run_in_subprocess(target, config)
        if result.get("error"):
            notes.append(f"{target}: failed: {result['error']}")
        rows += result["rows"]
        if result.get("threads") is not None:
            threads[target] = result["threads"]
        heaps[target] = next((r["heap"] for r in result["rows"] if r.get("heap")), None)
    if not any("median_seconds" in r for r in rows):
        reasons = notes + [f"{r['backend']} {r['workload']}: {r.get('skipped')}" for r in rows]
        raise MultinetError("nothing was timed: " + ("; ".join(reasons) or "no backend ran"))
    rows = bench.add_ratios(rows)
    m = machine()
    if args.json:
        print(json.dumps({"machine": m, "threads": threads,
                          "config": dataclasses.asdict(config), "rows": rows, "notes": notes}))
        return 0
    _print_table(m, threads, heaps, config, rows, notes)
    return 0


def _print_table(m, threads, heaps, config, rows, notes) -> None:
    for line in describe_machine(m):
        print(line)
    for target, pools in threads.items():
        print("  " + describe_threads(target, pools)
              + (f"; heap: {heaps[target]}" if heaps.get(target) else ""))
    epochs = f" ({config.epoch_repeats} for an epoch)" if "mlp-epoch" in config.workloads else ""
    print(f"median of {config.repeats}{epochs} after one warm-up run; x peer: against "
          "PyTorch eager; x best: against the fastest peer (named) of the workload; both "
          "on the same platform (CPU or GPU)")
    print(f"{'backend':<16} {'workload':<17} {'dtype':<8} {'median':>10} {'min-max':>17} "
          f"{'samples/s':>11} {'x floor':>8} {'x peer':>7} {'x best':>7} {'best peer':<15} "
          f"{'first run':>10} {'host MB':>8}")
    for r in rows:
        if "median_seconds" not in r:
            print(f"{r['backend'][:16]:<16} {r['workload']:<17} {r['dtype']:<8} skipped: "
                  f"{r.get('skipped')}")
            continue
        spread = f"{_milliseconds(r['min_seconds'])}-{_milliseconds(r['max_seconds'])} ms"
        ratio = lambda key: f"{r[key]:.2f}" if key in r else "-"
        print(f"{r['backend'][:16]:<16} {r['workload']:<17} {r['dtype']:<8} "
              f"{_milliseconds(r['median_seconds']):>7} ms {spread:>17} "
              f"{r['samples_per_second']:>11,.0f} {ratio('x_floor'):>8} {ratio('x_peer'):>7} "
              f"{ratio('x_best_peer'):>7} {r.get('best_peer', '-')[:15]:<15} "
              f"{r['first_seconds'] * 1e3:>7.0f} ms {r['peak_host_bytes'] / 2**20:>8.0f}")
    for note in notes:
        print(note)


def _milliseconds(seconds: float) -> str:
    """At least three significant digits, never in exponent form: ``0.285``, ``43.8``,
    ``3,914``."""
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 1000 else f"{ms:.3g}"


def _bench_scaling(args, config) -> int:
    names = args.backend or ["jax"]
    backend = get_backend(names[0])
    if len(names) > 1 or backend.data_parallel is None:
        raise MultinetError("bench --devices measures JAX's data parallelism: --backend jax")
    try:
        rows = bench.scaling(args.devices, config, backend.name)
    except RuntimeError as exc:
        raise MultinetError(str(exc)) from None
    if args.json:
        print(json.dumps({"machine": machine(), "rows": rows}))
        return 0
    print(f"mlp epoch, split over devices (median of {config.epoch_repeats}):")
    print(f"{'devices':>7} {'median':>11} {'samples/s':>11} {'speedup':>8} {'efficiency':>10}")
    for r in rows:
        print(f"{r['devices']:>7} {r['median_seconds'] * 1e3:>8.1f} ms "
              f"{r['samples_per_second']:>11,.0f} {r['speedup']:>8.2f} {r['efficiency']:>10.2f}")
    return 0
