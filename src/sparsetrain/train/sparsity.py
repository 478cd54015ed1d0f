"""Attach a sparse-training method (``sparsetrain.algorithms``) to a model and optimizer with the
trainer's defaults, and put packed layers back on their recorded backends after a resume. The only
trainer module that knows how algorithms are configured."""
from __future__ import annotations

import importlib

import torch
from torch import nn

from ..nn.base import PackedSparseModule
from ..nn.sparse_conv import SparseConv2d
from ..nn.sparse_linear import SparseLinear
from .config import TrainConfig

# --backend on the command line -> the algorithm's packing backend (None: masked-dense reference layers)
_BACKEND = {"auto": "auto", "dense": None, "sparse": "sparse-cpu", "block": "block-cpu"}


def check_backend_available(backend: str) -> None:
    """``block`` needs a block-sparse packing backend; say so clearly until one exists."""
    if backend != "block":
        return
    base = importlib.import_module("sparsetrain.algorithms.base")
    if "block-cpu" not in getattr(base, "PACK_BACKENDS", ()):
        raise ValueError("--backend block: the HRBP block backend is not available in this build yet "
                         f"(packing backends: {[b for b in base.PACK_BACKENDS if b]}); use --backend auto, "
                         "sparse or dense")


def method_options(cfg: TrainConfig, total_steps: int, steps_per_epoch: int, example: torch.Tensor,
                   first_batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Keyword arguments for ``algorithms.create(cfg.method, ...)``: shared ones, each method's
    schedule derived from the run length, then the user's ``method_options`` on top."""
    m = cfg.method
    opts: dict = dict(density=1.0 - cfg.sparsity, distribution=cfg.distribution, seed=cfg.seed,
                      backend=_BACKEND[cfg.backend])
    if opts["backend"] == "auto":
        opts["example_input"] = example
    if m in ("snip", "grasp"):
        opts["data"] = [first_batch]
    if m == "synflow":
        opts["example_input"] = example
    if m in ("set", "rigl") or m.startswith("hrbp-dst"):
        opts["total_steps"] = total_steps
    if m in ("gmp", "gmp-global"):
        # prune from the start to the target by 75% of training (RigL's stop fraction), then fine-tune
        opts["end_step"] = max(1, int(0.75 * total_steps))
    if m == "sparseprop":
        opts["steps_per_epoch"] = steps_per_epoch
    if m == "lottery":
        opts["steps_per_round"] = max(1, total_steps // cfg.method_options.get("rounds", 5))
    if m.startswith("hrbp"):
        opts.update(groups=cfg.block_t, block_density=cfg.block_s)  # the paper's t and s
    opts.update(cfg.method_options)
    return opts


def create_algorithm(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int,
                     steps_per_epoch: int, example: torch.Tensor, first_batch):
    """The algorithm object for ``cfg.method`` (None for dense)."""
    if cfg.method == "dense":
        return None
    check_backend_available(cfg.backend)
    algorithms = importlib.import_module("sparsetrain.algorithms")
    opts = method_options(cfg, total_steps, steps_per_epoch, example, first_batch)
    try:
        return algorithms.create(cfg.method, model, optimizer, **opts)
    except TypeError as e:  # an option this method does not take (usually from --method-options)
        raise ValueError(f"--method {cfg.method}: {e}") from e


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
    return {name: {"backend": m.backend, "variant": getattr(m, "variant", None), "kind": type(m).__name__}
            for name, m in model.named_modules() if isinstance(m, PackedSparseModule)}


def set_backends(model: nn.Module, backends: dict[str, dict]) -> None:
    """Put packed layers on the recorded backends (a resume must not re-time and pick other kernels)."""
    for name, b in backends.items():
        m = model.get_submodule(name)
        if isinstance(m, PackedSparseModule):
            m.backend = b["backend"]
            if b.get("variant") is not None:
                m.variant = b["variant"]


def restore_packed(model: nn.Module, masks: dict[str, torch.Tensor], backends: dict[str, dict]) -> None:
    """Pack the layers named in ``backends`` with their ``masks`` (no optimizer: for inspection)."""
    for name, b in backends.items():
        module = model.get_submodule(name)
        cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
        new = cls.from_dense(module, masks[name], backend=b["backend"])
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    set_backends(model, backends)
