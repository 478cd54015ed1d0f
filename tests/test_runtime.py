"""sparsetrain.tune_malloc: glibc keeps freed memory in its heap afterwards; bad values and the opt-out."""
import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys

import pytest

import sparsetrain
from sparsetrain.runtime import MMAP_MAX

GLIBC = platform.libc_ver()[0] == "glibc"

# A child process: malloc a 20 MiB block, free it, and report from mallinfo2 whether it was mmapped and whether
# the heap (arena) kept it after the free.
_PROBE = r"""
import ctypes, ctypes.util, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    from sparsetrain.runtime import tune_malloc
    assert tune_malloc()
libc.free(libc.malloc(64 << 20))  # what a first training step does: a big block, freed
p = libc.malloc(20 << 20)
during = libc.mallinfo2()
libc.free(p)
after = libc.mallinfo2()
print(during.hblkhd >= 20 << 20, after.arena >= 20 << 20)
"""


def _probe(mode: str) -> str:
    env = dict(os.environ, SPARSETRAIN_MALLOC="1")
    return subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                          env=env).stdout.split()


@pytest.mark.skipif(not GLIBC or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"),
                    reason="needs glibc >= 2.33 (mallinfo2)")
def test_tuned_heap_keeps_large_blocks():
    """By default a 20 MiB block after a freed 64 MiB one is mmapped (64 MiB is above glibc's dynamic-threshold
    cap); tuned it comes from the heap, and the heap still holds it after the free (no trim, no page faults
    next step)."""
    assert _probe("default") == ["True", "False"]
    assert _probe("tuned") == ["False", "True"]


def test_bad_values_name_the_argument(monkeypatch):
    with pytest.raises(ValueError, match=r"mmap_threshold must be in \[0, 33554432\]"):
        sparsetrain.tune_malloc(mmap_threshold=MMAP_MAX + 1)
    with pytest.raises(ValueError, match=r"top_pad must be an int of bytes in \[0, 2147483647\]"):
        sparsetrain.tune_malloc(top_pad=-1)
    with pytest.raises(ValueError, match="trim_threshold must be an int of bytes"):
        sparsetrain.tune_malloc(trim_threshold=1.5)
    with pytest.raises(ValueError, match="trim_threshold must be an int of bytes"):
        sparsetrain.tune_malloc(trim_threshold=2**31)  # mallopt takes a C int
    monkeypatch.setenv("SPARSETRAIN_MALLOC", "0")
    assert sparsetrain.tune_malloc() is False
