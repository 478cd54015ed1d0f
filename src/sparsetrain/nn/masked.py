"""Masked-dense reference adapter: a plain ``nn.Linear``/``nn.Conv2d`` (any device) made sparse in place.

The mask is a bool buffer ``weight_mask``; a gradient hook on ``weight`` zeroes the gradient outside
the mask, so SGD (with momentum and weight decay), Adam and AdamW never move a pruned weight away
from zero and no re-masking after ``optimizer.step()`` is needed. Parameter names stay unchanged
(``layer.weight``), so an optimizer built before the mask keeps working. The same hook sees the full
dense gradient before masking: a dense-gradient request costs nothing extra here.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

MASK_BUFFER = "weight_mask"
_HOOK = "_sparsetrain_mask_hook"  # the forward pre-hook handle; marks a masked module
_ARMED = "_sparsetrain_hooked_weight"  # id() of the weight tensor that carries the gradient hook


class _MaskGrad:
    """Tensor hook: keep the dense gradient when asked, then return the masked gradient."""

    def __init__(self, module: nn.Module) -> None:
        self.module = weakref.ref(module)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        module = self.module()
        if module is None or not is_masked(module):
            return grad
        if getattr(module, "_dense_grad_request", False):
            module._dense_grad_request = False
            module._dense_grad = grad.detach().clone()
        return grad * getattr(module, MASK_BUFFER)


def _arm(module: nn.Module, _args=None) -> None:
    """Forward pre-hook: put the gradient hook on the current weight tensor. Tensor hooks do not
    survive ``copy.deepcopy`` or a replaced ``weight``; checking before every forward re-arms them."""
    if getattr(module, _ARMED, None) != id(module.weight):
        module.weight.register_hook(_MaskGrad(module))
        setattr(module, _ARMED, id(module.weight))


def is_masked(module: nn.Module) -> bool:
    """True if ``module`` carries the masked-dense adapter."""
    return getattr(module, _HOOK, None) is not None


def attach_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Install (or replace) ``mask`` on a plain Linear/Conv2d and zero the weight outside it."""
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"module must be nn.Linear or nn.Conv2d, got {type(module).__name__}")
    mask = mask.to(device=module.weight.device, dtype=torch.bool)
    if mask.shape != module.weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the weight shape {tuple(module.weight.shape)}")
    if is_masked(module):
        getattr(module, MASK_BUFFER).copy_(mask)
    else:
        module.register_buffer(MASK_BUFFER, mask.clone())
        setattr(module, _HOOK, module.register_forward_pre_hook(_arm))
        _arm(module)
    with torch.no_grad():
        module.weight.mul_(getattr(module, MASK_BUFFER))


def detach_mask(module: nn.Module) -> None:
    """Remove the adapter (the weight keeps its zeros; a gradient hook already armed stays inert)."""
    handle = getattr(module, _HOOK, None)
    if handle is not None:
        handle.remove()
        setattr(module, _HOOK, None)
        setattr(module, _ARMED, None)
        delattr(module, MASK_BUFFER)


def request_dense_grad(module: nn.Module) -> None:
    """Keep the dense weight gradient of the next backward (see ``take_dense_grad``)."""
    if not is_masked(module):
        raise ValueError("request_dense_grad needs a masked layer: call attach_mask first")
    module._dense_grad_request = True


def take_dense_grad(module: nn.Module) -> torch.Tensor | None:
    """The dense weight gradient kept since the request (then forgotten), or None."""
    g = getattr(module, "_dense_grad", None)
    module._dense_grad = None
    return g
