"""Whole-model conversion: sparsify(model) swaps masked Linear/Conv2d for packed sparse layers,
choosing each layer's backend by timing it on the real input shape; densify(model) undoes it."""
from __future__ import annotations

import fnmatch
import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..formats import BlockLayout
from .base import PackedSparseModule
from ..ops.block_conv import block_variants
from .block_sparse import BlockSparseConv2d, BlockSparseLinear
from .sparse_conv import SparseConv2d
from .sparse_linear import SparseLinear

BACKEND_CHOICES = ("auto", "sparse-cpu", "block-cpu", "block-gpu", "dense")


@dataclass
class Decision:
    """One row of the decision table: a layer, its sparsity, the timed candidates and the choice."""

    layer: str
    kind: str
    sparsity: float
    times_ms: dict[str, float] = field(default_factory=dict)
    choice: str = ""


class DecisionTable(list):
    """The per-layer choices made by ``sparsify``; ``print(table)`` shows them."""

    def __str__(self) -> str:
        cands = sorted({k for d in self for k in d.times_ms})
        head = f"{'layer':<28} {'kind':<7} {'sparsity':>8} " + " ".join(f"{c + ' ms':>18}" for c in cands) + "  choice"
        rows = [head, "-" * len(head)]
        for d in self:
            times = " ".join(f"{d.times_ms[c]:>18.3f}" if c in d.times_ms else f"{'-':>18}" for c in cands)
            rows.append(f"{d.layer:<28} {d.kind:<7} {d.sparsity:>8.3f} {times}  {d.choice}")
        return "\n".join(rows)


def _candidates(module: PackedSparseModule) -> dict[str, dict]:
    if isinstance(module, SparseConv2d):
        return {"dense": dict(backend="dense", variant=None),
                **{f"sparse-cpu/{v}": dict(backend="sparse-cpu", variant=v) for v in module.variants()}}
    return {"dense": dict(backend="dense"), "sparse-cpu": dict(backend="sparse-cpu")}


