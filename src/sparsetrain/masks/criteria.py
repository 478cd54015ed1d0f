"""Pruning criteria: per-layer scores where a higher score means "keep".

Scores are computed on a model whose chosen layers are plain ``nn.Linear``/``nn.Conv2d`` (the
algorithms hand in a dense copy when the layers are packed). Data-dependent criteria read the first
``n_batches`` ``(inputs, targets)`` pairs of ``batches``.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

Scores = dict[str, torch.Tensor]


def _weights(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Parameter]:
    out = {}
    for n in names:
        m = model.get_submodule(n)
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"layer {n!r} must be nn.Linear or nn.Conv2d for a gradient criterion, "
                            f"got {type(m).__name__}")
        out[n] = m.weight
    return out


def _take(batches: Iterable, n_batches: int) -> list:
    if not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches must be an integer >= 1, got {n_batches!r}")
    taken = list(itertools.islice(iter(batches), n_batches))
    if not taken:
        raise ValueError("batches yielded no (inputs, targets) pair")
    return taken


def magnitude(weights: Mapping[str, torch.Tensor]) -> Scores:
    """|w| (Han et al.; Zhu & Gupta)."""
    return {n: w.detach().abs() for n, w in weights.items()}


def random_scores(shapes: Mapping[str, tuple], generator: torch.Generator | None = None) -> Scores:
    """Uniform random scores: the top-k of them is a uniformly random mask."""
    return {n: torch.rand(tuple(s), generator=generator) for n, s in shapes.items()}


def snip(model: nn.Module, names: Iterable[str], batches: Iterable, n_batches: int = 1,
         loss_fn: Callable = F.cross_entropy) -> Scores:
    """SNIP connection sensitivity |g * w| (Lee et al. 2019), g the loss gradient summed over batches."""
    weights = _weights(model, names)
    grads = {n: torch.zeros_like(w) for n, w in weights.items()}
    for x, y in _take(batches, n_batches):
        loss = loss_fn(model(x), y)
        for n, g in zip(weights, torch.autograd.grad(loss, list(weights.values()))):
            grads[n] += g
    return {n: (grads[n] * w).detach().abs() for n, w in weights.items()}


def grasp(model: nn.Module, names: Iterable[str], batches: Iterable, n_batches: int = 1,
          loss_fn: Callable = F.cross_entropy, temperature: float = 200.0) -> Scores:
    """GraSP (Wang et al. 2020): w * (H g), the weights whose removal most reduces gradient flow
    score lowest. The paper prunes the largest ``-w * Hg``; this returns ``w * Hg`` ("keep the
    highest"). Logits are divided by ``temperature`` as in the reference implementation."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    weights = _weights(model, names)
    params = list(weights.values())
    data = _take(batches, n_batches)
    g = [torch.zeros_like(p) for p in params]
    for x, y in data:
        for acc, gi in zip(g, torch.autograd.grad(loss_fn(model(x) / temperature, y), params)):
            acc += gi
    hg = [torch.zeros_like(p) for p in params]
    for x, y in data:
        gi = torch.autograd.grad(loss_fn(model(x) / temperature, y), params, create_graph=True)
        z = sum((a * b.detach()).sum() for a, b in zip(gi, g))
        for acc, h in zip(hg, torch.autograd.grad(z, params)):
            acc += h
    return {n: (w * h).detach() for (n, w), h in zip(weights.items(), hg)}


def synflow(model: nn.Module, names: Iterable[str], input_shape: tuple[int, ...], density: float,
            select: Callable[[Scores, float], dict[str, torch.Tensor]], rounds: int = 100) -> dict[str, torch.Tensor]:
    """Iterative SynFlow (Tanaka et al. 2020); returns the final masks.

    Data-free: on a float64 copy with |parameters|, in eval mode, the score is |w * dR/dw| with
    R = sum(model(ones)). Round k of ``rounds`` keeps ``density ** (k / rounds)`` of the weights,
    chosen by ``select(scores, density_k)`` (the caller's per-layer or global rule).
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    names = list(names)
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    weights = _weights(net, names)
    w0 = {n: w.detach().clone() for n, w in weights.items()}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in w0.items()}
    x = torch.ones((1,) + tuple(input_shape), dtype=torch.float64, device=next(iter(w0.values())).device)
    for k in range(1, rounds + 1):
        with torch.no_grad():
            for n, w in weights.items():
                w.copy_(w0[n] * masks[n])
        grads = torch.autograd.grad(net(x).sum(), list(weights.values()))
        # pruned weights score below every kept one, so a round never revives them
        scores = {n: torch.where(masks[n], (g * w).detach().abs(), -1.0) for (n, w), g in zip(weights.items(), grads)}
        masks = select(scores, density ** (k / rounds))
    return masks
