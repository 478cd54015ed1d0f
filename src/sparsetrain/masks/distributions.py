"""Layer-wise densities: how a global density is spread over the layers being sparsified.

``uniform``: every layer gets ``density``. ``er`` (Mocanu et al.): density proportional to
``(n_in + n_out) / (n_in * n_out)``. ``erk`` (RigL, Evci et al. 2020): proportional to
``sum(shape) / prod(shape)`` including the kernel dimensions; a layer whose density would exceed 1 is
made dense and the others re-solved. ``global``: one threshold on scores across all layers.
All return exact integer counts whose sum is ``round(density * total)``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

DISTRIBUTIONS = ("uniform", "er", "erk", "global")


def check_density(density: float, name: str = "density") -> float:
    """Raise ValueError unless ``density`` is a number in (0, 1]."""
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not (0.0 < density <= 1.0):
        raise ValueError(f"{name} must be a number in (0, 1], got {density!r}")
    return float(density)


def check_distribution(distribution: str) -> str:
    """Raise ValueError unless ``distribution`` is a known name."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    return distribution


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def _raw(shape: Sequence[int], distribution: str, power: float) -> float:
    if distribution == "er":
        n_out, n_in = int(shape[0]), int(shape[1])
        return (n_in + n_out) / (n_in * n_out)
    return (sum(int(s) for s in shape) / _numel(shape)) ** power  # erk: kernel dims included


def layer_densities(shapes: Mapping[str, Sequence[int]], density: float, distribution: str = "erk",
                    erk_power_scale: float = 1.0) -> dict[str, float]:
    """Per-layer target densities whose parameter-weighted mean is ``density`` (uniform, er, erk)."""
    density = check_density(density)
    check_distribution(distribution)
    if distribution == "global":
        raise ValueError("distribution='global' depends on scores: use layer_counts(..., scores=...)")
    if not shapes:
        raise ValueError("shapes must name at least one layer")
    if distribution == "uniform":
        return {n: density for n in shapes}
    raw = {n: _raw(s, distribution, erk_power_scale) for n, s in shapes.items()}
    dense: set[str] = set()
    while True:  # RigL's loop: layers that would exceed density 1 become dense, re-solve the rest
        rhs = divisor = 0.0
        for n, s in shapes.items():
            size = _numel(s)
            if n in dense:
                rhs -= size * (1.0 - density)
            else:
                rhs += size * density
                divisor += raw[n] * size
        eps = rhs / divisor if divisor else 0.0
        over = [n for n in shapes if n not in dense and eps * raw[n] > 1.0]
        if not over:
            break
        top = max(raw[n] for n in over)
        dense.update(n for n in over if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def layer_counts(shapes: Mapping[str, Sequence[int]], density: float, distribution: str = "erk",
                 scores: Mapping[str, torch.Tensor] | None = None, erk_power_scale: float = 1.0) -> dict[str, int]:
    """Number of weights kept per layer; the total is exactly ``round(density * total)``.

    For ``global`` the counts come from the top scores across all layers (``scores`` required);
    otherwise each layer gets floor(target) and the rounding remainder goes to the layers with the
    largest fractional parts (so each count is within 1 of its layer's target density).
    """
    density = check_density(density)
    check_distribution(distribution)
    total = sum(_numel(s) for s in shapes.values())
    keep = int(round(density * total))
    if distribution == "global":
        if scores is None:
            raise ValueError("distribution='global' needs scores (one tensor per layer)")
        names = list(shapes)
        flat = torch.cat([scores[n].detach().reshape(-1).double().cpu() for n in names])
        chosen = torch.zeros(flat.numel(), dtype=torch.bool)
        chosen[torch.topk(flat, keep, sorted=False).indices] = True
        counts, start = {}, 0
        for n in names:
            size = _numel(shapes[n])
            counts[n] = int(chosen[start:start + size].sum())
            start += size
        return counts
    dens = layer_densities(shapes, density, distribution, erk_power_scale)
    target = {n: min(dens[n], 1.0) * _numel(s) for n, s in shapes.items()}
    counts = {n: int(math.floor(t + 1e-9)) for n, t in target.items()}
    left = keep - sum(counts.values())
    order = sorted(shapes, key=lambda n: (target[n] - counts[n]), reverse=True)
    while left > 0:
        progressed = False
        for n in order:
            if left and counts[n] < _numel(shapes[n]):
                counts[n] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    for n in reversed(order):  # rounding can overshoot only by the floor tolerance
        while left < 0 and counts[n] > 0:
            counts[n] -= 1
            left += 1
    return counts


def topk_masks(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int],
               candidates: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per layer, a bool mask keeping the ``counts[name]`` highest scores (only among ``candidates``)."""
    out = {}
    for n, s in scores.items():
        flat = s.detach().reshape(-1).double()
        if candidates is not None:
            flat = torch.where(candidates[n].reshape(-1).to(flat.device), flat, torch.full_like(flat, -math.inf))
        k = int(counts[n])
        if k > flat.numel():
            raise ValueError(f"layer {n!r}: cannot keep {k} of {flat.numel()} weights")
        m = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        if k:
            m[torch.topk(flat, k, sorted=False).indices] = True
        out[n] = m.view(s.shape)
    return out
