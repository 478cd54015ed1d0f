"""HRBP block layout of a conv (or linear) weight: ``t`` dense blocks of identical shape.

Group ``g`` owns output channels ``rows[g]`` (R of them), input channels ``channels[g]`` (c) and kernel cells
``cells[g]`` (p, flattened ``kh * Kw + kw``). Its block holds the weights
``W[rows[g][i], channels[g][j], cells[g][q]]`` at block column ``j * p + q``, so ``values`` is (t, R, c*p).
The same blocks serve the forward pass, the input gradient and the weight gradient (HRBP paper §4.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .validate import check_mask


def _shape4(weight_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(weight_shape) == 2:
        return (int(weight_shape[0]), int(weight_shape[1]), 1, 1)
    if len(weight_shape) == 4:
        return tuple(int(s) for s in weight_shape)  # type: ignore[return-value]
    raise ValueError(f"weight_shape must be (out, in) or (out, in, kh, kw), got {tuple(weight_shape)}")


@dataclass
class BlockLayout:
    """Equal-shape dense blocks of a weight; ``mask`` is the derived bool mask (see module docstring)."""

    weight_shape: tuple[int, ...]
    rows: torch.Tensor  # int64 (t, R): a partition of range(C_O), ascending within a group
    channels: torch.Tensor  # int64 (t, c): distinct input channels, ascending
    cells: torch.Tensor  # int64 (t, p): distinct kernel cells kh*Kw+kw, ascending
    values: torch.Tensor | None = None  # (t, R, c*p) block values, or None for a bare layout

    # --- shape facts ---------------------------------------------------------------------------
    @property
    def groups(self) -> int:
        return int(self.rows.shape[0])

    @property
    def block_shape(self) -> tuple[int, int]:
        """(rows per block, block columns = channels per group x pattern cells)."""
        return int(self.rows.shape[1]), int(self.channels.shape[1] * self.cells.shape[1])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return _shape4(self.weight_shape)[2:]

    @property
    def nnz(self) -> int:
        r, k = self.block_shape
        return self.groups * r * k

    @property
    def density(self) -> float:
        co, ci, kh, kw = _shape4(self.weight_shape)
        return self.nnz / (co * ci * kh * kw)

    def _flat_index(self) -> torch.Tensor:
        """(t, R, c*p) positions of the block entries in the weight flattened to (C_O * C_I * Kh * Kw)."""
        _, ci, kh, kw = _shape4(self.weight_shape)
        kk = kh * kw
        col = (self.channels[:, :, None] * kk + self.cells[:, None, :]).flatten(1)  # (t, c*p)
        return self.rows[:, :, None] * (ci * kk) + col[:, None, :]

    # --- conversions -----------------------------------------------------------------------------
    @property
    def mask(self) -> torch.Tensor:
        """Bool mask shaped like the weight: True inside the blocks."""
        numel = 1
        for s in self.weight_shape:
            numel *= int(s)
        m = torch.zeros(numel, dtype=torch.bool, device=self.rows.device)
        m[self._flat_index().flatten()] = True
        return m.view(tuple(self.weight_shape))

    def gather(self, weight: torch.Tensor) -> torch.Tensor:
        """The (t, R, c*p) block values of a dense ``weight``."""
        if tuple(weight.shape) != tuple(self.weight_shape):
            raise ValueError(f"weight shape {tuple(weight.shape)} does not match the layout's {tuple(self.weight_shape)}")
        return weight.reshape(-1)[self._flat_index().to(weight.device)]

    def to_dense(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """Dense weight with ``values`` (default the stored ones) in the blocks, zeros elsewhere; differentiable."""
        v = self.values if values is None else values
        if v is None:
            raise ValueError("this layout holds no values; pass values=(t, R, c*p) tensor")
        out = torch.zeros(self.mask.numel(), dtype=v.dtype, device=v.device)
        out = out.index_put((self._flat_index().to(v.device).flatten(),), v.reshape(-1))
        return out.view(tuple(self.weight_shape))

    def with_values(self, weight: torch.Tensor) -> "BlockLayout":
        """A copy of this layout holding the block values of ``weight``."""
        return BlockLayout(tuple(self.weight_shape), self.rows, self.channels, self.cells,
                           self.gather(weight.detach()).clone())

    @staticmethod
    def pack(weight: torch.Tensor, mask: "torch.Tensor | BlockLayout | None" = None) -> "BlockLayout":
        """Blocks of ``weight`` for a layout, or for a block-structured bool ``mask`` (default ``weight != 0``)."""
        if isinstance(mask, BlockLayout):
            layout = mask
        else:
            mask = (weight != 0) if mask is None else check_mask(mask, weight)
            layout = BlockLayout.from_mask(mask)
        return layout.to(weight.device).with_values(weight)

    @staticmethod
    def from_mask(mask: torch.Tensor) -> "BlockLayout":
        """Recover the blocks of a block-structured bool mask (as made by ``masks.hrbp``).

        Rows with identical (channel set x cell set) patterns form blocks; every row's pattern must be such a
        product, all patterns must have the same number of channels and cells, and rows of one pattern are split
        into groups of ``gcd`` of the pattern counts so every block has the same shape. Anything else raises
        ValueError: regroup it with ``sparsetrain.masks.hrbp(mask)`` first.
        """
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
        shape = tuple(mask.shape)
        co, ci, kh, kw = _shape4(shape)
        m = mask.reshape(co, ci, kh * kw).cpu()
        ch_any, cell_any = m.any(2), m.any(1)  # (co, ci), (co, kk)
        prod = ch_any[:, :, None] & cell_any[:, None, :]
        if not torch.equal(prod, m):
            bad = int((prod != m).any(2).any(1).nonzero()[0])
            raise ValueError(f"mask is not block-structured: row {bad} is not (channel set) x (kernel cells); "
                             "regroup it with sparsetrain.masks.hrbp(mask)")
        n_ch, n_cell = ch_any.sum(1), cell_any.sum(1)
        if bool((n_ch != n_ch[0]).any()) or bool((n_cell != n_cell[0]).any()) or int(n_ch[0]) == 0:
            raise ValueError("mask is not block-structured: every output channel must keep the same (nonzero) number "
                             "of input channels and kernel cells; regroup it with sparsetrain.masks.hrbp(mask)")
        keys: dict[bytes, list[int]] = {}
        for o in range(co):
            keys.setdefault(m[o].numpy().tobytes(), []).append(o)
        size = 0
        for rows in keys.values():
            size = _gcd(size, len(rows))
        rows_l, chans_l, cells_l = [], [], []
        for rows in sorted(keys.values()):
            for i in range(0, len(rows), size):
                rows_l.append(rows[i:i + size])
                chans_l.append(ch_any[rows[0]].nonzero().flatten())
                cells_l.append(cell_any[rows[0]].nonzero().flatten())
        return BlockLayout(shape, torch.tensor(rows_l, dtype=torch.int64), torch.stack(chans_l), torch.stack(cells_l))

    def to(self, device) -> "BlockLayout":
        v = None if self.values is None else self.values.to(device)
        return BlockLayout(tuple(self.weight_shape), self.rows.to(device), self.channels.to(device),
                           self.cells.to(device), v)

    def validate(self) -> None:
        """Raise ValueError unless rows partition the output channels and channels/cells are distinct and in range."""
        co, ci, kh, kw = _shape4(self.weight_shape)
        for name, t, hi in (("rows", self.rows, co), ("channels", self.channels, ci), ("cells", self.cells, kh * kw)):
            if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 2:
                raise ValueError(f"{name} must be a 2-D int64 tensor, got {getattr(t, 'dtype', type(t))}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= hi):
                raise ValueError(f"{name} must lie in [0, {hi})")
            if t.shape[1] > 1 and bool((t[:, 1:] <= t[:, :-1]).any()):
                raise ValueError(f"{name} must be strictly increasing within each group")
        t = self.rows.shape[0]
        if self.channels.shape[0] != t or self.cells.shape[0] != t or t == 0:
            raise ValueError(f"rows, channels and cells must have the same number of groups (>0), got "
                             f"{self.rows.shape[0]}, {self.channels.shape[0]}, {self.cells.shape[0]}")
        if not torch.equal(self.rows.flatten().sort().values, torch.arange(co, device=self.rows.device)):
            raise ValueError(f"rows must partition the {co} output channels into {t} equal groups")
        if self.channels.shape[1] == 0 or self.cells.shape[1] == 0:
            raise ValueError("every block needs at least one input channel and one kernel cell")
        if self.values is not None and tuple(self.values.shape) != (t,) + self.block_shape:
            raise ValueError(f"values must have shape {(t,) + self.block_shape}, got {tuple(self.values.shape)}")


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a
