"""Process-wide settings for CPU training: glibc's allocator.

A training step allocates the same large buffers every step (activations, gradients, the sparse kernels' padded
copies), and frees them again. With glibc's defaults the heap top is given back to the kernel as soon as more than
a few MB are free (the trim threshold follows the largest freed mmapped block), and every block above the mmap
threshold is a fresh ``mmap``: so each step page-faults its buffers in again, zero-filled, on every core. On the
2-core machine here that cost a VGG-19 HRBP training step at 95% sparsity (batch 128) a quarter of its time (441
against 340 ms, medians of many runs), and a dense step about 6% (docs/decisions.md). ``tune_malloc`` keeps freed memory in the heap instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MIB = 1 << 20
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameter numbers
MMAP_MAX = 32 * MIB  # glibc refuses a larger mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)
_INT_MAX = 2**31 - 1  # mallopt takes a C int
_applied: dict[str, int] | None = None


def tune_malloc(mmap_threshold: int = MMAP_MAX, trim_threshold: int = 1024 * MIB, top_pad: int = 256 * MIB) -> bool:
    """Keep freed memory in glibc's heap between training steps (``mallopt``); True if applied.

    Blocks up to ``mmap_threshold`` bytes (at most 32 MiB) come from the heap, the heap top is only trimmed when
    more than ``trim_threshold`` bytes are free, and it grows ``top_pad`` bytes at a time. The process then holds
    on to its peak memory instead of returning it after every step. A no-op returning False where the C library
    is not glibc or ``SPARSETRAIN_MALLOC=0`` is set. The ``sparsetrain`` command and the training-step benchmarks
    call it (``benchmarks/layers.py`` only with ``--tune-malloc``); call it once at the start of your own training
    script.
    """
    global _applied
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold),
                        ("top_pad", top_pad)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT_MAX:
            raise ValueError(f"{name} must be an int of bytes in [0, {_INT_MAX}], got {value!r}")
    if mmap_threshold > MMAP_MAX:
        raise ValueError(f"mmap_threshold must be in [0, {MMAP_MAX}] (glibc's limit), got {mmap_threshold}")
    if os.environ.get("SPARSETRAIN_MALLOC", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # the mmap threshold first: setting any of the three freezes glibc's dynamic thresholds, and a frozen
    # default of 128 KiB would send every large buffer to mmap (measured 2-2.5x slower steps)
    ok = all(libc.mallopt(code, value) == 1 for code, value in ((_M_MMAP_THRESHOLD, mmap_threshold),
                                                                 (_M_TRIM_THRESHOLD, trim_threshold),
                                                                 (_M_TOP_PAD, top_pad)))
    if ok:
        _applied = dict(mmap_threshold=mmap_threshold, trim_threshold=trim_threshold, top_pad=top_pad)
    return ok


def malloc_note() -> str:
    """One line for a benchmark header: the allocator settings in effect."""
    if _applied is None:
        return "malloc: glibc defaults (tune_malloc not applied)"
    return ("malloc: tuned (sparsetrain.tune_malloc: mmap threshold {mmap_threshold} B, trim threshold "
            "{trim_threshold} B, top pad {top_pad} B)".format(**_applied))
