"""Argument checks shared by the formats and layers: every message names the argument."""
from __future__ import annotations

import torch


def check_mask(mask: torch.Tensor, weight: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Return ``mask`` on the weight's device after checking it is a bool tensor shaped like it."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of dtype torch.bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype}; use (w != 0) or mask.bool()")
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"{name} shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}")
    return mask.to(weight.device)


def check_values_dtype(values: torch.Tensor, name: str = "weight") -> None:
    """Sparse kernels compute in float32 or float64; anything else must use backend='dense'."""
    if values.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"{name} dtype {values.dtype} is not supported by the sparse CPU kernels "
            "(allowed: torch.float32, torch.float64); use backend='dense' for other dtypes")
