"""Keep freed memory in the process between training steps (glibc's malloc only).

An eager library (NumPy, PyTorch on a CPU, array-api-strict) allocates a new array for
every operation of a step and frees it a moment later. glibc's malloc gives memory back
to the kernel as soon as more than its trim threshold lies free at the top of the heap,
and serves blocks above its mmap threshold with fresh pages of their own; both start at
128 KiB, and freeing a block that had pages of its own raises the mmap threshold to its
size (up to 32 MiB) and the trim threshold to twice that (glibc's ``free``, ``man 3
mallopt``). A training step's temporaries together (6.6 MiB; the largest, a 784 x 512
float32 gradient, 1.6 MB) outgrow twice its largest block, so every step hands its
memory back and the next one faults every page in again: measured on the ``mlp`` preset
on NumPy, 1,690 page faults a step, and 0.02 with the settings below (counted by
``tests/test_heap.py``); a step takes half the time (``docs/performance.md``).

``retain_freed_memory`` raises both thresholds for the rest of the process, fixed
(glibc's ``mallopt``, which also ends glibc's adjusting of them): blocks up to
``MMAP_THRESHOLD`` come from the heap and up to ``TRIM_THRESHOLD`` of free heap is kept
for the next step. Blocks larger than ``MMAP_THRESHOLD`` (a full-batch copy of the
images) still go straight back to the kernel. What the process keeps: up to
``TRIM_THRESHOLD`` free at the top of the heap, and freed blocks below one still in use,
until reused or ``release_free_memory`` (as glibc's defaults keep them once a block that
large has been freed; measured: 20 freed 20 MiB arrays under small live ones stay
resident either way until ``malloc_trim``). Elsewhere (macOS, Windows, musl) it does
nothing: those allocators need no help here or take none. Whoever has set these
thresholds (``USER_SETTINGS``, or the same names in ``GLIBC_TUNABLES``) keeps them:
nothing is changed then.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: The largest block served from the heap: glibc's own maximum on 64-bit systems
#: (``DEFAULT_MMAP_THRESHOLD_MAX``); larger values are refused by ``mallopt``.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory kept at the top of the heap before any is returned to the kernel.
TRIM_THRESHOLD = 64 * 1024 * 1024

# mallopt's parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Environment variables by which a user sets glibc's heap thresholds (and their kin) already.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_")
#: The same settings as glibc tunables (``GLIBC_TUNABLES=name=value:...``, ``man 7
#: tunables``). Others (``glibc.malloc.arena_max``, as ``MALLOC_ARENA_MAX``) set nothing
#: that raising these thresholds would override, so they do not stop it.
USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold",
                 "glibc.malloc.top_pad", "glibc.malloc.mmap_max")


def _glibc():
    """glibc's C library, or None where the process does not run on glibc."""
    try:  # libc_ver reads sys.executable where glibc does not answer (musl): it may be gone
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return None
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _user_tuned(environ) -> str | None:
    for name in USER_SETTINGS:
        if name in environ:
            return name
    tunables = environ.get("GLIBC_TUNABLES", "").split(":")
    for name in USER_TUNABLES:
        if any(t.partition("=")[0] == name for t in tunables):
            return f"GLIBC_TUNABLES {name}"
    return None


def retain_freed_memory(environ=None) -> str:
    """Raise glibc's mmap and trim thresholds for this process; what was done, in words.

    Safe to call more than once. Returns ``"retained"`` when the thresholds were set,
    otherwise why not (``"not glibc"``, ``"MALLOC_TRIM_THRESHOLD_ set by the user"``,
    ``"mallopt refused"``). Never raises.
    """
    environ = os.environ if environ is None else environ
    tuned = _user_tuned(environ)
    if tuned:
        return f"{tuned} set by the user"
    libc = _glibc()
    if libc is None:
        return "not glibc"
    try:
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except AttributeError:
        return "mallopt missing"
    return "retained" if ok else "mallopt refused"


def release_free_memory() -> None:
    """Hand the heap's free pages back to the kernel (``malloc_trim(0)``), for when a
    run ends and its process goes on (a notebook); does nothing off glibc."""
    libc = _glibc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
