"""Keep freed memory in the process between training steps (glibc's malloc only).

An eager library (NumPy, PyTorch on a CPU, array-api-strict) allocates a new array for
every operation of a step and frees it a moment later. glibc's malloc gives memory back
to the kernel as soon as more than its trim threshold lies free at the top of the heap,
and serves blocks above its mmap threshold with fresh pages of their own; both start at
128 KiB and adapt only up to twice the largest block freed so far. A training step's
temporaries (a 784 x 512 float32 gradient is 1.6 MB; Adam makes a few per parameter)
outgrow that, so every step hands its memory back and the next one faults every page in
again: measured on the ``mlp`` preset on NumPy (2 AMD EPYC Zen 3 cores), 1,690 page
faults and 10.6 ms a step, against 23 faults and 4.9 ms with the settings below
(``docs/performance.md``).

``retain_freed_memory`` raises both thresholds for the rest of the process (glibc's
``mallopt``; ``man 3 mallopt``): blocks up to ``MMAP_THRESHOLD`` come from the heap and
up to ``TRIM_THRESHOLD`` of free heap is kept for the next step. Blocks larger than that
(a full-batch copy of the images) still go straight back to the kernel, so the memory a
process holds grows by at most ``TRIM_THRESHOLD``. Elsewhere (macOS, Windows, musl) it
does nothing: those allocators need no help here or take none. Whoever has set glibc's
own malloc variables keeps them: nothing is changed then.
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

#: Environment variables by which a user tunes glibc's malloc already.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_")


def _glibc():
    """glibc's C library, or None where the process does not run on glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _user_tuned(environ) -> str | None:
    for name in USER_SETTINGS:
        if name in environ:
            return name
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
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
