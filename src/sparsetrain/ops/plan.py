"""Derived index data an op needs (offsets for an input geometry, the transposed structure),
computed once per mask and input shape and kept by the layer, never rebuilt every step."""
from __future__ import annotations

import numpy as np
import torch


class Plan(dict):
    """Per-layer cache keyed by input geometry; a layer drops it whenever its mask changes. Holds at
    most ``limit`` entries (oldest evicted first) so varying batch sizes cannot grow it without bound."""

    limit = 8

    def __setitem__(self, key, value) -> None:
        while len(self) >= self.limit and key not in self:
            del self[next(iter(self))]
        super().__setitem__(key, value)


def transpose_structure(key: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row pointer and permutation that group nonzeros by ``key`` (stable): the CSC of a CSR."""
    perm = torch.sort(key, stable=True).indices
    ptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=key.device)
    torch.cumsum(torch.bincount(key, minlength=n_rows), 0, out=ptr[1:])
    return ptr, perm


def cached(plan: Plan | None, key, build):
    """``plan[key]``, building it with ``build()`` on a miss (no caching when ``plan`` is None)."""
    if plan is None:
        return build()
    if key not in plan:
        plan[key] = build()
    return plan[key]


def kernel_arrays(*tensors: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Contiguous NumPy views of index tensors a plan keeps: converted once, not on every kernel call (each
    ``Tensor.numpy()`` costs microseconds, which add up at high sparsity)."""
    return tuple(t.contiguous().numpy() for t in tensors)
