"""The machine a measurement ran on, for reports that must be compared across machines:
processor (with the numbers that tell its generation), cores, memory, GPUs, library
versions, and the BLAS and OpenMP pools each process loaded with their threads."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import textwrap
import time
from importlib.metadata import PackageNotFoundError, version

# The bench and parity reports name their device with it from here; it is defined in a
# layer that the training loop, which names a run's device, can import too.

#: The width reports are kept within, in characters.
WIDTH = 100


def _cpu() -> dict:
    """The processor as the kernel names it (``platform.processor()`` says only
    "x86_64" on Linux): model name, family and model numbers (which tell AMD's Zen
    generations apart where the name is just "AMD EPYC"), and the vector extensions that
    decide how fast a matrix product can run."""
    info = {"model": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            text = file.read().split("\n\n", 1)[0]
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["model"] = fields.get("model name", info["model"])
    for key in ("vendor_id", "cpu family", "model", "stepping"):
        if key in fields:
            info[key.replace(" ", "_") if key != "model" else "model_number"] = fields[key]
    flags = set(fields.get("flags", "").split())
    info["vector"] = [f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags]
    return info


def _gpus() -> list[str]:
    """NVIDIA GPUs as ``nvidia-smi`` names them (empty where there is none)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def thread_pools() -> list[dict]:
    """The BLAS and OpenMP libraries loaded in this process, with their thread counts
    (threadpoolctl), or one entry saying why they are not known.

    threadpoolctl is the bench's own dependency (``pip install 'multinet[bench]'``),
    imported here only, so training never needs it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed: pip install 'multinet[bench]'"}]
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
            "architecture", "prefix")
    return [{k: pool.get(k) for k in keep if pool.get(k) is not None}
            for pool in threadpool_info()]


def _versions() -> dict:
    """Installed versions of the libraries the bench can run (read from the package
    metadata: nothing is imported)."""
    found = {}
    for name in ("multinet", "numpy", "jax", "jaxlib", "torch", "mlx", "cupy-cuda12x",
                 "cupy-cuda13x", "array-api-strict", "array-api-compat", "threadpoolctl"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def machine() -> dict:
    """What a reader needs to compare this run with another: processor, cores, memory,
    GPUs, library versions, and the BLAS NumPy uses here with its threads (each
    backend's own, as it loaded them, is in the report's ``threads`` per target)."""
    try:  # NumPy, imported above, has loaded its BLAS: thread_pools() sees it
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    return {"platform": platform.platform(), "cpu": _cpu(), "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "memory_bytes": memory, "gpus": _gpus(), "python": platform.python_version(),
            "versions": _versions(), "numpy_threads": thread_pools(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%d")}


def describe_machine(m: dict) -> list[str]:
    """The machine in a few lines of text, for the table's header."""
    cpu = m["cpu"]
    generation = (f" (family {cpu['cpu_family']}, model {cpu['model_number']})"
                  if "cpu_family" in cpu else "")
    lines = [f"{m['date']}: {cpu['model']}{generation}, {m['cpus']} CPUs"
             f" ({m['usable_cpus']} usable), {', '.join(cpu.get('vector', [])) or 'no AVX2'}"
             + (f", {m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else "")
             + (f"; load average {m['load_average'][0]:.2f}" if m.get("load_average") else "")]
    if m["gpus"]:
        lines.append("GPU: " + "; ".join(m["gpus"]))
    lines += textwrap.wrap("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
                           WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    return lines


def describe_threads(target: str, pools: list[dict]) -> str:
    parts = [p["note"] if "note" in p else
             f"{p.get('internal_api')} {p.get('version') or ''}".strip()
             + f" ({p.get('num_threads')} threads"
             + (f", {p['threading_layer']}" if p.get("threading_layer") else "")
             + (f", {p['architecture']}" if p.get("architecture") else "") + ")"
             for p in pools]
    return f"{target}: " + ("; ".join(parts) or "no BLAS or OpenMP pool loaded")
