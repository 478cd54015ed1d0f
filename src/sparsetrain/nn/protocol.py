"""The layer protocol algorithms use (DESIGN decision 3), for every layer kind.

A layer is a plain/masked ``nn.Linear``/``nn.Conv2d`` (masked-dense reference, any device) or a
``PackedSparseModule`` (SparseLinear, SparseConv2d, block-sparse layers). Algorithms call only these
functions, so they never know which kernel runs. ``set_mask`` repacks the layer and carries optimizer
state: kept weights keep theirs, grown weights start at zero value with zero state.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import masked
from .base import PackedSparseModule

LAYER_TYPES = (nn.Linear, nn.Conv2d, PackedSparseModule)


def check_layer(module: nn.Module, name: str = "layer") -> None:
    """Raise TypeError unless ``module`` is a layer kind that can be made sparse."""
    if not isinstance(module, LAYER_TYPES):
        raise TypeError(f"{name} ({type(module).__name__}) cannot be made sparse: allowed layer kinds are "
                        "nn.Linear, nn.Conv2d and sparsetrain's packed sparse layers")


def weight_shape(module: nn.Module) -> tuple[int, ...]:
    """Shape of the (dense) weight."""
    if isinstance(module, PackedSparseModule):
        return tuple(module.weight_shape)
    return tuple(module.weight.shape)


def weight_parameter(module: nn.Module) -> nn.Parameter:
    """The parameter the optimizer holds for the weight: ``values`` (packed) or ``weight``."""
    return module.values if isinstance(module, PackedSparseModule) else module.weight


def dense_weight(module: nn.Module) -> torch.Tensor:
    """Dense weight (zeros where pruned), detached."""
    with torch.no_grad():
        w = module.dense_weight() if isinstance(module, PackedSparseModule) else module.weight
    return w.detach()


def get_mask(module: nn.Module) -> torch.Tensor:
    """Bool mask shaped like the weight (all True for a plain layer)."""
    if isinstance(module, PackedSparseModule):
        return module.mask()
    if masked.is_masked(module):
        return getattr(module, masked.MASK_BUFFER).clone()
    return torch.ones_like(module.weight, dtype=torch.bool)


def request_dense_grad(module: nn.Module) -> None:
    """Ask for the dense weight gradient of the next backward (read it with ``take_dense_grad``)."""
    if isinstance(module, PackedSparseModule):
        module.request_dense_grad()
    else:
        if not masked.is_masked(module):
            masked.attach_mask(module, torch.ones_like(module.weight, dtype=torch.bool))
        masked.request_dense_grad(module)


def take_dense_grad(module: nn.Module) -> torch.Tensor | None:
    """The dense weight gradient kept since the last request, or None if no backward ran since."""
    if isinstance(module, PackedSparseModule):
        return module.take_dense_grad()
    return masked.take_dense_grad(module)


def remap_optimizer(optimizer: torch.optim.Optimizer | None, old: nn.Parameter, new: nn.Parameter,
                    convert: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
    """Point ``optimizer`` at ``new`` instead of ``old``; per-element state goes through ``convert(key, value)``."""
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if state is None:
        return
    optimizer.state[new] = {k: convert(k, v) if _per_element(v, old) else v for k, v in state.items()}


def _per_element(v, param: torch.Tensor) -> bool:
    """True for optimizer state laid out like the parameter (momentum, Adam moments), not a step count."""
    return torch.is_tensor(v) and v.dim() > 0 and v.shape == param.shape


def set_mask(module: nn.Module, mask: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Install ``mask`` on ``module`` and carry ``optimizer`` state; returns the mask now in force.

    Weights kept by both masks keep their value and state; grown weights start at zero with zero
    state. With ``weight`` given, kept positions take ``weight``'s values instead (state as above).
    """
    check_layer(module)
    shape = weight_shape(module)
    mask = mask.to(dtype=torch.bool)
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the weight shape {shape}")
    old_mask = get_mask(module)
    mask = mask.to(old_mask.device)
    keep = old_mask & mask
    if isinstance(module, PackedSparseModule):
        old_param = module.values
        # state in dense layout, read through the old packing before the repack replaces it
        state = optimizer.state.get(old_param, {}) if optimizer is not None else {}
        dense_state = {k: module.scatter_values(v) for k, v in state.items() if _per_element(v, old_param)}
        w = dense_weight(module) * keep if weight is None else weight.detach().to(old_param) * mask
        module.set_mask(mask, weight=w)
        new_mask = module.mask()
        kept = keep & new_mask
        remap_optimizer(optimizer, old_param, module.values,
                        lambda k, v: module.gather_values(dense_state[k] * kept))
        return new_mask
    masked.attach_mask(module, mask)
    with torch.no_grad():
        if weight is not None:
            module.weight.copy_(weight.detach() * mask)
    remap_optimizer(optimizer, module.weight, module.weight, lambda k, v: v * keep)
    return mask


def pack_layer(model: nn.Module, name: str, new: PackedSparseModule,
               optimizer: torch.optim.Optimizer | None = None) -> None:
    """Replace the masked-dense layer ``name`` of ``model`` with the packed ``new`` (same mask),
    moving the optimizer's weight and bias entries and their state onto the packed parameters."""
    old = model.get_submodule(name)
    remap_optimizer(optimizer, old.weight, new.values, lambda k, v: new.gather_values(v))
    if old.bias is not None and new.bias is not None:
        with torch.no_grad():
            new.bias.copy_(old.bias)
        remap_optimizer(optimizer, old.bias, new.bias, lambda k, v: v.clone())
    masked.detach_mask(old)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
