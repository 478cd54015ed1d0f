"""Autograd op for the HRBP block convolution as register-tiled implicit GEMM on batch-last data (stride 1, CPU;
variant ``"tiled"``).

The input is zero-padded batch-last once, (C, hp, wp, B), and kept for dW; each pass then runs one
``kernels/cpu/block_tiles.py`` kernel whose register tiles multiply every loaded run of images by four block rows
(forward), four block columns (dX) or four by four (dW). No column matrix is gathered and nothing is scattered.

The output and the input gradient are handed back as contiguous NCHW tensors (one blocked transpose each), not as
batch-last views: the BatchNorm, ReLU and pooling layers around a conv run far slower on batch-last strides (a
VGG-19 training step with BN spent 117 ms of 523 more in them than on contiguous tensors), while the transposes
cost about 1 ms per layer. The kernels need the batch to be a multiple of one vector (``LANES``): another batch is
padded with zero images here (a copy of the input, then the first B outputs are returned). Same maths as
``block_conv.py``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.cpu import pad_batch_last, transpose_into, unpad_batch_first
from ..kernels.cpu.block_tiles import WIDE, block_dw_tiles, block_dx_tiles, block_fwd_tiles
from ..kernels.cpu.microkernels import LANES
from .common import np_empty, np_view, refuse_double_backward, strided_tensor, zeros
from .conv import ConvGeometry, padded_runs_input
from .plan import Plan, cached, kernel_arrays
from .threads import sync_threads


def tiles_plan(plan: Plan, rows: torch.Tensor, channels: torch.Tensor, cells: torch.Tensor, geo: ConvGeometry,
               hp: int, wp: int, plane: int, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Element offsets for lane count ``B``: (off (t, c*p) of every block column in the padded input, goff (t, R) of
    every block row's gradient plane, ids (t, R) the rows as int64), cached per input size."""
    def build():
        p = cells.shape[1]
        (_, Kw), (dh, dw) = geo.kernel, geo.dilation
        spatial = (cells // Kw) * (dh * wp) + (cells % Kw) * dw  # (t, p)
        chan_k = channels.repeat_interleave(p, dim=1)  # column j*p + q -> channel j
        off = (chan_k * (hp * wp) + spatial.repeat(1, channels.shape[1])) * B
        ids = rows.long()
        return kernel_arrays(off, ids * plane, ids)
    return cached(plan, ("block-tiles", hp, wp, plane, B), build)


def _lanes(n: int) -> int:
    return -(-n // LANES) * LANES


class BlockTilesConv2dFunction(torch.autograd.Function):
    """y = block_conv(x) for stride 1, batch-last register tiles; see the module docstring."""

    @staticmethod
    def forward(ctx, x, values, bias, rows, channels, cells, geo: ConvGeometry, out_channels: int, plan: Plan):
        B0, C, H, W = x.shape
        B = _lanes(B0)
        x = x.detach()
        if B != B0:  # zero images up to a whole vector of lanes
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, B - B0))
        OH, OW = geo.out_size(H, W)
        sync_threads()
        xp, _, _, hp, wp = padded_runs_input(x, geo, "batch-last")
        plane = OH * OW * B
        off, goff, ids = tiles_plan(plan, rows, channels, cells, geo, hp, wp, plane, B)
        y = np_empty(out_channels * plane, x.dtype)
        nchw = np_empty((B, out_channels * OH * OW), x.dtype)
        out = strided_tensor(nchw, (B0, out_channels, OH, OW), (out_channels * OH * OW, OH * OW, OW, 1))  # first
        b = np_view(bias) if bias is not None else zeros(out_channels, x.dtype)
        block_fwd_tiles(xp[0], off, np_view(values), ids, b, y, OH, OW, wp, B)
        transpose_into(y.reshape(out_channels * OH * OW, B), nchw)
        ctx.save_for_backward(torch.from_numpy(xp), values)
        ctx.geo, ctx.shape, ctx.hw, ctx.arrays = geo, (B0, C, H, W), (hp, wp), (off, goff)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward("BlockSparseConv2d")
        xp, values = ctx.saved_tensors
        B0, C, H, W = ctx.shape
        (hp, wp), (off, goff) = ctx.hw, ctx.arrays
        OC, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
        B = _lanes(B0)
        plane = OH * OW * B
        threads = sync_threads()
        need_db = ctx.has_bias and ctx.needs_input_grad[2]
        gy = np_empty(OC * plane, dy.dtype)
        sums = np_empty(OC, dy.dtype) if need_db else zeros(0, dy.dtype)
        db = torch.from_numpy(sums) if need_db else None
        if B == B0 and dy.is_contiguous():  # one pass: batch-last copy and the bias gradient
            pad_batch_last(np_view(dy), gy, 0, plane, OH, OW, 0, 0, sums)
        else:
            t = torch.from_numpy(gy).view(OC, OH, OW, B)
            if B != B0:
                t[..., B0:] = 0.0  # the padding images contribute nothing to dW
            t[..., :B0] = dy.permute(1, 2, 3, 0)
            if need_db:
                torch.sum(t, (1, 2, 3), out=db)
        vals = np_view(values)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dxp = np_empty(xp.shape[1], dy.dtype)  # zeroed by the kernel, in parallel
            full = np_empty((B, C, H, W), dy.dtype)
            dx = strided_tensor(full, (B0, C, H, W), (C * H * W, H * W, W, 1))
            block_dx_tiles(gy, goff, vals, off, dxp, OH, OW, wp, B, B // WIDE >= threads)
            unpad_batch_first(dxp, 0, hp * wp * B, wp, ctx.geo.padding[0], ctx.geo.padding[2], full)
        if ctx.needs_input_grad[1]:
            dw_np = np_empty(values.shape, values.dtype)
            dw = torch.from_numpy(dw_np)
            block_dw_tiles(gy, goff, xp.numpy()[0], off, dw_np, OH, OW, wp, B)
        return dx, dw, db, None, None, None, None, None, None
