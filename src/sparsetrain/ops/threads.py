"""Keep numba's thread count equal to torch's, so one knob (torch.set_num_threads) rules both."""
from __future__ import annotations

import numba
import numpy as np
import torch

_MAX = numba.config.NUMBA_NUM_THREADS
_launched = False


@numba.njit(parallel=True, cache=True)
def _touch(a):
    for i in numba.prange(a.shape[0]):
        a[i] = i


def sync_threads() -> int:
    """Set numba's thread count to ``torch.get_num_threads()`` (capped at numba's pool) and return it."""
    global _launched
    if not _launched:
        # starting numba's OpenMP pool (its first parallel call) resets the process's OpenMP thread
        # count, torch's included (docs/decisions.md, Threads): start it now and restore torch's setting
        wanted = torch.get_num_threads()
        _touch(np.zeros(4))
        torch.set_num_threads(wanted)
        _launched = True
    n = max(1, min(torch.get_num_threads(), _MAX))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n
