"""Autograd op for the HRBP block convolution as implicit GEMM on padded runs (stride 1, CPU; variant ``"runs"``).

The input is zero-padded once into SparseProp's run layout (``ops/conv.py``); block column ``k`` of group ``g`` is
then a contiguous stream at ``off[g, k]``, so the forward pass and dW read the input in place instead of gathering a
column matrix (``kernels/cpu/block_runs.py`` shares every load between two rows of a block). dX runs SparseProp's
transposed-structure kernel on the block entries. Same maths as ``block_conv.py``; chosen by timing
(``sparsify(backend="auto")``) or ``variant="runs"``.
"""
from __future__ import annotations

import torch

from ..kernels.cpu.block_runs import block_sddmm_runs, block_spmm_runs
from .common import np_empty, np_view, refuse_double_backward, zeros
from .conv import _RUN_TILE, ConvGeometry, padded_runs_input, runs_gradient, runs_input_gradient, runs_output
from .plan import Plan, cached, kernel_arrays, transpose_structure
from .threads import sync_threads

# (B, C, hp, wp) runs only: this variant serves maps at least 16 wide, where a plane row is long enough to
# vectorise; on narrower maps the bmm variant's batch-last layout is much faster (docs/hrbp.md)
_LAYOUT = "over-width"


def block_runs_plan(plan: Plan, rows: torch.Tensor, channels: torch.Tensor, cells: torch.Tensor, geo: ConvGeometry,
                    C: int, hp: int, wp: int) -> tuple:
    """Stream offsets (t, c*p) of every block column in the padded input, and the by-input-channel structure of the
    block entries for dX: (off, t_ptr, perm, offT, smax, lg), cached per padded input size."""
    def build():
        t, R = rows.shape
        p = cells.shape[1]
        (Kh, Kw), (dh, dw) = geo.kernel, geo.dilation
        spatial = (cells // Kw) * (dh * wp) + (cells % Kw) * dw  # (t, p)
        spatial_k = spatial.repeat(1, channels.shape[1])  # column j*p + q -> cell q
        chan_k = channels.repeat_interleave(p, dim=1)  # column j*p + q -> channel j
        off = chan_k * (hp * wp) + spatial_k
        smax = dh * (Kh - 1) * wp + dw * (Kw - 1)
        lg = smax + hp * wp
        K = off.shape[1]
        chan_e = chan_k[:, None, :].expand(t, R, K).flatten()  # entries in values' (g, r, k) order
        oc_e = rows[:, :, None].expand(t, R, K).flatten()
        sp_e = spatial_k[:, None, :].expand(t, R, K).flatten()
        t_ptr, perm = transpose_structure(chan_e, C)
        offT = (oc_e * lg + smax - sp_e)[perm]
        return (*kernel_arrays(off, t_ptr, perm, offT), smax, lg)
    return cached(plan, ("block-runs", C, hp, wp), build)


class BlockRunsConv2dFunction(torch.autograd.Function):
    """y = block_conv(x) for stride 1, on padded runs; see the module docstring."""

    @staticmethod
    def forward(ctx, x, values, bias, rows, channels, cells, geo: ConvGeometry, out_channels: int, plan: Plan):
        B, C, H, W = x.shape
        OH, OW = geo.out_size(H, W)
        sync_threads()
        xp, G, _, hp, wp = padded_runs_input(x.detach(), geo, _LAYOUT)
        layout = block_runs_plan(plan, rows, channels, cells, geo, C, hp, wp)
        y = np_empty((G, out_channels * OH * wp), x.dtype)
        out = runs_output(y, _LAYOUT, out_channels, OH, OW, wp, B)
        ctx.save_for_backward(torch.from_numpy(xp), values, rows)  # saved, so freed after backward
        b = np_view(bias) if bias is not None else zeros(out_channels, x.dtype)
        block_spmm_runs(xp, layout[0], np_view(values), np_view(rows), b, y, 0, (OH - 1) * wp + OW, _RUN_TILE)
        ctx.hw = hp, wp
        ctx.geo, ctx.shape, ctx.layout, ctx.plan, ctx.has_bias = geo, (B, C, H, W), layout, plan, bias is not None
        return out

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward("BlockSparseConv2d")
        xp, values, rows = ctx.saved_tensors
        xp, (hp, wp) = xp.numpy(), ctx.hw
        off, t_ptr, perm, offT, smax, lg = ctx.layout
        OH, OW = dy.shape[2], dy.shape[3]
        threads = sync_threads()
        gy, db = runs_gradient(dy, ctx.plan, _LAYOUT, wp, smax, lg, ctx.has_bias and ctx.needs_input_grad[2])
        dx = dw = None
        need_dw = ctx.needs_input_grad[1]
        if ctx.needs_input_grad[0]:  # with dW from the same pass when both are wanted
            dx, dw = runs_input_gradient(gy, t_ptr, offT, values, perm, _LAYOUT, ctx.shape, hp, wp, ctx.geo,
                                         xp=xp if need_dw else None, threads=threads)
        elif need_dw:
            dw_np = np_empty(values.shape, values.dtype)
            dw = torch.from_numpy(dw_np)
            block_sddmm_runs(xp, gy, off, np_view(rows), dw_np, smax, (OH - 1) * wp + OW, _RUN_TILE)
        return dx, dw, db, None, None, None, None, None, None
