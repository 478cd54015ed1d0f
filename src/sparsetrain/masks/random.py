"""Uniform random masks."""
from __future__ import annotations

import torch


def random_mask(shape, sparsity: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool mask of ``shape`` keeping exactly ``round((1 - sparsity) * numel)`` positions at random.

    ``sparsity`` must lie in [0, 1).
    """
    if not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    shape = tuple(shape)
    numel = 1
    for s in shape:
        numel *= int(s)
    keep = int(round((1.0 - sparsity) * numel))
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[torch.randperm(numel, generator=generator)[:keep]] = True
    return mask.view(shape)
