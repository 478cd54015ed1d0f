"""SparseLinear: a linear layer whose weight is stored as CSR and trained on SparseProp kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..formats import CSR
from ..formats.validate import check_values_dtype
from ..ops import sparse_linear
from ..ops.plan import Plan
from .base import PackedSparseModule, check_backend, dense_linear


class SparseLinear(PackedSparseModule):
    """Drop-in ``nn.Linear`` with an unstructured-sparse weight; forward and backward cost O(nnz).

    Parameters are ``values`` (the kept weights, nnz) and ``bias``; ``row_ptr``/``cols`` are buffers.
    ``backend`` is ``"sparse-cpu"`` (numba kernels) or ``"dense"`` (masked dense reference, any
    device). Accepts any leading dimensions. The output may be a transposed (non-contiguous) view:
    call ``.contiguous()`` before ``.view()``.
    """

    _index_names = ("row_ptr", "cols")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mask: torch.Tensor | None = None,
                 backend: str = "sparse-cpu", device=None, dtype=None) -> None:
        super().__init__()
        dense = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_from(dense, torch.ones_like(dense.weight, dtype=torch.bool) if mask is None else mask, backend)

    def _init_from(self, dense: nn.Linear, mask: torch.Tensor, backend: str) -> None:
        check_values_dtype(dense.weight, "weight")
        self.in_features, self.out_features = dense.in_features, dense.out_features
        self.weight_shape = (dense.out_features, dense.in_features)
        self.backend = check_backend(backend)
        self._set_format(CSR.pack(dense.weight, mask))
        self.bias = nn.Parameter(dense.bias.detach().clone()) if dense.bias is not None else None

    @classmethod
    def from_dense(cls, module: nn.Linear, mask: torch.Tensor | None = None, backend: str = "sparse-cpu") -> "SparseLinear":
        """Pack ``module``'s weight where ``mask`` (default ``weight != 0``) is True."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"module must be nn.Linear, got {type(module).__name__}")
        self = cls.__new__(cls)
        PackedSparseModule.__init__(self)
        self._init_from(module, (module.weight != 0) if mask is None else mask, backend)
        return self

    def to_dense(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the dense (zero-filled) weight."""
        return dense_linear(self)

    def _plan(self) -> Plan:
        """Offsets and transposed structure for the current mask (rebuilt after a repack or load)."""
        return self._derived_state(Plan)

    def _format(self) -> CSR:
        return CSR(self.row_ptr, self.cols, self.values, self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear expects input with last dimension {self.in_features}, "
                             f"got shape {tuple(x.shape)}")
        if self._use_dense(x):
            return F.linear(x, self.dense_weight(), self.bias)
        return sparse_linear(x, self.values, self.row_ptr, self.cols, self.bias, self.out_features, self._plan())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"density={self.density:.4f}, backend={self.backend}")
