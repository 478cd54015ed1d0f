"""Attach a sparse-training method to a model and optimizer, and put the sparse layers on the chosen
backend. The only module of the trainer that knows about ``sparsetrain.algorithms`` and ``sparsify``."""
from __future__ import annotations

import importlib

import torch
from torch import nn

from ..nn.base import PackedSparseModule
from ..nn.convert import BACKEND_CHOICES, choose_backend
from ..nn.sparse_conv import SparseConv2d
from ..nn.sparse_linear import SparseLinear
from .config import TrainConfig

# --backend on the command line -> sparsify's backend
_BACKEND = {"auto": "auto", "dense": "dense", "sparse": "sparse-cpu", "block": "block"}


def check_backend_available(backend: str) -> None:
    """``block`` needs a block-sparse backend in ``sparsify``; say so clearly until it exists."""
    if _BACKEND[backend] not in BACKEND_CHOICES:
        raise ValueError(f"--backend {backend}: this build's sparsify() accepts only {BACKEND_CHOICES}; "
                         "the HRBP block backend is not available yet, use --backend auto, sparse or dense")


def create_algorithm(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int):
    """The algorithm object for ``cfg.method`` (None for dense)."""
    if cfg.method == "dense":
        return None
    algorithms = importlib.import_module("sparsetrain.algorithms")
    options = dict(density=1.0 - cfg.sparsity, distribution=cfg.distribution, total_steps=total_steps)
    if cfg.method.startswith("hrbp"):
        options.update(t=cfg.block_t, s=cfg.block_s)
    options.update(cfg.method_options)
    return algorithms.create(cfg.method, model, optimizer, **options)


def layer_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Bool mask of every sparse layer (packed, or masked dense), by module name."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, PackedSparseModule):
            out[name] = m.mask().cpu()
        elif isinstance(getattr(m, "weight_mask", None), torch.Tensor):
            out[name] = m.weight_mask.detach().bool().cpu()
    return out


def layer_backends(model: nn.Module) -> dict[str, dict]:
    """Backend (and conv variant) of every packed layer, so a resume runs the same kernels."""
    return {name: {"backend": m.backend, "variant": getattr(m, "variant", None)}
            for name, m in model.named_modules() if isinstance(m, PackedSparseModule)}


def _pack(model: nn.Module, name: str, mask: torch.Tensor, optimizer) -> PackedSparseModule:
    module = model.get_submodule(name)
    cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
    new = cls.from_dense(module, mask.to(module.weight.device), backend="dense")
    try:
        protocol = importlib.import_module("sparsetrain.nn.protocol")
        protocol.pack_layer(model, name, new, optimizer)
    except ImportError:  # before the layer protocol existed: no optimizer state to move yet
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return new


def restore_packed(model: nn.Module, masks: dict[str, torch.Tensor], backends: dict[str, dict]) -> None:
    """Pack the layers named in ``backends`` with their ``masks`` and backends (no optimizer involved)."""
    for name, b in backends.items():
        module = model.get_submodule(name)
        cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
        new = cls.from_dense(module, masks[name], backend=b["backend"])
        if b.get("variant") is not None:
            new.variant = b["variant"]
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)


def pack_sparse_layers(model: nn.Module, optimizer, backend: str, example: torch.Tensor | None,
                       backends: dict[str, dict] | None = None) -> dict[str, dict]:
    """Turn every masked-dense layer into a packed one on ``backend`` (``auto`` times each layer on
    ``example``'s real activations); with ``backends`` given (a resume), restore those choices instead.
    Returns the decision of each packed layer: choice and measured times."""
    if backend == "dense":
        return {}
    check_backend_available(backend)
    masks = {n: m for n, m in layer_masks(model).items()
             if not isinstance(model.get_submodule(n), PackedSparseModule)}
    packed = {n: _pack(model, n, m, optimizer) for n, m in masks.items()}
    decisions: dict[str, dict] = {}
    if backends is not None:
        for n, mod in packed.items():
            mod.backend = backends[n]["backend"]
            if backends[n]["variant"] is not None:
                mod.variant = backends[n]["variant"]
        return decisions
    if _BACKEND[backend] == "auto":
        inputs: dict[str, torch.Tensor] = {}
        hooks = [m.register_forward_pre_hook(lambda _m, a, n=n: inputs.__setitem__(n, a[0].detach()))
                 for n, m in packed.items()]
        was_training = model.training
        try:
            with torch.no_grad():
                model.eval()  # no BN statistics update while we only look at the activations
                model(example)
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        for n, mod in packed.items():
            times = choose_backend(mod, inputs[n]) if n in inputs else {}
            decisions[n] = {"times_ms": times, "choice": _describe(mod)}
    else:
        for n, mod in packed.items():
            mod.backend = _BACKEND[backend]
            decisions[n] = {"times_ms": {}, "choice": _describe(mod)}
    return decisions


def _describe(module: PackedSparseModule) -> str:
    if isinstance(module, SparseConv2d) and module.backend == "sparse-cpu":
        return f"sparse-cpu/{module.variant or 'heuristic'}"
    return module.backend
