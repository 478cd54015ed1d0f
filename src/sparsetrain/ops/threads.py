"""Keep numba's thread count equal to torch's, so one knob (torch.set_num_threads) rules both."""
from __future__ import annotations

import numba
import torch

_MAX = numba.config.NUMBA_NUM_THREADS


def sync_threads() -> int:
    """Set numba's thread count to ``torch.get_num_threads()`` (capped at numba's pool) and return it."""
    n = max(1, min(torch.get_num_threads(), _MAX))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n
