"""``sparsetrain inspect CHECKPOINT``: per-layer shape, sparsity, backend and block structure."""
from __future__ import annotations

import torch
from torch import nn

from .checkpoint import load_checkpoint


def _blocks_of(mask):
    """The HRBP blocks of a block-structured mask, or None."""
    from ..formats import BlockLayout
    try:
        return BlockLayout.from_mask(mask.bool())
    except ValueError:
        return None


def row_patterns(mask: torch.Tensor) -> int:
    """Distinct per-output-channel mask patterns: t for an HRBP layout, about C_out for random masks."""
    if mask.dim() < 2 or mask.shape[0] == 0:
        return 0
    return int(torch.unique(mask.reshape(mask.shape[0], -1), dim=0).shape[0])


def _rebuild(state: dict) -> nn.Module | None:
    """The checkpoint's model with its packed layers, or None when it cannot be rebuilt here."""
    from .models import build_model
    from .sparsity import restore_packed
    try:
        args = state["model_args"]
        model = build_model(state["config"]["model"], args["num_classes"], args["in_channels"],
                            width=state["config"].get("width"))
        restore_packed(model, state.get("masks", {}), state.get("backends", {}))
        model.load_state_dict(state["model"], strict=False)
        return model
    except Exception:  # a layer kind this build cannot construct: report from the masks alone
        return None


def inspect_text(path: str) -> str:
    """The report ``sparsetrain inspect`` prints."""
    state = load_checkpoint(path)
    cfg = state.get("config", {})
    masks: dict[str, torch.Tensor] = state.get("masks", {})
    backends = state.get("backends", {})
    model = _rebuild(state) if backends else None
    lines = [f"checkpoint {path}",
             f"model {cfg.get('model')}  dataset {cfg.get('dataset')}  method {cfg.get('method')}  "
             f"target sparsity {cfg.get('sparsity')}  epoch {state['epoch']} (+{state['step_in_epoch']} steps)  "
             f"global step {state['global_step']}  world size {state.get('world_size', 1)}"]
    head = f"{'layer':<32} {'shape':<18} {'sparsity':>8} {'nnz':>9} {'backend':<24} {'row patterns':>12}  blocks"
    lines += [head, "-" * len(head)]
    total = kept = 0
    for name, mask in masks.items():
        b = backends.get(name)
        backend = "masked-dense" if b is None else b["backend"] + (f"/{b['variant']}" if b.get("variant") else "")
        blocks = ""
        module = model.get_submodule(name) if model is not None else None
        layout = getattr(module, "layout", None)
        if layout is None and backend.startswith("block"):
            layout = _blocks_of(mask)
        if layout is not None:
            r, k = layout.block_shape
            blocks = f"{layout.groups}x({r}x{k})"
        nnz = int(mask.sum())
        total, kept = total + mask.numel(), kept + nnz
        shape = "x".join(map(str, mask.shape))
        lines.append(f"{name:<32} {shape:<18} {1 - nnz / max(mask.numel(), 1):>8.4f} {nnz:>9} {backend:<24} "
                     f"{row_patterns(mask):>12}  {blocks}")
    if not masks:
        lines.append("(no sparse layers: a dense run)")
    else:
        lines.append(f"overall sparsity of the sparse layers: {1 - kept / max(total, 1):.4f}")
    return "\n".join(lines)
