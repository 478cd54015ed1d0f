"""Gradual magnitude pruning (Zhu & Gupta 2017) and the SparseProp from-scratch preset."""
from __future__ import annotations

import torch
from torch import nn

from ..masks.distributions import layer_counts
from ..nn import protocol
from .base import Masks, Sparsifier
from .schedules import CubicSparsity


class GMP(Sparsifier):
    """Magnitude pruning on Zhu & Gupta's cubic schedule: dense until ``start_step``, then every
    ``update_interval`` steps (and at ``end_step``) prune the smallest active weights so the density
    follows ``initial_density -> density`` by ``end_step``. ``distribution="uniform"`` prunes every
    layer to the same density; ``"global"`` uses one magnitude threshold over all layers; ``"erk"``/
    ``"er"`` follow their layer-wise targets. ``start_step == end_step`` is one-shot pruning there."""

    def __init__(self, model: nn.Module, optimizer, density: float = 0.1, distribution: str = "uniform", *,
                 end_step: int, start_step: int = 0, update_interval: int = 100, initial_density: float = 1.0,
                 **options) -> None:
        if not isinstance(update_interval, int) or update_interval < 1:
            raise ValueError(f"update_interval must be an integer >= 1, got {update_interval!r}")
        self.schedule = CubicSparsity(initial_density, density, start_step, end_step)
        self.update_interval = update_interval
        super().__init__(model, optimizer, density, distribution, **options)

    def initial_masks(self) -> Masks:
        masks = {n: torch.ones(s, dtype=torch.bool) for n, s in self.shapes.items()}
        return self._prune(masks, 0) if self.update_due(0) else masks

    def update_due(self, step: int) -> bool:
        s = self.schedule
        return s.start <= step <= s.end and ((step - s.start) % self.update_interval == 0 or step == s.end)

    def density_at(self, step: int) -> float:
        """Overall density the schedule asks for after ``step``."""
        return self.schedule(step)

    def update_masks(self) -> Masks:
        return self._prune(self.layer_masks(), self.step_count)

    def _prune(self, masks: Masks, step: int) -> Masks:
        d = self.density_at(step)
        scores = {n: protocol.dense_weight(self.layer(n)).abs() for n in self.names}
        if self.distribution == "global":
            return self.select(scores, d, candidates=masks)
        # per layer: the final layer-wise targets scaled by the schedule's progress in sparsity
        final = layer_counts(self.shapes, self.density, self.distribution)
        total = {n: m.numel() for n, m in masks.items()}
        progress = (1.0 - d) / (1.0 - self.density) if self.density < 1.0 else 1.0
        counts = {n: min(int(masks[n].sum()), int(round(total[n] - progress * (total[n] - final[n]))))
                  for n in self.names}
        out = {}
        for n in self.names:
            flat = torch.where(masks[n].to(scores[n].device), scores[n].double(), -1.0).reshape(-1)
            m = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
            if counts[n]:
                m[torch.topk(flat, counts[n], sorted=False).indices] = True
            out[n] = m.view(masks[n].shape)
        return out


def sparseprop_gmp(model: nn.Module, optimizer, density: float = 0.1, *, steps_per_epoch: int,
                   distribution: str = "uniform", **options) -> GMP:
    """SparseProp's from-scratch recipe (sec. 4.2): dense 10 epochs, prune 5% at epoch 10, then every
    10 epochs on the cubic schedule to ``density`` at epoch 80, fine-tune to epoch 100."""
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
    return GMP(model, optimizer, density, distribution, start_step=10 * steps_per_epoch,
               end_step=80 * steps_per_epoch, update_interval=10 * steps_per_epoch, initial_density=0.95, **options)
