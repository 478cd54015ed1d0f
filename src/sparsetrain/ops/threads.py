"""Keep numba's thread count equal to torch's, so one knob (torch.set_num_threads) rules both."""
from __future__ import annotations

import threading

import numba
import numpy as np
import torch

_MAX = numba.config.NUMBA_NUM_THREADS
_launched = False
# numba's thread count is per Python thread: remember, per thread, the torch setting last applied, so the
# hot path is one torch query (numba.get_num_threads costs more than the small kernels' launch at 99% sparsity)
_seen = threading.local()


@numba.njit(parallel=True, cache=True)
def _touch(a):
    for i in numba.prange(a.shape[0]):
        a[i] = i


def sync_threads() -> int:
    """Set numba's thread count to ``torch.get_num_threads()`` (capped at numba's pool) and return it."""
    global _launched
    wanted = torch.get_num_threads()
    if getattr(_seen, "wanted", None) == wanted:  # the common case: nothing changed since this thread's last call
        return _seen.n
    if not _launched:
        # starting numba's OpenMP pool (its first parallel call) resets the process's OpenMP thread
        # count, torch's included (docs/decisions.md, Threads): start it now and restore torch's setting
        _touch(np.zeros(4))
        torch.set_num_threads(wanted)
        _launched = True
    n = max(1, min(wanted, _MAX))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    _seen.wanted, _seen.n = wanted, n
    return n
