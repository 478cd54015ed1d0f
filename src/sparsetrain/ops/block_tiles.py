"""Autograd op for the HRBP block convolution as register-tiled implicit GEMM on batch-last data (stride 1, CPU;
variant ``"tiled"``).

The batch is split into sub-batches of at most 64 images (``batch_split``; one register tile wide, and at least
one per thread), and the input is zero-padded batch-last once, (C, hp, wp, L) per sub-batch of L images, and kept
for dW: each task then streams memory of its own (see ``kernels/cpu/block_tiles.py``). Each pass runs one
``kernels/cpu/block_tiles.py`` kernel whose register tiles multiply every loaded run of images by four block rows
(forward), four input channels of a group (dX, in gather form: each input pixel sums the cells whose output pixel
exists) or four by four (dW). No column matrix is gathered and nothing is scattered.

The output and the input gradient are handed back as contiguous NCHW tensors (one blocked transpose each), not as
batch-last views: the BatchNorm, ReLU and pooling layers around a conv run far slower on batch-last strides (a
VGG-19 training step with BN spent 117 ms of 523 more in them than on contiguous tensors), while the transposes
cost about 1 ms per layer. The kernels need the batch to be a multiple of one vector (``LANES``): another batch is
padded with zero images here (a copy of the input, then the first B outputs are returned). Same maths as
``block_conv.py``.

The batch-last output (forward) and output gradient (backward), which share one buffer, and the batch-last input
gradient never leave the op: they are workspaces kept in the layer's plan, (C_O + C_I) * H * W * B elements per
input size, instead of fresh allocations. Fresh ones are page-faulted in again whenever glibc has trimmed the heap
between two steps: the forward of 128x256@8 at 95% then took 9.3 ms instead of 2.6 in one benchmark run.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.cpu import pad_batch_last, transpose_into, unpad_batch_first
from ..kernels.cpu.block_tiles import WIDE, block_dw_tiles, block_dx_gather, block_fwd_tiles
from ..kernels.cpu.microkernels import LANES
from .common import np_empty, np_view, refuse_double_backward, strided_tensor, zeros
from .conv import ConvGeometry
from .plan import Plan, cached, kernel_arrays
from .threads import sync_threads


def batch_split(B: int, threads: int) -> tuple[int, ...]:
    """Images per sub-batch for a batch of ``B`` (a multiple of ``LANES``): as wide as one register tile (``WIDE``)
    while every thread still gets a sub-batch (dX runs one task per sub-batch), the last one narrower."""
    L = min(WIDE, LANES * max(1, B // (LANES * threads)))
    n, rest = divmod(B, L)
    return (L,) * n + ((rest,) if rest else ())


def tiles_plan(plan: Plan, rows: torch.Tensor, channels: torch.Tensor, cells: torch.Tensor, geo: ConvGeometry,
               C: int, out_channels: int, H: int, W: int, npix: int, split: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Element offsets for the sub-batches ``split``: (off (S, t, c*p) of every block column in a sub-batch's padded
    input, goff (S, t, R) of every block row's gradient plane, ids (t, R) the rows as int64, subs (S, 7): lanes,
    start in the padded input buffer, in the output buffer, padded input length, start in the unpadded input
    gradient, its length, first image; and for the gather-form dX: xoff (S, t, c) each block channel's unpadded plane, cell_h and
    cell_w (t, p) the cells' shifts), cached per input size."""
    pt, pb, pl, pr = geo.padding
    hp, wp = H + pt + pb, W + pl + pr

    def build():
        p = cells.shape[1]
        (_, Kw), (dh, dw) = geo.kernel, geo.dilation
        spatial = (cells // Kw) * (dh * wp) + (cells % Kw) * dw  # (t, p)
        chan_k = channels.repeat_interleave(p, dim=1)  # column j*p + q -> channel j
        pixels = chan_k * (hp * wp) + spatial.repeat(1, channels.shape[1])  # in pixel records of L images
        ids = rows.long()
        lanes = torch.tensor(split)
        x_len, y_len, d_len = C * hp * wp * lanes, out_channels * npix * lanes, C * H * W * lanes
        starts = torch.stack([lanes, torch.cumsum(x_len, 0) - x_len, torch.cumsum(y_len, 0) - y_len, x_len,
                              torch.cumsum(d_len, 0) - d_len, d_len, torch.cumsum(lanes, 0) - lanes], 1)
        return kernel_arrays(pixels[None] * lanes[:, None, None], ids[None] * (npix * lanes)[:, None, None], ids,
                             starts, channels.long()[None] * (H * W * lanes)[:, None, None], (cells // Kw) * dh,
                             (cells % Kw) * dw)
    return cached(plan, ("block-tiles", C, H, W, npix, split), build)


def workspace(plan: Plan, name: str, n: int, dtype: torch.dtype) -> np.ndarray:
    """A flat buffer of ``n`` elements kept in ``plan`` for the op's internal batch-last arrays (uninitialised: every
    kernel overwrites what it uses). The layer runs one pass at a time, so the forward's output and the backward's
    gradient can share one."""
    return cached(plan, ("block-tiles-workspace", name, n, dtype), lambda: np_empty(n, dtype))


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
        xv = np_view(x.contiguous())  # a copy only for another memory format (channels_last)
        OH, OW = geo.out_size(H, W)
        pt, pb, pl, pr = geo.padding
        hp, wp = H + pt + pb, W + pl + pr
        split = batch_split(B, sync_threads())
        off, goff, ids, subs, xoff, cell_h, cell_w = tiles_plan(plan, rows, channels, cells, geo, C, out_channels, H, W,
                                                                OH * OW, split)
        xp = np_empty(C * hp * wp * B, x.dtype)
        y = workspace(plan, "out", out_channels * OH * OW * B, x.dtype)
        nchw = np_empty((B, out_channels * OH * OW), x.dtype)
        out = strided_tensor(nchw, (B0, out_channels, OH, OW), (out_channels * OH * OW, OH * OW, OW, 1))  # first
        b = np_view(bias) if bias is not None else zeros(out_channels, x.dtype)
        for L, xs, _, _, _, _, b0 in subs:
            pad_batch_last(xv[b0:b0 + L], xp, xs, hp * wp * L, hp, wp, pt, pl, zeros(0, x.dtype))
        block_fwd_tiles(xp, off, np_view(values), ids, b, y, OH, OW, wp, subs)
        for L, _, ys, _, _, _, b0 in subs:
            transpose_into(y[ys:ys + out_channels * OH * OW * L].reshape(-1, L), nchw[b0:b0 + L])
        ctx.save_for_backward(torch.from_numpy(xp), values)
        ctx.geo, ctx.shape, ctx.hw = geo, (B0, C, H, W), (hp, wp)
        ctx.arrays = (off, goff, subs, split, xoff, cell_h, cell_w)
        ctx.has_bias, ctx.plan = bias is not None, plan
        return out

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward("BlockSparseConv2d")
        xp, values = ctx.saved_tensors
        B0, C, H, W = ctx.shape
        (hp, wp), (off, goff, subs, split, xoff, cell_h, cell_w) = ctx.hw, ctx.arrays
        OC, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
        B = _lanes(B0)
        npix = OH * OW
        sync_threads()
        need_db = ctx.has_bias and ctx.needs_input_grad[2]
        gy = workspace(ctx.plan, "out", OC * npix * B, dy.dtype)
        db_np = np_empty(OC, dy.dtype) if need_db else None
        db = torch.from_numpy(db_np) if need_db else None
        if B == B0 and dy.is_contiguous():  # one pass per sub-batch: batch-last copy and the bias gradient
            sums = np_empty((len(split), OC), dy.dtype) if need_db else None
            dyv = np_view(dy)
            for i, (L, _, ys, _, _, _, b0) in enumerate(subs):
                pad_batch_last(dyv[b0:b0 + L], gy, ys, npix * L, OH, OW, 0, 0,
                               sums[i] if need_db else zeros(0, dy.dtype))
            if need_db:
                np.sum(sums, axis=0, out=db_np)
        else:
            t = torch.from_numpy(gy)
            for L, _, ys, _, _, _, b0 in subs:
                part = t[ys:ys + OC * npix * L].view(OC, OH, OW, L)
                real = max(0, min(L, B0 - b0))
                part[..., real:] = 0.0  # the padding images contribute nothing to dW
                part[..., :real] = dy[b0:b0 + real].permute(1, 2, 3, 0)
            if need_db:
                torch.sum(dy, (0, 2, 3), out=db)
        vals = np_view(values)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dxl = workspace(ctx.plan, "dx", C * H * W * B, dy.dtype)  # zeroed by the kernel, in parallel
            full = np_empty((B, C, H, W), dy.dtype)
            dx = strided_tensor(full, (B0, C, H, W), (C * H * W, H * W, W, 1))
            block_dx_gather(gy, goff, vals, cell_h, cell_w, xoff, dxl, H, W, OH, OW, ctx.geo.padding[0],
                            ctx.geo.padding[2], subs)
            for L, _, _, _, ds, _, b0 in subs:
                unpad_batch_first(dxl, ds, H * W * L, W, 0, 0, full[b0:b0 + L])
        if ctx.needs_input_grad[1]:
            dw_np = np_empty(values.shape, values.dtype)
            dw = torch.from_numpy(dw_np)
            block_dw_tiles(gy, goff, xp.numpy(), off, dw_np, OH, OW, wp, subs)
        return dx, dw, db, None, None, None, None, None, None

