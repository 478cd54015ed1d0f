"""CSR layout of a linear weight (out_features x in_features): row offsets, column indices, values."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .validate import check_mask


@dataclass
class CSR:
    """Compressed sparse rows; ``values[row_ptr[i]:row_ptr[i+1]]`` are row ``i``'s kept weights."""

    row_ptr: torch.Tensor  # int64 (rows + 1,)
    cols: torch.Tensor  # int32 (nnz,), increasing within a row
    values: torch.Tensor  # float (nnz,)
    shape: tuple[int, int]

    @staticmethod
    def pack(weight: torch.Tensor, mask: torch.Tensor | None = None) -> "CSR":
        """Keep ``weight`` where ``mask`` (default ``weight != 0``) is True."""
        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
        mask = (weight != 0) if mask is None else check_mask(mask, weight)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major order: sorted by row, then column
        counts = torch.bincount(rows, minlength=weight.shape[0])
        row_ptr = torch.zeros(weight.shape[0] + 1, dtype=torch.int64, device=weight.device)
        torch.cumsum(counts, 0, out=row_ptr[1:])
        values = weight.detach()[rows, cols].clone()
        return CSR(row_ptr, cols.to(torch.int32), values, (int(weight.shape[0]), int(weight.shape[1])))

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def row_indices(self) -> torch.Tensor:
        """Row index of every stored value (int64, nnz)."""
        counts = self.row_ptr[1:] - self.row_ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.shape[0], device=self.row_ptr.device), counts)

    def mask(self) -> torch.Tensor:
        """The bool mask of kept positions."""
        m = torch.zeros(self.shape, dtype=torch.bool, device=self.values.device)
        m[self.row_indices(), self.cols.long()] = True
        return m

    def to_dense(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """Dense weight with ``values`` (default the stored ones) at the kept positions; differentiable."""
        v = self.values if values is None else values
        flat = self.row_indices() * self.shape[1] + self.cols.long()
        out = torch.zeros(self.shape[0] * self.shape[1], dtype=v.dtype, device=v.device)
        return out.index_put((flat,), v).view(self.shape)

    def validate(self) -> None:
        """Raise ValueError unless the structure is a well-formed CSR of ``shape``."""
        rows, cols = self.shape
        rp, c = self.row_ptr, self.cols
        if rp.dtype != torch.int64 or rp.shape != (rows + 1,):
            raise ValueError(f"row_ptr must be int64 of shape ({rows + 1},), got {rp.dtype} {tuple(rp.shape)}")
        if c.dtype != torch.int32 or c.dim() != 1:
            raise ValueError(f"cols must be a 1-D int32 tensor, got {c.dtype} {tuple(c.shape)}")
        if int(rp[0]) != 0 or int(rp[-1]) != c.numel() or bool((rp[1:] < rp[:-1]).any()):
            raise ValueError("row_ptr must start at 0, be non-decreasing and end at nnz")
        if self.values.shape != c.shape:
            raise ValueError(f"values shape {tuple(self.values.shape)} must equal cols shape {tuple(c.shape)}")
        if c.numel():
            if int(c.min()) < 0 or int(c.max()) >= cols:
                raise ValueError(f"cols must lie in [0, {cols})")
            r = self.row_indices()
            same_row = r[1:] == r[:-1]
            if bool((same_row & (c[1:] <= c[:-1])).any()):
                raise ValueError("cols must be strictly increasing within each row")
