"""SparseProp's compact conv-weight format: per-output-channel offsets, per-(output, input)-channel
offsets, kernel coordinates and values (paper section 3.3).

Index widths are chosen so nothing overflows: output-channel offsets are int64, offsets inside one
output channel int32 (one channel holds at most in_channels*kh*kw < 2**31 nonzeros; the published
package used int16 and broke past 32,767), kernel coordinates int16 (kernels up to 32,767 wide).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .validate import check_mask

_INT32_MAX = 2**31 - 1
_INT16_MAX = 2**15 - 1


@dataclass
class ConvCSR:
    """Nonzeros of output channel ``oc`` and input channel ``ic`` are
    ``och[oc] + ich[oc, ic] .. och[oc] + ich[oc, ic + 1]`` in ``kh``, ``kw``, ``values``."""

    och: torch.Tensor  # int64 (OC + 1,)
    ich: torch.Tensor  # int32 (OC, IC + 1), relative to och[oc]
    kh: torch.Tensor  # int16 (nnz,)
    kw: torch.Tensor  # int16 (nnz,)
    values: torch.Tensor  # float (nnz,)
    shape: tuple[int, int, int, int]

    @staticmethod
    def pack(weight: torch.Tensor, mask: torch.Tensor | None = None) -> "ConvCSR":
        """Keep ``weight`` (OC, IC, KH, KW) where ``mask`` (default ``weight != 0``) is True."""
        if weight.dim() != 4:
            raise ValueError(f"weight must be 4-D (out, in, kh, kw), got shape {tuple(weight.shape)}")
        OC, IC, KH, KW = (int(s) for s in weight.shape)
        if max(KH, KW) > _INT16_MAX or IC * KH * KW > _INT32_MAX:
            raise ValueError(f"weight shape {tuple(weight.shape)} exceeds the format's index range")
        mask = (weight != 0) if mask is None else check_mask(mask, weight)
        oc, ic, kh, kw = mask.nonzero(as_tuple=True)  # row-major: sorted by (oc, ic, kh, kw)
        dev = weight.device
        per_oc = torch.bincount(oc, minlength=OC)
        och = torch.zeros(OC + 1, dtype=torch.int64, device=dev)
        torch.cumsum(per_oc, 0, out=och[1:])
        per_pair = torch.bincount(oc * IC + ic, minlength=OC * IC).view(OC, IC)
        ich = torch.zeros(OC, IC + 1, dtype=torch.int64, device=dev)
        torch.cumsum(per_pair, 1, out=ich[:, 1:])
        values = weight.detach()[oc, ic, kh, kw].clone()
        return ConvCSR(och, ich.to(torch.int32), kh.to(torch.int16), kw.to(torch.int16), values,
                       (OC, IC, KH, KW))

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def coordinates(self) -> tuple[torch.Tensor, ...]:
        """(oc, ic, kh, kw) of every stored value, int64."""
        OC, IC = self.shape[0], self.shape[1]
        per_pair = (self.ich[:, 1:] - self.ich[:, :-1]).reshape(-1).long()
        pair = torch.repeat_interleave(torch.arange(OC * IC, device=self.och.device), per_pair)
        return pair // IC, pair % IC, self.kh.long(), self.kw.long()

    def mask(self) -> torch.Tensor:
        """The bool mask of kept positions."""
        m = torch.zeros(self.shape, dtype=torch.bool, device=self.values.device)
        m[self.coordinates()] = True
        return m

    def to_dense(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """Dense weight with ``values`` (default the stored ones) at the kept positions; differentiable."""
        v = self.values if values is None else values
        out = torch.zeros(self.shape, dtype=v.dtype, device=v.device)
        return out.index_put(self.coordinates(), v)

    def validate(self) -> None:
        """Raise ValueError unless the structure is a well-formed ConvCSR of ``shape``."""
        OC, IC, KH, KW = self.shape
        och, ich = self.och, self.ich
        if och.dtype != torch.int64 or och.shape != (OC + 1,):
            raise ValueError(f"och must be int64 of shape ({OC + 1},), got {och.dtype} {tuple(och.shape)}")
        if ich.dtype != torch.int32 or ich.shape != (OC, IC + 1):
            raise ValueError(f"ich must be int32 of shape ({OC}, {IC + 1}), got {ich.dtype} {tuple(ich.shape)}")
        n = self.values.numel()
        for name, t in (("kh", self.kh), ("kw", self.kw)):
            if t.dtype != torch.int16 or t.shape != (n,):
                raise ValueError(f"{name} must be int16 of shape ({n},), got {t.dtype} {tuple(t.shape)}")
        if int(och[0]) != 0 or int(och[-1]) != n or bool((och[1:] < och[:-1]).any()):
            raise ValueError("och must start at 0, be non-decreasing and end at nnz")
        if bool((ich[:, 0] != 0).any()) or bool((ich[:, 1:] < ich[:, :-1]).any()):
            raise ValueError("each row of ich must start at 0 and be non-decreasing")
        if bool((ich[:, -1].long() != och[1:] - och[:-1]).any()):
            raise ValueError("ich[oc, -1] must equal the number of nonzeros of output channel oc")
        if n:
            if int(self.kh.min()) < 0 or int(self.kh.max()) >= KH or int(self.kw.min()) < 0 or int(self.kw.max()) >= KW:
                raise ValueError(f"kh must lie in [0, {KH}) and kw in [0, {KW})")
            oc, ic, kh, kw = self.coordinates()
            key = ((oc * IC + ic) * KH + kh) * KW + kw
            if bool((key[1:] <= key[:-1]).any()):
                raise ValueError("kernel coordinates must be strictly increasing within each (oc, ic)")
