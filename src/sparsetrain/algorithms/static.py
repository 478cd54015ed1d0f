"""Static sparse training: masks chosen once at initialisation (random, magnitude, SNIP, GraSP, SynFlow)
and kept fixed."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch.nn.functional as F
from torch import nn

from ..masks import criteria
from ..nn import protocol
from ..nn.base import PackedSparseModule
from ..nn.convert import densify
from .base import Masks, Sparsifier
from .distributed import all_reduce_scores

CRITERIA = ("random", "magnitude", "snip", "grasp", "synflow")


class Static(Sparsifier):
    """Fixed masks from ``criterion`` (``random``, ``magnitude`` = one-shot magnitude pruning,
    ``snip``, ``grasp``, ``synflow``), or the given ``masks``.

    SNIP and GraSP read ``n_batches`` ``(inputs, targets)`` pairs from ``data`` and score with
    ``loss_fn``; SynFlow needs ``example_input`` (only its shape is used) and runs ``synflow_rounds``
    rounds. Scores are all-reduced across ranks under torch.distributed.
    """

    def __init__(self, model: nn.Module, optimizer, density: float | None = 0.1, distribution: str = "erk", *,
                 criterion: str = "random", data: Iterable | None = None, n_batches: int = 1,
                 loss_fn: Callable = F.cross_entropy, synflow_rounds: int = 100, **options) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if criterion in ("snip", "grasp") and data is None and options.get("masks") is None:
            raise ValueError(f"criterion={criterion!r} needs data: an iterable of (inputs, targets) batches")
        if criterion == "synflow" and options.get("example_input") is None and options.get("masks") is None:
            raise ValueError("criterion='synflow' needs example_input (a batch shaped like the training input)")
        self.criterion, self.data, self.n_batches, self.loss_fn = criterion, data, n_batches, loss_fn
        self.synflow_rounds = synflow_rounds
        super().__init__(model, optimizer, density, distribution, **options)

    def _dense_model(self) -> nn.Module:
        """The model itself, or a dense copy when some chosen layer is packed (criteria need plain layers)."""
        if any(isinstance(self.layer(n), PackedSparseModule) for n in self.names):
            return densify(copy.deepcopy(self.model))
        return self.model

    def initial_masks(self) -> Masks:
        """Masks from the criterion at the layer-wise densities."""
        if self.criterion == "random":
            return super().initial_masks()
        if self.criterion == "magnitude":
            return self.select({n: protocol.dense_weight(self.layer(n)).abs() for n in self.names}, self.density)
        net = self._dense_model()
        if self.criterion == "synflow":
            shape = tuple(self.example_input.shape[1:])
            return criteria.synflow(net, self.names, shape, self.density,
                                    lambda s, d: self.select(all_reduce_scores(s), d), self.synflow_rounds)
        fn = criteria.snip if self.criterion == "snip" else criteria.grasp
        scores = fn(net, self.names, self.data, self.n_batches, self.loss_fn)
        return self.select(all_reduce_scores(scores), self.density)

    def extra_state(self) -> dict:
        return {"criterion": self.criterion}
