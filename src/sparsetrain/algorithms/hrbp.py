"""HRBP algorithms (HRBP paper §4.2): static sparse training on HRBP-random block masks, and dynamic
sparse training with block-wise updating; plus the random-channel baseline. Layers run as HRBP block
layers (``BlockSparseConv2d``/``BlockSparseLinear``) once packed."""
from __future__ import annotations

import torch
from torch import nn

from ..formats.block_layout import BlockLayout, _shape4
from ..masks import hrbp_random, random_channel
from ..masks.distributions import layer_densities
from ..nn import protocol
from ..nn.base import PackedSparseModule
from ..nn.block_sparse import BlockSparseConv2d, BlockSparseLinear
from .base import Masks, Sparsifier
from .distributed import all_reduce_scores
from .dynamic import DynamicSparsifier


def _densities(algo: Sparsifier) -> dict[str, float]:
    dist = "uniform" if algo.distribution == "global" else algo.distribution  # no scores at init: global = uniform
    return layer_densities(algo.shapes, algo.density, dist)


def _hrbp_random_layouts(algo: Sparsifier, groups: int, block_density: float | None) -> dict[str, BlockLayout]:
    return {n: hrbp_random(algo.shapes[n], min(d, 1.0), groups=groups, block_density=block_density,
                           generator=algo.generator) for n, d in _densities(algo).items()}


def _block_layer(module: nn.Module, mask: torch.Tensor, backend: str | None) -> PackedSparseModule:
    backend = "block-cpu" if backend in ("auto", "sparse-cpu") else backend
    if isinstance(module, nn.Linear):
        return BlockSparseLinear.from_dense(module, mask, backend=backend)
    return BlockSparseConv2d.from_dense(module, mask, backend=backend)


class HRBPStatic(Sparsifier):
    """Static sparse training on HRBP-random masks (random row groups, channels and kernel pattern per
    group) at the layer-wise densities; the achievable block density can differ slightly from the
    target (see ``masks.hrbp``). ``groups`` and ``block_density`` are HRBP's t and s."""

    def __init__(self, model: nn.Module, optimizer, density: float = 0.1, distribution: str = "erk", *,
                 groups: int = 8, block_density: float | None = None, **options) -> None:
        self.groups, self.block_density = groups, block_density
        super().__init__(model, optimizer, density, distribution, **options)

    def initial_masks(self) -> Masks:
        return {n: lay.mask for n, lay in _hrbp_random_layouts(self, self.groups, self.block_density).items()}

    def packed_layer(self, name, module, mask):
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            return super().packed_layer(name, module, mask)
        return _block_layer(module, mask, self.backend)


class RandomChannel(Sparsifier):
    """Baseline: whole output channels kept at random at the layer-wise densities (HRBP's RC)."""

    def initial_masks(self) -> Masks:
        return {n: random_channel(self.shapes[n], min(d, 1.0), self.generator) for n, d in _densities(self).items()}


class HRBPDynamic(DynamicSparsifier):
    """HRBP block-wise updating (§4.2, Fig. 4): at each update every row (output channel) drops
    ``round(f(t) * nnz_row)`` weights of least magnitude and grows as many inactive ones of largest
    dense-gradient magnitude; then each group, keeping its rows, reruns HRBP's pattern finding on the
    updated mask (the c channels, then the p kernel cells with most nonzeros). Block shapes, hence
    nnz, stay fixed. Starts from HRBP-random masks; schedule arguments as RigL."""

    needs_dense_grad = True

    def __init__(self, model: nn.Module, optimizer, density: float = 0.1, distribution: str = "erk", *,
                 groups: int = 8, block_density: float | None = None, **options) -> None:
        self.groups, self.block_density = groups, block_density
        self.layouts: dict[str, BlockLayout] = {}
        super().__init__(model, optimizer, density, distribution, **options)

    def initial_masks(self) -> Masks:
        self.layouts = _hrbp_random_layouts(self, self.groups, self.block_density)
        return {n: lay.mask for n, lay in self.layouts.items()}

    def packed_layer(self, name, module, mask):
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            return super().packed_layer(name, module, mask)
        return _block_layer(module, self.layouts[name], self.backend)

    def update_masks(self) -> Masks:
        grads = {n: g.abs() for n, g in all_reduce_scores(self.dense_grads()).items()}
        f = self.drop_schedule(self.step_count)
        out = {}
        for n in self.names:
            lay = self.layouts[n]
            co, ci, kh, kw = _shape4(self.shapes[n])
            mask = protocol.get_mask(self.layer(n)).reshape(co, -1).cpu()
            w = protocol.dense_weight(self.layer(n)).abs().reshape(co, -1).double().cpu()
            g = grads[n].reshape(co, -1).double().cpu()
            k = torch.round(f * mask.sum(1).double()).long()  # per row
            drop = _row_rank(torch.where(mask, w, torch.inf), descending=False) < k[:, None]
            survivors = mask & ~drop
            grow = _row_rank(torch.where(survivors, -torch.inf, g), descending=True) < k[:, None]
            updated = (survivors | grow).view(co, ci, kh * kw)
            self.layouts[n] = lay = _regroup(lay, updated)
            new = lay.mask.to(mask.device)
            out[n] = new
            self.last_update[n] = (int(k.sum()), int((new.reshape(co, -1) & ~mask).sum()))
        return out

    def extra_state(self) -> dict:
        state = super().extra_state()
        state["layouts"] = {n: (lay.rows, lay.channels, lay.cells) for n, lay in self.layouts.items()}
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        for n, (rows, chans, cells) in state.get("layouts", {}).items():
            self.layouts[n] = BlockLayout(self.shapes[n], rows, chans, cells)


def _row_rank(scores: torch.Tensor, descending: bool) -> torch.Tensor:
    """Rank of every entry within its row (0 = first in the given order; ties by index)."""
    order = torch.argsort(scores, dim=1, descending=descending, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return ranks


def _regroup(layout: BlockLayout, mask3: torch.Tensor) -> BlockLayout:
    """HRBP pattern finding per group with the row groups kept: the c input channels with most
    nonzeros over the group's rows, then the p kernel cells with most nonzeros in those channels."""
    c, p = layout.channels.shape[1], layout.cells.shape[1]
    chans, cells = [], []
    for rows in layout.rows:
        sub = mask3[rows].double()  # (R, C_I, KK)
        ch = torch.argsort(-sub.sum((0, 2)), stable=True)[:c].sort().values
        ce = torch.argsort(-sub[:, ch].sum((0, 1)), stable=True)[:p].sort().values
        chans.append(ch)
        cells.append(ce)
    return BlockLayout(tuple(layout.weight_shape), layout.rows, torch.stack(chans), torch.stack(cells))
