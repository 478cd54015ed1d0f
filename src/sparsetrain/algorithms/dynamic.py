"""Dynamic sparse training: SET and RigL (drop by magnitude, grow at random / by gradient)."""
from __future__ import annotations

import torch
from torch import nn

from ..nn import protocol
from .base import Masks, Sparsifier
from .distributed import all_reduce_scores
from .schedules import Constant, CosineDecay, UpdateSchedule


class DynamicSparsifier(Sparsifier):
    """Every ``update_interval`` steps until ``stop_fraction * total_steps``, each layer drops
    ``round(f(t) * nnz)`` active weights of least magnitude and grows as many by ``grow_scores``
    (among the inactive ones, just-dropped included); ``f`` is the cosine decay of ``drop_fraction``
    (``drop_schedule="constant"`` keeps it fixed). Grown weights start at zero with zero optimizer
    state; a dropped-then-regrown weight keeps its value. The masks start random at ``density``."""

    def __init__(self, model: nn.Module, optimizer, density: float = 0.1, distribution: str = "erk", *,
                 total_steps: int, update_interval: int = 100, drop_fraction: float = 0.3,
                 stop_fraction: float = 0.75, drop_schedule: str = "cosine", **options) -> None:
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        if not (isinstance(stop_fraction, (int, float)) and 0.0 < stop_fraction <= 1.0):
            raise ValueError(f"stop_fraction must be a number in (0, 1], got {stop_fraction!r}")
        end = max(1, int(round(stop_fraction * total_steps)))
        if drop_schedule == "cosine":
            self.drop_schedule = CosineDecay(drop_fraction, end)
        elif drop_schedule == "constant":
            CosineDecay(drop_fraction, end)  # validates drop_fraction
            self.drop_schedule = Constant(drop_fraction)
        else:
            raise ValueError(f"drop_schedule must be 'cosine' or 'constant', got {drop_schedule!r}")
        self.schedule = UpdateSchedule(update_interval, end)
        self.total_steps = total_steps
        self.last_update: dict[str, tuple[int, int]] = {}
        super().__init__(model, optimizer, density, distribution, **options)

    def update_due(self, step: int) -> bool:
        return self.schedule.due(step)

    def grow_scores(self, masks: Masks) -> Masks:
        """Scores for growing (higher grows first); one tensor per layer."""
        raise NotImplementedError

    def drop_counts(self, masks: Masks) -> dict[str, int]:
        """How many active weights each layer drops (and grows) at this update."""
        f = self.drop_schedule(self.step_count)
        return {n: int(round(f * int(m.sum()))) for n, m in masks.items()}

    def update_masks(self) -> Masks:
        masks = self.layer_masks()
        grow = self.grow_scores(masks)
        counts = self.drop_counts(masks)
        out = {}
        for n, mask in masks.items():
            w = protocol.dense_weight(self.layer(n)).abs().double()
            nnz, k = int(mask.sum()), counts[n]
            kept = _top(torch.where(mask, w, -1.0), nnz - k)
            grown = _top(torch.where(kept, -float("inf"), grow[n].to(w.device).double()), k)
            out[n] = kept | grown
            self.last_update[n] = (k, int((grown & ~mask).sum()))
        return out

    def extra_state(self) -> dict:
        return {"last_update": dict(self.last_update)}

    def load_extra_state(self, state: dict) -> None:
        self.last_update = dict(state.get("last_update", {}))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` highest entries (exactly ``k``)."""
    flat = scores.reshape(-1)
    m = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        m[torch.topk(flat, k, sorted=False).indices] = True
    return m.view(scores.shape)


class SET(DynamicSparsifier):
    """SET (Mocanu et al. 2018): drop by magnitude, grow at random (seeded: same on every rank)."""

    def grow_scores(self, masks: Masks) -> Masks:
        return {n: torch.rand(m.shape, generator=self.generator) for n, m in masks.items()}


class RigL(DynamicSparsifier):
    """RigL (Evci et al. 2020): drop by magnitude, grow by dense-gradient magnitude. The dense
    gradient is requested for the one backward before each update (all-reduced across ranks)."""

    needs_dense_grad = True

    def grow_scores(self, masks: Masks) -> Masks:
        return {n: g.abs() for n, g in all_reduce_scores(self.dense_grads()).items()}
