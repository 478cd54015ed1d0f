"""N:M masks by magnitude: plain N:M along input channels, and transposable N:M (HRBP Appendix H)."""
from __future__ import annotations

import itertools

import torch


def _check_nm(n: int, m: int) -> None:
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if n > m:
        raise ValueError(f"n must be <= m, got n={n}, m={m}")


def _as_cells(weight: torch.Tensor) -> torch.Tensor:
    """(Kh*Kw, C_O, C_I) view of a conv or linear weight: one (C_O x C_I) matrix per kernel cell."""
    if weight.dim() == 2:
        return weight.unsqueeze(0)
    if weight.dim() == 4:
        return weight.flatten(2).permute(2, 0, 1)
    raise ValueError(f"weight must be 2-D (linear) or 4-D (conv), got shape {tuple(weight.shape)}")


def _from_cells(cells: torch.Tensor, shape) -> torch.Tensor:
    if len(shape) == 2:
        return cells[0]
    return cells.permute(1, 2, 0).reshape(shape)


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` largest-magnitude weights in every group of ``m`` consecutive input channels (per output
    channel and kernel cell: the NHWC-contiguous direction sparse tensor cores use)."""
    _check_nm(n, m)
    cells = _as_cells(weight.detach().abs())
    kk, co, ci = cells.shape
    if ci % m:
        raise ValueError(f"input channels ({ci}) must be divisible by m={m}")
    groups = cells.reshape(kk, co, ci // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return _from_cells(keep.reshape(kk, co, ci), tuple(weight.shape))


def _patterns(n: int, m: int) -> torch.Tensor:
    """All m x m 0/1 matrices with n ones in every row and every column, as (P, m*m) float."""
    rows = [c for c in itertools.combinations(range(m), n)]
    out = []
    for choice in itertools.product(rows, repeat=m):
        counts = [0] * m
        for r in choice:
            for j in r:
                counts[j] += 1
        if all(c == n for c in counts):
            p = torch.zeros(m, m)
            for i, r in enumerate(choice):
                p[i, list(r)] = 1
            out.append(p.flatten())
    return torch.stack(out)


def transposable_nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Transposable N:M: in every m x m tile of each kernel cell's (C_O x C_I) matrix, exactly ``n`` kept per row
    and per column, chosen to keep the most magnitude (exhaustive over the valid patterns; m <= 4)."""
    _check_nm(n, m)
    if m > 4:
        raise ValueError(f"m must be <= 4 for the exhaustive transposable search, got m={m}")
    cells = _as_cells(weight.detach().abs().float())
    kk, co, ci = cells.shape
    if co % m or ci % m:
        raise ValueError(f"output ({co}) and input ({ci}) channels must both be divisible by m={m}")
    tiles = cells.reshape(kk, co // m, m, ci // m, m).permute(0, 1, 3, 2, 4).reshape(-1, m * m)
    pats = _patterns(n, m).to(tiles.device)
    best = (tiles @ pats.T).argmax(1)
    keep = pats[best].bool().reshape(kk, co // m, ci // m, m, m).permute(0, 1, 3, 2, 4).reshape(kk, co, ci)
    return _from_cells(keep, tuple(weight.shape))
