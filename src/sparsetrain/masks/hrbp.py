"""HRBP regrouping (HRBP paper §4.1, Algorithm 1): an unstructured conv mask becomes ``t`` dense blocks of
identical shape that stay dense blocks in the backward pass, and HRBP-random masks for static sparse training.

Choices the paper leaves open (each is tested):
- **Pattern size.** ``block_density`` s must be a multiple of 1/(Kh*Kw) with r <= s <= 1. ``None`` (the default)
  means the paper's 4/9 for 3x3 kernels and generally p = max(round(4/9 * Kh*Kw), ceil(r * Kh*Kw)) cells, so
  1x1 kernels and densities above 4/9 work without arguments.
- **Rounding.** Each group keeps c = clip(round(r * C_I * Kh*Kw / p), 1, C_I) input channels, so the derived
  density c*p / (C_I*Kh*Kw) is the achievable value nearest to r; it differs from r by at most
  p / (2 * C_I * Kh*Kw) unless c was clipped.
- **Groups.** Blocks must have equal shapes, so the number of groups used is the largest divisor of C_O that is
  at most ``groups`` and at most C_O // min_rows (at least 1); ``layout.groups`` reports it.
- **Balanced clustering.** Rows of the kernel-wise mask m' are clustered greedily: the unassigned row with most
  kept kernels seeds a group, which is filled with the R - 1 unassigned rows of highest Jaccard similarity to the
  seed (ties: lower index). Deterministic, exactly equal sizes, O(C_O^2 * C_I) as one matrix product — k-means
  style balanced clustering would need an assignment solver for no gain the paper reports.
- **Kernel-wise mask.** m' keeps the c * C_O kernels with most nonzeros (the paper's fraction r/s, rounded
  so it matches what the blocks can hold); a group's channels are ranked by the nonzeros of its kept kernels,
  then by all its nonzeros, then by index; its cells by nonzeros over the group's kept channels, then by index.
- **Depthwise** weights (C_I == 1, Appendix B) keep every kernel: c = 1 and p = max(1, round(r * Kh*Kw)) when
  ``block_density`` is None, i.e. each group shares one sparse kernel pattern.
- **Linear** weights (2-D, Appendix C) are 1x1 kernels: blocks are (rows x input features).
- The first conv (3 input channels) staying dense is a layer-selection rule (``sparsify``/algorithms), not
  this function's: ``hrbp`` regroups whatever it is given.
"""
from __future__ import annotations

import math

import torch

from ..formats.block_layout import BlockLayout, _shape4


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def _pattern_size(density: float, kk: int, ci: int, block_density: float | None) -> int:
    """Number p of kernel cells per pattern (s = p / kk), checked against the density r."""
    if block_density is None:
        if ci == 1:
            return max(1, round(density * kk))
        return min(kk, max(round(4 / 9 * kk), math.ceil(density * kk - 1e-9), 1))
    if not isinstance(block_density, (int, float)) or not 0 < block_density <= 1:
        raise ValueError(f"block_density must be in (0, 1], got {block_density!r}")
    p = round(block_density * kk)
    if p < 1 or abs(block_density * kk - p) > 1e-6:
        raise ValueError(f"block_density must be a multiple of 1/(Kh*Kw) = 1/{kk} "
                         f"(one of {', '.join(f'{i}/{kk}' for i in range(1, kk + 1))}), got {block_density!r}")
    if density > block_density + 1e-9:
        raise ValueError(f"block_density s={block_density:.4g} must be >= the mask density r={density:.4g} "
                         "(each block keeps s of its kernel cells and r/s of the kernels)")
    return p


