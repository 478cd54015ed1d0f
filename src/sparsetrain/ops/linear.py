"""Autograd op for a CSR-sparse linear layer on the SparseProp CPU kernels.

Forward ``Y^T = W X^T`` and input gradient ``dX^T = W^T dY^T`` are the same sparse-rows-times-runs
kernel (on W's CSR and on its transpose); the weight gradient is an SDDMM at W's nonzeros only.
Each pass is parallel over independent outputs, so the backward never synchronises per row.
"""
from __future__ import annotations

import torch

from ..kernels.cpu import sddmm_runs, spmm_runs, spmm_sddmm_rows, spmm_sddmm_runs
from .common import (NO_INDEX, check_cpu_input, fused_parts, np_empty, np_view, refuse_double_backward, strided_tensor,
                     transposed, values_in_order, zeros)
from .plan import Plan, cached, kernel_arrays, transpose_structure
from .threads import sync_threads


_TILE = 4096  # batch columns per task: measured here, long runs beat L2-sized tiles (902: 32 vs 50 ms)


def _plan_for(plan, row_ptr, cols, shape, B):
    """Offsets into X^T / dY^T for batch ``B`` and the transposed structure (cached per mask), as NumPy arrays
    (off, t_ptr, perm, offT)."""
    M, K = shape

    def structure():  # independent of the batch size
        rows = torch.repeat_interleave(torch.arange(M), row_ptr[1:] - row_ptr[:-1])
        t_ptr, perm = transpose_structure(cols.long(), K)
        return t_ptr, perm, rows[perm]

    t_ptr, perm, rows_t = cached(plan, "linear-transpose", structure)
    return cached(plan, ("linear", B), lambda: kernel_arrays(cols.long() * B, t_ptr, perm, rows_t * B))


class SparseLinearFunction(torch.autograd.Function):
    """y = x W^T + b with W in CSR; x is 2-D (batch, in_features)."""

    @staticmethod
    def forward(ctx, x, values, row_ptr, cols, bias, out_features, plan, leaf_input=False):
        xT = transposed(x)
        K, B = xT.shape
        yT = np_empty((1, out_features * B), x.dtype)
        y = strided_tensor(yT, (B, out_features), (1, B))  # the transposed view as a fresh tensor, before the kernel
        b = np_view(bias) if bias is not None else zeros(out_features, x.dtype)
        arrays = _plan_for(plan, row_ptr, cols, (out_features, K), B)
        if B:
            sync_threads()
            spmm_runs(np_view(xT).reshape(1, -1), np_view(row_ptr), arrays[0], np_view(values), NO_INDEX, b, yT, 0,
                      B, _TILE)
        ctx.save_for_backward(xT, values, row_ptr)
        ctx.arrays, ctx.has_bias, ctx.plan, ctx.leaf_input = arrays, bias is not None, plan, leaf_input
        return y

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward("SparseLinear")
        xT, values, row_ptr = ctx.saved_tensors
        off, t_ptr, perm, offT = ctx.arrays
        K, B = xT.shape
        M = row_ptr.numel() - 1
        # dY^T only lives during this backward: keep its buffer between steps (no page faults)
        dyT = transposed(dy, cached(ctx.plan, ("dyT", M, B, dy.dtype), lambda: dy.new_empty(M, B)))
        dx = dw = db = None
        threads = sync_threads()
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g = np_view(dyT).reshape(1, -1)
        if need_dx and need_dw and ctx.leaf_input:
            # a leaf's .grad must be contiguous: the fused pass writes it row-major itself, 32 input
            # features per task through register-tile transposes (no transpose pass through memory afterwards)
            dx_np = np_empty((B, K), xT.dtype)
            dx = torch.from_numpy(dx_np)
            dw_np = np_empty(values.shape, values.dtype)
            dw = torch.from_numpy(dw_np)
            spmm_sddmm_rows(g, t_ptr, offT, *values_in_order(values, perm), np_view(xT).reshape(1, -1), perm, dx_np,
                            dw_np, np_empty((1, values.numel()), values.dtype), B, _TILE)
        elif need_dx:
            dxT = np_empty((1, K * B), xT.dtype)
            # tensors before the kernels (cold caches after them); a leaf's gets transposed below
            dx = torch.from_numpy(dxT.reshape(K, B)) if ctx.leaf_input else strided_tensor(dxT, (B, K), (1, B))
            if need_dw:  # both in one pass over dY^T (each row of it is read once, not twice)
                dw_np = np_empty(values.shape, values.dtype)
                dw = torch.from_numpy(dw_np)
                parts, by_group = fused_parts(1, threads)
                spmm_sddmm_runs(g, t_ptr, offT, *values_in_order(values, perm), np_view(xT).reshape(1, -1), perm,
                                dxT, dw_np, np_empty((parts, values.numel()), values.dtype), 0, B, _TILE, by_group)
            elif B:
                spmm_runs(g, t_ptr, offT, *values_in_order(values, perm), zeros(K, xT.dtype), dxT, 0, B, _TILE)
            # a leaf's .grad must be contiguous, and torch's strided copy of a transpose is slow (11 ms for
            # 902 x 3072 here); otherwise the transposed view flows on for free (the layer before reads it as is)
            if ctx.leaf_input:
                dx = transposed(dx)
        elif need_dw:
            dw_np = np_empty(values.shape, values.dtype)
            dw = torch.from_numpy(dw_np)
            sddmm_runs(np_view(xT).reshape(1, -1), g, np_view(row_ptr), off, dw_np, 0, B, _TILE,
                       max(1, min(threads, M)))
        if ctx.has_bias and ctx.needs_input_grad[4]:
            db = dyT.sum(1)
        return dx, dw, None, None, db, None, None, None


def sparse_linear(x: torch.Tensor, values: torch.Tensor, row_ptr: torch.Tensor, cols: torch.Tensor,
                  bias: torch.Tensor | None, out_features: int, plan: Plan | None = None) -> torch.Tensor:
    """Sparse linear over any leading dimensions of ``x`` (last dimension is in_features)."""
    check_cpu_input(x, values, "SparseLinear")
    lead = x.shape[:-1]
    leaf = x.is_leaf and x.requires_grad
    y = SparseLinearFunction.apply(x.reshape(-1, x.shape[-1]), values, row_ptr, cols, bias, out_features, plan, leaf)
    return y if len(lead) == 1 else y.reshape(*lead, out_features)