def time_fwd_bwd(module: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    """Median milliseconds of forward + backward (input and parameter gradients) after warm-up."""
    x = x.detach().requires_grad_(True)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        y = module(x)
        y.backward(torch.ones_like(y))
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    module.zero_grad(set_to_none=True)
    return statistics.median(times)


def choose_backend(module: PackedSparseModule, x: torch.Tensor, warmup: int = 2, repeats: int = 5) -> dict[str, float]:
    """Time every backend of ``module`` on input ``x`` and switch it to the fastest; returns the times."""
    cands = _candidates(module)
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        cands = {"dense": cands["dense"]}
    times = {}
    for name, cfg in cands.items():
        for k, v in cfg.items():
            setattr(module, k, v)
        times[name] = time_fwd_bwd(module, x, warmup, repeats)
    best = min(times, key=times.get)
    for k, v in cands[best].items():
        setattr(module, k, v)
    return times


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _lookup_mask(masks, name: str):
    if masks is None:
        return None
    for key in (name, name + ".weight"):
        if key in masks:
            return masks[key]
    return None


def block_layout_of(module: nn.Module, mask) -> BlockLayout | None:
    """The HRBP blocks of ``mask`` when it is a BlockLayout or a block-structured bool mask, else None."""
    if isinstance(mask, BlockLayout):
        return mask
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return None
    try:
        return BlockLayout.from_mask(mask)
    except ValueError:
        return None


def block_module(module: nn.Module, layout: BlockLayout, backend: str = "block-cpu") -> PackedSparseModule:
    """The HRBP block layer (conv or linear) holding ``module``'s weight inside ``layout``."""
    cls = BlockSparseConv2d if isinstance(module, nn.Conv2d) else BlockSparseLinear
    return cls.from_dense(module, layout, backend=backend)


def faster_block_layer(module: nn.Module, layout: BlockLayout, x: torch.Tensor, times_ms: dict[str, float],
                       warmup: int = 2, repeats: int = 5) -> PackedSparseModule | None:
    """Time the HRBP block layer of ``module`` on ``x`` (CPU inputs; convs in every variant their stride allows,
    recorded as ``times_ms["block-cpu/<variant>"]``) and return it when it beats every candidate already in ``times_ms``."""
    if x.device.type != "cpu":
        return None
    best_other = min(times_ms.values(), default=float("inf"))
    block = block_module(module, layout)
    if isinstance(block, BlockSparseConv2d):
        variants = block_variants(block.kernel_geometry)
        for variant in variants:
            block.variant = variant
            times_ms[f"block-cpu/{variant}"] = time_fwd_bwd(block, x, warmup, repeats)
        block.variant = min(variants, key=lambda v: times_ms[f"block-cpu/{v}"])
        mine = times_ms[f"block-cpu/{block.variant}"]
    else:
        mine = times_ms["block-cpu"] = time_fwd_bwd(block, x, warmup, repeats)
    return block if mine < best_other else None


def sparsify(model: nn.Module, masks: dict[str, torch.Tensor] | None = None, example_input=None,
             backend: str = "auto", min_sparsity: float = 0.8, exclude=(), warmup: int = 2,
             repeats: int = 5) -> nn.Module:
    """Replace ``nn.Linear``/``nn.Conv2d`` layers (in place) with ``SparseLinear``/``SparseConv2d``.

    ``masks`` maps a module name (or ``name.weight``) to a bool mask or an HRBP ``BlockLayout``; layers
    without one use ``weight != 0``. Layers sparser than ``min_sparsity`` (in [0, 1]) and not matching a
    glob in ``exclude`` are converted. ``backend="auto"`` needs ``example_input`` (a tensor, or a tuple of
    positional inputs): it times a warmed-up forward+backward (median of ``repeats``) of the dense
    reference and of each sparse kernel on every layer's real input and keeps the fastest; layers whose
    mask is block-structured (``masks.hrbp``/``hrbp_random``) also time the HRBP block layer
    (``BlockSparseConv2d``/``BlockSparseLinear``). ``backend="block-cpu"`` (or ``"block-gpu"``: the block layers
    run the kernels of the input's device either way) converts such layers to block
    layers and refuses unstructured masks. The table of decisions is ``sparsetrain.decision_table(model)``.
    Returns ``model``.
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    if not (isinstance(min_sparsity, (int, float)) and 0.0 <= min_sparsity <= 1.0):
        raise ValueError(f"min_sparsity must be a number in [0, 1], got {min_sparsity!r}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    if backend == "auto" and example_input is None:
        raise ValueError("backend='auto' needs example_input (a batch shaped like the training input) "
                         "to time each layer; or pass backend='sparse-cpu' or 'dense'")
    layer_names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    unused = [pat for pat in exclude if not any(_matches(n, (pat,)) for n in layer_names)]
    if unused:  # most likely a typo: the layer it meant to keep dense would be converted
        warnings.warn(f"sparsify: exclude patterns {unused} match no nn.Linear/nn.Conv2d of the model", stacklevel=2)
    if masks is not None:
        unknown = set(masks) - {n for n, _ in model.named_modules()} - {n + ".weight" for n, _ in model.named_modules()}
        if unknown:
            raise KeyError(f"masks has keys that name no module of the model: {sorted(unknown)[:5]}")

    inputs: dict[str, torch.Tensor] = {}
    converted: list[tuple[str, PackedSparseModule, float]] = []
    block_candidates: dict[str, tuple[nn.Module, BlockLayout]] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or _matches(name, exclude):
            continue
        mask = _lookup_mask(masks, name)
        mask = (module.weight != 0) if mask is None else mask
        given_layout = mask if isinstance(mask, BlockLayout) else None
        if given_layout is not None:
            mask = given_layout.mask.to(module.weight.device)
        if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool:
            raise TypeError(f"masks[{name!r}] must have dtype torch.bool, got {mask.dtype}")
        # before the sparsity test: a wrong-shaped mask is a bug to report, not a layer to skip quietly
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ValueError(f"masks[{name!r}] has shape {tuple(mask.shape)}, but the layer's weight has shape "
                             f"{tuple(module.weight.shape)}")
        sparsity = 1.0 - float(mask.float().mean()) if mask.numel() else 0.0
        if sparsity < min_sparsity:
            continue
        allowed = (torch.float32, torch.float64) + \
            ((torch.bfloat16, torch.float16) if backend in ("block-cpu", "block-gpu") else ())
        if module.weight.dtype not in allowed:
            warnings.warn(f"sparsify: {name} has dtype {module.weight.dtype}; left dense", stacklevel=2)
            continue
        layout = block_layout_of(module, given_layout if given_layout is not None else mask) \
            if backend in ("auto", "block-cpu", "block-gpu") else None
        if backend in ("block-cpu", "block-gpu"):
            if layout is None:
                raise ValueError(f"backend={backend!r}: the mask of layer {name!r} is not block-structured; regroup it "
                                 "with sparsetrain.masks.hrbp(mask) (or use backend='auto' / 'sparse-cpu')")
            new = block_module(module, layout, backend)
        else:
            init_backend = "dense" if backend == "auto" else backend
            cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
            new = cls.from_dense(module, mask, backend=init_backend)
            if backend == "auto" and layout is not None:
                block_candidates[name] = (module, layout)
        _replace(model, name, new)
        converted.append((name, new, sparsity))

    if backend == "auto" and converted:
        hooks = [m.register_forward_pre_hook(_recorder(inputs, n)) for n, m, _ in converted]
        try:
            with torch.no_grad():
                args = example_input if isinstance(example_input, tuple) else (example_input,)
                model(*args)
        finally:
            for h in hooks:
                h.remove()
    for name, module, sparsity in converted:
        kind = "linear" if isinstance(module, (SparseLinear, BlockSparseLinear)) else "conv2d"
        decision = Decision(name, kind, sparsity)
        block = block_candidates.get(name)
        if backend == "auto":
            if name in inputs:
                decision.times_ms = choose_backend(module, inputs[name], warmup, repeats)
                faster = block is not None and faster_block_layer(*block, inputs[name], decision.times_ms, warmup,
                                                                  repeats)
                if faster:
                    _replace(model, name, faster)
                    module = faster
            else:  # the example never reached this layer: keep the reference
                module.backend = "dense"
        decision.choice = _describe(module)
        module.decision = decision
    return model


def _recorder(store: dict, name: str):
    def hook(_module, args):
        store[name] = args[0].detach()
    return hook


def _describe(module: PackedSparseModule) -> str:
    if isinstance(module, BlockSparseConv2d) and module.backend != "dense" and module.variant is not None:
        return f"block-cpu/{module.variant}"
    if isinstance(module, (BlockSparseConv2d, BlockSparseLinear)) and module.backend != "dense":
        return "block-cpu"
    if isinstance(module, SparseConv2d) and module.backend == "sparse-cpu":
        return f"sparse-cpu/{module.variant or 'heuristic'}"
    return module.backend


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def decision_table(model: nn.Module) -> DecisionTable:
    """Per-layer backend decisions recorded by ``sparsify`` (print it for a table)."""
    return DecisionTable(m.decision for _, m in model.named_modules() if getattr(m, "decision", None) is not None)


def densify(model: nn.Module) -> nn.Module:
    """Replace every sparse layer (in place) with its plain PyTorch equivalent; returns ``model``."""
    for name, module in list(model.named_modules()):
        if isinstance(module, PackedSparseModule):
            if name == "":
                return module.to_dense()
            _replace(model, name, module.to_dense())
    return model