def _num_groups(co: int, groups: int, min_rows: int) -> int:
    _check_int("groups", groups, 1)
    _check_int("min_rows", min_rows, 1)
    if groups > co:
        raise ValueError(f"groups must be in [1, C_O={co}] (output channels of the weight), got {groups}")
    cap = max(1, min(groups, co // min_rows))
    return max(d for d in range(1, cap + 1) if co % d == 0)


def _channels_per_group(density: float, ci: int, kk: int, p: int) -> int:
    return min(ci, max(1, round(density * ci * kk / p)))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores (ties: lower index first), ascending."""
    order = torch.argsort(-scores, stable=True)
    return order[:k].sort().values


def _balanced_clusters(kmask: torch.Tensor, t: int) -> torch.Tensor:
    """Greedy seed-and-fill clustering of the rows of ``kmask`` into ``t`` equal groups by Jaccard similarity."""
    co = kmask.shape[0]
    size = co // t
    f = kmask.to(torch.float64)
    inter = f @ f.T
    n = f.sum(1)
    union = n[:, None] + n[None, :] - inter
    jac = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    free = torch.ones(co, dtype=torch.bool)
    seed_order = torch.argsort(-n, stable=True).tolist()
    groups = []
    for seed in seed_order:
        if not free[seed]:
            continue
        free[seed] = False
        sim = torch.where(free, jac[seed], torch.full_like(jac[seed], -1.0))
        mates = torch.argsort(-sim, stable=True)[:size - 1]
        free[mates] = False
        groups.append(torch.cat([torch.tensor([seed]), mates]).sort().values)
    return torch.stack(groups)


def hrbp(mask: torch.Tensor, groups: int = 8, block_density: float | None = None, min_rows: int = 8) -> BlockLayout:
    """Regroup an unstructured bool ``mask`` of a conv (C_O, C_I, Kh, Kw) or linear (out, in) weight into
    equal-shape dense blocks (HRBP Algorithm 1); ``layout.mask`` is the derived mask. See the module docstring."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool torch.Tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    shape = tuple(mask.shape)
    co, ci, kh, kw = _shape4(shape)
    kk = kh * kw
    m = mask.detach().reshape(co, ci, kk).cpu()
    density = float(m.sum()) / m.numel() if m.numel() else 0.0
    if density == 0.0:
        raise ValueError("mask must keep at least one weight (its density is 0)")
    t = _num_groups(co, groups, min_rows)
    p = _pattern_size(density, kk, ci, block_density)
    c = _channels_per_group(density, ci, kk, p)
    counts = m.sum(2)  # nonzeros per kernel (C_O, C_I)
    keep = _top(counts.flatten().to(torch.float64), c * co)
    kmask = torch.zeros(co * ci, dtype=torch.bool)
    kmask[keep] = True
    kmask = kmask.view(co, ci)
    rows = _balanced_clusters(kmask, t)
    chans, cells = [], []
    for g in range(t):
        r = rows[g]
        kept = (counts[r] * kmask[r]).sum(0).to(torch.float64)
        score = kept * (kk * co + 1) + counts[r].sum(0)  # lexicographic: kept-kernel nonzeros, then all nonzeros
        ch = _top(score, c)
        chans.append(ch)
        cells.append(_top(m[r][:, ch].sum((0, 1)).to(torch.float64), p))
    return BlockLayout(shape, rows, torch.stack(chans), torch.stack(cells)).to(mask.device)


def hrbp_random(weight_shape, density: float, groups: int = 8, block_density: float | None = None,
                min_rows: int = 8, generator: torch.Generator | None = None) -> BlockLayout:
    """HRBP-based random mask (HRBP §4.2): random equal row groups, random channels and a random pattern per group."""
    shape = tuple(int(s) for s in weight_shape)
    co, ci, kh, kw = _shape4(shape)
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    kk = kh * kw
    t = _num_groups(co, groups, min_rows)
    p = _pattern_size(float(density), kk, ci, block_density)
    c = _channels_per_group(float(density), ci, kk, p)
    rows = torch.randperm(co, generator=generator).view(t, co // t).sort(1).values
    chans = torch.stack([torch.randperm(ci, generator=generator)[:c].sort().values for _ in range(t)])
    cells = torch.stack([torch.randperm(kk, generator=generator)[:p].sort().values for _ in range(t)])
    return BlockLayout(shape, rows, chans, cells)
