"""Sparsifier: the base class of every sparse-training algorithm.

Built like an optimizer, stepped after ``optimizer.step()``. It owns scheduling, mask bookkeeping,
talking to layers (only through ``nn.protocol``), state_dict, and moving layers onto the fast packed
kernels once they are sparse enough. A subclass overrides one or two small hooks:
``initial_masks`` (masks at construction), ``update_due`` / ``update_masks`` (mask changes during
training) and ``needs_dense_grad`` (ask the layers for a dense gradient before an update).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..masks.criteria import random_scores
from ..masks.distributions import check_density, check_distribution, layer_counts, topk_masks
from ..masks.select import select_layers
from ..nn import protocol
from ..nn.base import PackedSparseModule
from ..nn.convert import Decision, block_layout_of, block_module, choose_backend, faster_block_layer
from ..nn.sparse_conv import SparseConv2d
from ..nn.sparse_linear import SparseLinear
from .distributed import broadcast_masks

PACK_BACKENDS = (None, "auto", "sparse-cpu", "block-cpu", "dense")
Masks = dict[str, torch.Tensor]


class Sparsifier:
    """Base class: fixed masks (no updates). See the module docstring for the hooks.

    ``density`` is the fraction of weights kept across the layers being sparsified (in (0, 1]);
    ``distribution`` spreads it over layers (``uniform``, ``er``, ``erk``, ``global``). Layers are
    every Linear/Conv2d matching ``include`` globs and no ``exclude`` glob; with ``dense_first_last``
    the first conv and the last linear stay dense. ``masks`` ({layer or layer.weight: bool mask})
    overrides the initial masks. ``backend`` (``"auto"``, ``"sparse-cpu"``, ``"block-cpu"``, ``"dense"``) moves
    a layer onto the packed sparse kernels as soon as its sparsity reaches ``min_sparsity`` (SparseProp's 80%
    rule), carrying optimizer state; ``"auto"`` times the backends on ``example_input`` (HRBP block layers
    too when the mask is block-structured); ``"block-cpu"`` packs block-structured masks as HRBP block
    layers and the others as SparseProp layers. ``None``
    keeps the layer kinds as given (plain layers run as masked-dense references).
    """

    needs_dense_grad = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, density: float | None = 0.1,
                 distribution: str = "erk", *, include=None, exclude=(), dense_first_last: bool = True,
                 masks: Mapping[str, torch.Tensor] | None = None, seed: int = 0, backend: str | None = None,
                 example_input: torch.Tensor | None = None, min_sparsity: float = 0.8) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        if backend not in PACK_BACKENDS:
            raise ValueError(f"backend must be one of {PACK_BACKENDS}, got {backend!r}")
        if backend == "auto" and example_input is None:
            raise ValueError("backend='auto' needs example_input to time each layer; or pass backend='sparse-cpu'")
        if not (isinstance(min_sparsity, (int, float)) and 0.0 <= min_sparsity <= 1.0):
            raise ValueError(f"min_sparsity must be a number in [0, 1], got {min_sparsity!r}")
        self.model, self.optimizer = model, optimizer
        self.distribution = check_distribution(distribution)
        self.backend, self.example_input, self.min_sparsity = backend, example_input, float(min_sparsity)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.step_count = 0
        given = None if masks is None else {k.removesuffix(".weight"): v for k, v in masks.items()}
        if given is not None and include is None:
            include, dense_first_last = list(given), False
        self.names = select_layers(model, include, exclude, dense_first_last)
        for n in self.names:
            protocol.check_layer(self.layer(n), n)
        self.shapes = {n: protocol.weight_shape(self.layer(n)) for n in self.names}
        if given is not None:
            missing = set(given) - set(self.names)
            if missing:
                raise ValueError(f"masks name layers that are not being sparsified: {sorted(missing)[:5]}")
            total = sum(int(m.numel()) for m in given.values())
            density = sum(int(m.sum()) for m in given.values()) / total if density is None else density
        self.density = check_density(density)
        init = self.initial_masks() if given is None else given
        self._apply(broadcast_masks({n: init[n] for n in self.names if n in init}))
        self._prepare_next()

    # --- hooks -------------------------------------------------------------------------------
    def initial_masks(self) -> Masks:
        """Masks at construction; default: uniformly random at the chosen layer-wise densities."""
        return self.select(random_scores(self.shapes, self.generator), self.density)

    def update_due(self, step: int) -> bool:
        """True if masks change after optimizer step ``step`` (1-based)."""
        return False

    def update_masks(self) -> Masks:
        """New masks for an update step (called only when ``update_due``)."""
        raise NotImplementedError

    # --- bookkeeping -------------------------------------------------------------------------
    def layer(self, name: str) -> nn.Module:
        """The module currently at ``name`` (layers are replaced when packed)."""
        return self.model.get_submodule(name)

    def layer_masks(self) -> Masks:
        """{layer name: bool mask}."""
        return {n: protocol.get_mask(self.layer(n)) for n in self.names}

    def masks(self) -> Masks:
        """{parameter name (``layer.weight``): bool mask} of every layer being sparsified."""
        return {f"{n}.weight": m for n, m in self.layer_masks().items()}

    def select(self, scores: Mapping[str, torch.Tensor], density: float,
               candidates: Mapping[str, torch.Tensor] | None = None) -> Masks:
        """Masks keeping the top scores at ``density`` under this sparsifier's distribution."""
        if candidates is not None:
            scores = {n: torch.where(candidates[n].to(s.device), s.double(), -float("inf")) for n, s in scores.items()}
        counts = layer_counts(self.shapes, density, self.distribution, scores=scores)
        return topk_masks(scores, counts, candidates)

    def step(self) -> None:
        """Call after ``optimizer.step()``: updates masks when due and prepares the next step."""
        self.step_count += 1
        if self.update_due(self.step_count):
            self._apply(broadcast_masks(self.update_masks()))
        self._prepare_next()

    def _prepare_next(self) -> None:
        if self.needs_dense_grad and self.update_due(self.step_count + 1):
            for n in self.names:
                protocol.request_dense_grad(self.layer(n))

    def dense_grads(self) -> Masks:
        """Dense weight gradients of the last backward (requested before it), per layer."""
        grads = {}
        for n in self.names:
            g = protocol.take_dense_grad(self.layer(n))
            if g is None:
                raise RuntimeError(f"{type(self).__name__}: layer {n!r} delivered no dense gradient; run "
                                   "forward+backward between optimizer steps before calling step()")
            grads[n] = g
        return grads

    def _apply(self, masks: Masks, weights: Mapping[str, torch.Tensor] | None = None) -> None:
        for n, m in masks.items():
            protocol.set_mask(self.layer(n), m, self.optimizer, None if weights is None else weights.get(n))
        self._pack()

    def _pack(self) -> None:
        """Move masked-dense layers that reached ``min_sparsity`` onto the packed sparse kernels."""
        if self.backend is None:
            return
        todo = []
        for n in self.names:
            m = self.layer(n)
            if isinstance(m, PackedSparseModule) or isinstance(m, nn.Conv2d) and m.weight.device.type != "cpu":
                continue
            mask = protocol.get_mask(m)
            if 1.0 - mask.float().mean().item() >= self.min_sparsity:
                todo.append((n, m, mask))
        if not todo:
            return
        inputs = self._capture_inputs([n for n, _, _ in todo]) if self.backend == "auto" else {}
        for n, m, mask in todo:
            new = self.packed_layer(n, m, mask)
            decision = Decision(n, "linear" if isinstance(m, nn.Linear) else "conv2d", 1.0 - mask.float().mean().item())
            if n in inputs and isinstance(new, (SparseLinear, SparseConv2d)):
                decision.times_ms = choose_backend(new, inputs[n])
                layout = block_layout_of(m, mask)
                # a block-structured mask: the HRBP block layer is a candidate too
                block = layout is not None and faster_block_layer(m, layout, inputs[n], decision.times_ms)
                if block:
                    new = block
            variant = getattr(new, "variant", None)
            decision.choice = new.backend if variant is None else f"{new.backend}/{variant}"
            new.decision = decision
            protocol.pack_layer(self.model, n, new, self.optimizer)

    def packed_layer(self, name: str, module: nn.Module, mask: torch.Tensor) -> PackedSparseModule:
        """The packed layer replacing masked-dense ``module`` (hook: block-sparse algorithms override)."""
        if self.backend == "block-cpu":
            layout = block_layout_of(module, mask)
            if layout is not None:
                return block_module(module, layout)
        cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
        backend = {"auto": "dense", "block-cpu": "sparse-cpu"}.get(self.backend, self.backend)
        return cls.from_dense(module, mask, backend=backend)

    def _capture_inputs(self, names: list[str]) -> dict[str, torch.Tensor]:
        store: dict[str, torch.Tensor] = {}
        hooks = [self.layer(n).register_forward_pre_hook(
            lambda _m, args, n=n: store.__setitem__(n, args[0].detach())) for n in names]
        try:
            with torch.no_grad():
                self.model(self.example_input)
        finally:
            for h in hooks:
                h.remove()
        return store

    # --- state ---------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        """Subclass state for ``state_dict`` (default none)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what ``extra_state`` saved."""

    def state_dict(self) -> dict:
        """Step count, masks, random state and subclass state."""
        return {"step": self.step_count, "masks": {n: m.cpu() for n, m in self.layer_masks().items()},
                "generator": self.generator.get_state(), "density": self.density, "extra": self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore masks (carrying optimizer state), step and random state. Load this before the model's
        and optimizer's state dicts so that packed layers already have the checkpoint's shapes."""
        unknown = set(state["masks"]) - set(self.names)
        if unknown:
            raise ValueError(f"state_dict has masks for layers this sparsifier does not manage: {sorted(unknown)[:5]}")
        self._apply(dict(state["masks"]))
        self.step_count = int(state["step"])
        self.generator.set_state(state["generator"])
        self.load_extra_state(state.get("extra", {}))
        self._prepare_next()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(density={self.density}, distribution={self.distribution!r}, "
                f"layers={len(self.names)}, step={self.step_count})")
