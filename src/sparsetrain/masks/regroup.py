"""Vanilla weight regrouping on the GEMM-flattened mask (HRBP §3.2, the method of its reference [21]) and the
check that shows why it does not survive the backward pass while HRBP does (``preserved_in_backward``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats.block_layout import BlockLayout, _shape4
from .hrbp import _balanced_clusters, _check_int, _num_groups, _top


@dataclass
class Regrouping:
    """Blocks of a vanilla regrouping: ``blocks[g] = (rows, cols)`` over the (C_O x C_I*Kh*Kw) matrix W."""

    weight_shape: tuple[int, ...]
    blocks: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def mask(self) -> torch.Tensor:
        """Bool mask shaped like the weight: True inside the blocks."""
        co, ci, kh, kw = _shape4(self.weight_shape)
        m = torch.zeros(co, ci * kh * kw, dtype=torch.bool)
        for rows, cols in self.blocks:
            m[rows[:, None], cols[None, :]] = True
        return m.view(tuple(self.weight_shape))


def regroup(mask: torch.Tensor, groups: int = 8, min_rows: int = 8) -> Regrouping:
    """Vanilla regrouping: cluster the rows of W's mask into equal groups by Jaccard similarity, then keep, per
    group, the round(r * C_I*Kh*Kw) columns of W with most nonzeros (same density r as the input mask).

    Columns are chosen independently over all C_I*Kh*Kw positions — exactly what fragments the blocks in
    W' (HRBP Fig. 2). Equal row groups are used so the comparison with HRBP isolates that one difference.
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool torch.Tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    co, ci, kh, kw = _shape4(tuple(mask.shape))
    m = mask.detach().reshape(co, ci * kh * kw).cpu()
    density = float(m.float().mean()) if m.numel() else 0.0
    if density == 0.0:
        raise ValueError("mask must keep at least one weight (its density is 0)")
    t = _num_groups(co, _check_int("groups", groups, 1), min_rows)
    rows = _balanced_clusters(m, t)
    ncol = max(1, round(density * m.shape[1]))
    blocks = [(r, _top(m[r].sum(0).to(torch.float64), ncol)) for r in rows]
    return Regrouping(tuple(mask.shape), blocks)


def _blocks_of(obj, weight_shape=None) -> tuple[tuple[int, int, int, int], list[tuple[torch.Tensor, torch.Tensor]]]:
    if isinstance(obj, BlockLayout):
        shape = _shape4(obj.weight_shape)
        kk = shape[2] * shape[3]
        blocks = []
        for g in range(obj.groups):
            cols = (obj.channels[g][:, None] * kk + obj.cells[g][None, :]).flatten()
            blocks.append((obj.rows[g].cpu(), cols.cpu()))
        return shape, blocks
    if isinstance(obj, Regrouping):
        return _shape4(obj.weight_shape), obj.blocks
    if isinstance(obj, torch.Tensor) and obj.dtype == torch.bool:
        # rows with identical column sets form the blocks of a plain mask
        shape = _shape4(tuple(obj.shape))
        m = obj.reshape(shape[0], -1).cpu()
        groups: dict[bytes, list[int]] = {}
        for o in range(shape[0]):
            if bool(m[o].any()):
                groups.setdefault(m[o].numpy().tobytes(), []).append(o)
        return shape, [(torch.tensor(r), m[r[0]].nonzero().flatten()) for r in groups.values()]
    if isinstance(obj, (list, tuple)) and weight_shape is not None:
        return _shape4(tuple(weight_shape)), [(torch.as_tensor(r), torch.as_tensor(c)) for r, c in obj]
    raise TypeError("expected a BlockLayout, a Regrouping, a bool mask, or a list of (rows, cols) blocks with "
                    f"weight_shape; got {type(obj).__name__}")


def preserved_in_backward(layout_or_mask, weight_shape=None) -> list[bool]:
    """For every dense block of W (C_O x C_I*Kh*Kw), whether its cells still form one dense block in the backward
    matrix W' (C_I x C_O*Kh*Kw: kernels rotated 180 degrees and transposed kernel-wise, HRBP §3.1).

    Accepts a ``BlockLayout`` (HRBP), a ``Regrouping`` (vanilla), a bool mask (rows with equal column sets are
    taken as blocks) or a list of ``(rows, cols)`` index pairs with ``weight_shape``.
    """
    (co, ci, kh, kw), blocks = _blocks_of(layout_or_mask, weight_shape)
    kk = kh * kw
    out = []
    for rows, cols in blocks:
        rows, cols = rows.long(), cols.long()
        ch, cell = cols // kk, cols % kk
        # W[o, ch*kk + q]  ->  W'[ch, o*kk + (kk - 1 - q)]
        r2 = ch.unique()
        c2 = (rows[:, None] * kk + (kk - 1 - cell)[None, :]).flatten()
        r2_all = ch[None, :].expand(len(rows), -1).flatten()
        cells2 = torch.stack([r2_all, c2], 1).unique(dim=0)
        out.append(cells2.shape[0] == len(r2) * c2.unique().numel())
    return out
