"""Lottery-ticket iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020)."""
from __future__ import annotations

import torch
from torch import nn

from ..nn import protocol
from .base import Masks, Sparsifier


class LotteryTicket(Sparsifier):
    """Train ``steps_per_round`` steps, prune to ``density ** (r / rounds)`` by magnitude (round r),
    rewind every weight to its value at ``rewind_step`` (0: initialisation; > 0: late rewinding) and
    clear the optimizer state; after ``rounds`` prunes the final ticket trains on. Total training is
    ``(rounds + 1) * steps_per_round`` steps; ``self.round`` tells the caller when to restart an LR
    schedule. The default distribution is ``global`` (one threshold, as for deep networks in LTH)."""

    def __init__(self, model: nn.Module, optimizer, density: float = 0.1, distribution: str = "global", *,
                 steps_per_round: int, rounds: int = 5, rewind_step: int = 0, **options) -> None:
        for name, v, low in (("steps_per_round", steps_per_round, 1), ("rounds", rounds, 1), ("rewind_step", rewind_step, 0)):
            if not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if rewind_step >= steps_per_round:
            raise ValueError(f"rewind_step ({rewind_step}) must be below steps_per_round ({steps_per_round})")
        self.steps_per_round, self.rounds, self.rewind_step = steps_per_round, rounds, rewind_step
        self.round = 0
        self.snapshot: dict[str, torch.Tensor] | None = None
        super().__init__(model, optimizer, density, distribution, **options)
        if rewind_step == 0:
            self._take_snapshot()

    def initial_masks(self) -> Masks:
        return {n: torch.ones(s, dtype=torch.bool) for n, s in self.shapes.items()}

    def update_due(self, step: int) -> bool:
        return step % self.steps_per_round == 0 and step // self.steps_per_round <= self.rounds

    def step(self) -> None:
        super().step()
        if self.step_count == self.rewind_step and self.snapshot is None:
            self._take_snapshot()

    def _layer_keys(self) -> set[str]:
        """state_dict keys that belong to a sparse layer's weight (packed or masked), not its bias."""
        keys = set()
        for key in self.model.state_dict():
            layer, _, leaf = key.rpartition(".")
            if layer in self.names and leaf != "bias":
                keys.add(key)
        return keys

    def _take_snapshot(self) -> None:
        skip = self._layer_keys()
        snap = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k not in skip}
        snap.update({f"{n}.weight": protocol.dense_weight(self.layer(n)).clone() for n in self.names})
        self.snapshot = snap

    def update_masks(self) -> Masks:
        self.round = self.step_count // self.steps_per_round
        scores = {n: protocol.dense_weight(self.layer(n)).abs() for n in self.names}
        return self.select(scores, self.density ** (self.round / self.rounds), candidates=self.layer_masks())

    def _apply(self, masks: Masks, weights=None) -> None:
        if weights is not None or self.snapshot is None or not masks or self.step_count == 0:
            return super()._apply(masks, weights)
        # a prune: rewind the weights of the surviving connections and everything else
        super()._apply(masks, {n: self.snapshot[f"{n}.weight"] for n in masks})
        skip = self._layer_keys()
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if k not in skip and k in self.snapshot and v.shape == self.snapshot[k].shape:
                    v.copy_(self.snapshot[k])
        if self.optimizer is not None:
            self.optimizer.state.clear()

    def extra_state(self) -> dict:
        return {"round": self.round, "snapshot": self.snapshot}

    def load_extra_state(self, state: dict) -> None:
        self.round = state.get("round", 0)
        self.snapshot = state.get("snapshot")
