"""``multinet bench``: the workloads timed on every backend (each in a process of its
own), with ratios to the memory floor and to PyTorch; or, with ``--devices``, JAX's
scaling over devices.

SIGTERM and SIGHUP stop a bench as Ctrl-C does (``signals_interrupt``): the worker it
waits for is killed with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import signal
import sys
import textwrap
import threading

from multinet import bench
from multinet.checks import POSITIVE_INTEGER, Range
from multinet.commands import options
from multinet.commands.wording import WORDING
from multinet.errors import MultinetError, TrainingInterrupted, UnknownBackend, spelled
from multinet.machine import WIDTH, describe_machine, describe_threads, machine
from multinet.peers import PEERS
from multinet.registry import backend_names, get_backend

DESCRIPTION = ("Times a notebook iteration (float32, float64), an epoch of the mlp preset, "
               "the first batches of an epoch of the cnn preset and inference over 10,000 "
               "images on synthetic data of MNIST's shape, each backend in its own "
               "process, after a warm-up run.")


#: The module each worker runs: ``multinet.bench``'s worker, its messages worded for the
#: command line (``--dtype``, not ``dtype=``), as the command's own are.
WORKER = "multinet.commands.bench"

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
                        help="timed runs of the mlp and cnn epochs (default: 3)")
    parser.add_argument("--cnn-batches", type=options.in_range(POSITIVE_INTEGER),
                        default=bench.BenchConfig.cnn_batches, metavar="N",
                        help="batches of 128 in a timed cnn epoch (default: "
                             f"{bench.BenchConfig.cnn_batches}; a whole epoch is 460, at "
                             "most all that --samples holds); the row states both and "
                             "the time scaled to the whole epoch")
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
    with signals_interrupt("the bench stopped, with any worker it was running"):
        return _bench_table(args)


@contextlib.contextmanager
def signals_interrupt(stopped: str):
    """SIGTERM and SIGHUP end a command as Ctrl-C does (``multinet bench``'s, and
    ``parity``'s): an exception, ``TrainingInterrupted``, whose one line is
    "interrupted (SIGTERM); " and ``stopped``, and exit status 128 + the signal's number.
    In the bench, the exception makes ``bench.run_in_subprocess`` kill the worker it
    waits for (it does on any exception) instead of leaving it to run on alone. Only the
    first signal raises: a second (SIGTERM then SIGHUP, as systemd sends them) could
    raise again in the handler that kills the worker, before the kill.

    Parameters
    ----------
    stopped : str
        What stopped, for the line: ``"the parity check stopped"``.

    Raises
    ------
    TrainingInterrupted
        Within the block, at the first SIGTERM or SIGHUP.
    """
    raised = []

    def interrupt(signum, frame):
        if raised:
            return
        raised.append(signum)
        raise TrainingInterrupted(f"interrupted ({signal.Signals(signum).name}); {stopped}",
                                  None, signum)

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
                               workloads=workloads, samples=args.samples,
                               cnn_batches=args.cnn_batches)
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
            except TrainingInterrupted:  # a signal while the backend loads: not a skip
                raise
            except UnknownBackend:
                if args.backend:  # named on the command line: a typo, not a missing library
                    raise
                continue
            except MultinetError as exc:
                notes.append(f"{target}: skipped: {exc}")
                continue
        if not args.json:
            print(f"running {target}...", file=sys.stderr)
        result = bench.run_in_subprocess(target, config, entry=WORKER)
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


#: The table's columns: (heading, width); the legend under the table says what each is.
COLUMNS = (("backend", 16), ("workload", 16), ("median ms", 9), ("spread", 6),
           ("samples/s", 10), ("x floor", 7), ("x peer", 6), ("x best", 6),
           ("first ms", 8), ("host MB", 7))


def _print_table(m, threads, heaps, config, rows, notes) -> None:
    """The machine, the table (under 100 columns: minima, maxima, devices and the rest
    are in ``--json``), a legend of its columns, then the notes."""
    for line in describe_machine(m):
        print(line)
    for target, pools in threads.items():
        _print_wrapped("  " + describe_threads(target, pools)
                       + (f"; heap: {heaps[target]}" if heaps.get(target) else ""), "    ")
    print(" ".join(f"{name:<{width}}" if i < 2 else f"{name:>{width}}"
                   for i, (name, width) in enumerate(COLUMNS)))
    for r in rows:
        start = f"{r['backend'][:16]:<16} {r['workload']:<16}"
        if "median_seconds" not in r:
            _print_wrapped(f"{start} skipped: {r.get('skipped')}", " " * 34)
            continue
        spread = (r["max_seconds"] - r["min_seconds"]) / r["median_seconds"]
        ratio = lambda key: f"{r[key]:.2f}" if key in r else "-"
        print(f"{start} {_milliseconds(r['median_seconds']):>9} {spread:>6.0%} "
              f"{r['samples_per_second']:>10,.0f} {ratio('x_floor'):>7} {ratio('x_peer'):>6} "
              f"{ratio('x_best_peer'):>6} {_milliseconds(r['first_seconds']):>8} "
              f"{r['peak_host_bytes'] / 2**20:>7,.0f}")
    for line in _legend(config, rows, heaps):
        _print_wrapped(line)
    for note in notes:
        _print_wrapped(note)


def _print_wrapped(text: str, indent: str = "  ") -> None:
    """``text`` in lines of at most ``WIDTH`` characters, the later ones indented."""
    for line in textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False,
                              break_long_words=False):
        print(line)


def _legend(config, rows, heaps) -> list[str]:
    """What each column of the table is, in lines under 100 characters."""
    epochs = (f" ({config.epoch_repeats} of an epoch)"
              if {"mlp-epoch", "cnn-epoch"} & set(config.workloads) else "")
    best = {}
    for r in rows:
        if r.get("best_peer"):
            best.setdefault(r["best_peer"], []).append(r["workload"])
    lines = [
        f"median ms: of {config.repeats} timed runs{epochs}, after one warm-up run; "
        "spread: (max - min) / median",
        "every workload in float32 but notebook-float64; samples/s: images through the "
        "workload per second",
        "x floor: time / the floor workload's (one read of the training images, the least "
        "a full-batch",
        "  iteration can cost), the fastest measured on the same platform (CPU or GPU)",
        "x peer: time / PyTorch eager's (peer torch (native)); x best: time / the fastest "
        "peer's, both",
        "  for the same workload on the same platform; '-': no such row was timed "
        "(see --peer)",
        "first ms: the warm-up run, compilation included; host MB: the process's peak "
        "resident memory",
    ]
    cnn = next((r for r in rows if r.get("workload") == "cnn-epoch" and "batches" in r), None)
    if cnn:
        lines.append(f"cnn-epoch: the first {cnn['batches']} of an epoch's "
                     f"{cnn['epoch_batches']} batches (--cnn-batches); a whole epoch takes "
                     f"{cnn['epoch_batches'] / cnn['batches']:.3g}x the time shown")
    if any(r.get("variant") == "captured" for r in rows):
        lines.append("NAME (captured): the same step captured once as a CUDA graph and "
                     "replayed; first ms: with the capture")
    if best:
        lines.append("fastest peer: " + "; ".join(
            f"{peer} ({', '.join(dict.fromkeys(workloads))})" for peer, workloads in best.items()))
    if any(heaps.values()):
        lines += ["heap (above): retained: the worker keeps freed memory for the next step, "
                  "as 'multinet train'",
                  "  does (multinet.heap); allocator default: the C library's own policy "
                  "(the peers')"]
    return lines


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
        rows = bench.scaling(args.devices, config, backend.name, entry=WORKER)
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


if __name__ == "__main__":  # a worker of this command (WORKER)
    with spelled(WORDING):
        sys.exit(bench.worker_main(sys.argv[1], sys.argv[2]))
