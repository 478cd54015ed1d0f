"""Random channel pruning (the structured baseline of HRBP §5): whole output channels kept at random."""
from __future__ import annotations

import torch


def random_channel(weight_shape, density: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool mask keeping ``max(1, round(density * C_O))`` random output channels (whole filters) of the weight.

    Pruned filters make the layer a dense conv with fewer output channels, the cost model the benchmarks use.
    """
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) < 2:
        raise ValueError(f"weight_shape must have at least 2 dimensions (out, in, ...), got {shape}")
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    keep = max(1, round(density * shape[0]))
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[torch.randperm(shape[0], generator=generator)[:keep]] = True
    return mask
