"""Sparse transfer: load a sparse checkpoint into a model, keep its masks, re-initialise the head."""
from __future__ import annotations

import fnmatch
import os

import torch
from torch import nn

from ..nn.base import PackedSparseModule
from ..nn.masked import MASK_BUFFER
from ..nn.sparse_conv import SparseConv2d
from ..nn.sparse_linear import SparseLinear


def _state(checkpoint) -> tuple[dict, dict]:
    """(model state_dict, masks saved by a sparsifier or {}) from a path or a loaded checkpoint."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise TypeError(f"checkpoint must be a path or a dict, got {type(checkpoint).__name__}")
    masks = {}
    for key in ("sparsifier", "algorithm"):
        if isinstance(checkpoint.get(key), dict):
            masks = dict(checkpoint[key].get("masks", {}))
    return checkpoint.get("model", checkpoint), masks


def _layer_weight(module: nn.Module, name: str, state: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Dense weight and mask of layer ``name`` as stored in ``state`` (plain, masked or packed)."""
    if f"{name}.values" in state:  # packed: rebuild a packed layer of the same kind to unpack it
        cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
        plain = module if isinstance(module, (nn.Linear, nn.Conv2d)) else module.to_dense()
        packed = cls.from_dense(plain, backend="dense")
        sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        packed.load_state_dict(sub, strict=False)
        return packed.dense_weight().detach(), packed.mask()
    w = state.get(f"{name}.weight")
    if w is None:
        return None
    mask = state.get(f"{name}.{MASK_BUFFER}")
    return w, (w != 0) if mask is None else mask.bool()


def load_sparse_checkpoint(model: nn.Module, checkpoint, head: str | tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Copy a sparse checkpoint's weights into ``model`` (plain layers) and return its masks.

    ``checkpoint`` is a path or a dict: a model state_dict (plain, masked-dense or packed layers), or
    ``{"model": ..., "sparsifier": sparsifier.state_dict()}``. Modules matching the ``head`` globs are
    skipped (re-initialise or replace them). Returns ``{layer name: mask}`` for every sparse layer
    (density < 1): pass it to ``Static(model, optimizer, masks=...)`` to fine-tune with them fixed.
    """
    state, saved_masks = _state(checkpoint)
    heads = (head,) if isinstance(head, str) else tuple(head)
    is_head = lambda key: any(fnmatch.fnmatchcase(key, h) or fnmatch.fnmatchcase(key, h + ".*") for h in heads)  # noqa: E731
    masks = {}
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, PackedSparseModule))}
    with torch.no_grad():
        for n, m in layers.items():
            if is_head(n):
                continue
            if isinstance(m, PackedSparseModule):
                raise TypeError(f"layer {n!r} is already packed: load the checkpoint into a plain model")
            found = _layer_weight(m, n, state)
            if found is None:
                continue
            w, mask = found
            if w.shape != m.weight.shape:
                raise ValueError(f"checkpoint weight for {n!r} has shape {tuple(w.shape)}, model has {tuple(m.weight.shape)}")
            mask = saved_masks.get(n, mask).to(torch.bool)
            m.weight.copy_(w * mask)
            if m.bias is not None and f"{n}.bias" in state:
                m.bias.copy_(state[f"{n}.bias"])
            if not bool(mask.all()):
                masks[n] = mask.clone()
        own = model.state_dict()
        for k, v in state.items():
            layer = k.rpartition(".")[0]
            if layer in layers or is_head(k) or k not in own or own[k].shape != v.shape:
                continue
            own[k].copy_(v)
    return masks
