"""Keeping glibc malloc from handing activation memory back to the OS after every CPU step.

A training step allocates and frees the same large activation buffers every time (ResNet-20 at
batch 128: about 80 MB per step in tensors of up to 8 MB). glibc's defaults serve such sizes with
fresh `mmap`s or trim them off the heap when freed, so every step page-faults all of that memory
in again, zero-filled by the kernel: about 20,000 page faults per ResNet-20 step, a sizeable share
of CPU time (more inside virtual machines). Raising the mmap and trim thresholds and padding heap
growth keeps those pages in the process and reuses them, as a caching allocator does on GPUs.

This applies once per process, only on glibc (other C libraries are left alone), and only for
CPU training. Set `ELTH_MALLOC_TUNING=0` to leave malloc as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV_VAR = "ELTH_MALLOC_TUNING"

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: glibc caps the mmap threshold at 32 MiB on 64-bit systems; larger blocks are still mmapped.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = (1 << 31) - 1
TOP_PAD = 64 << 20

_applied: bool | None = None


def tune_malloc() -> bool:
    """Apply the settings above (once); True if they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # present only in glibc
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
    return _applied
