"""Autograd op for the HRBP block convolution on the CPU: fused numba gather/scatter + one ``torch.bmm`` per pass.

Forward   y[:, rows[g]] = values[g] @ cols[g]                      (t batched GEMMs of identical shape)
dW        dvalues[g]    = dy[:, rows[g]] @ cols[g]^T               (the same blocks, no masking)
dX        dx            = col2im(values[g]^T @ dy[:, rows[g]])     (transposed blocks + scatter-add)

``cols[g]`` is the implicit-GEMM column matrix of block g (its input channels at its pattern cells). It is
rebuilt in the backward rather than saved, so the op keeps only ``x`` alive, as a dense conv does; the batch
is processed in chunks so ``cols`` stays a few MB and is reused while warm in cache.
"""
from __future__ import annotations

import torch

from ..kernels.cpu.block import col2im_add, gather_columns, gather_rows, scatter_rows
from .common import check_cpu_input, np_view
from .conv import ConvGeometry
from .threads import sync_threads

CHUNK_BYTES = 8 << 20  # column-matrix bytes per batch chunk


def channel_items(channels: torch.Tensor, p: int, n_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input channel, the block rows (g*(c*p) + k) that read it: a CSR (ptr, items) for ``col2im_add``."""
    t, c = channels.shape
    ch = channels.repeat_interleave(p, dim=1).flatten()  # channel of block row g*(c*p) + k
    items = torch.sort(ch, stable=True).indices
    ptr = torch.zeros(n_channels + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(ch, minlength=n_channels), 0, out=ptr[1:])
    return ptr, items


def _chunk(batch: int, rows_per_image: int, itemsize: int) -> int:
    return max(1, min(batch, CHUNK_BYTES // max(1, rows_per_image * itemsize)))


class BlockConv2dFunction(torch.autograd.Function):
    """y = block_conv(x); see the module docstring."""

    @staticmethod
    def forward(ctx, x, values, bias, rows, channels, cells, ch_ptr, ch_items, geo: ConvGeometry, out_channels):
        sync_threads()
        x = x.contiguous()
        B, C, H, W = x.shape
        OH, OW = geo.out_size(H, W)
        t, R, K = values.shape
        L = OH * OW
        args = _geo_args(geo, OH, OW)
        y = x.new_empty(B, out_channels, L)
        b_vec = bias.detach() if bias is not None else x.new_zeros(out_channels)
        vals = values.detach()
        nb = _chunk(B, t * K * L, x.element_size())
        cols = x.new_empty(t, K, nb * L)
        ybuf = x.new_empty(t, R, nb * L)
        for b0 in range(0, B, nb):
            b1 = min(B, b0 + nb)
            n = (b1 - b0) * L
            cb, yb = cols[:, :, :n], ybuf[:, :, :n]
            if n != nb * L:
                cb, yb = cb.contiguous(), yb.contiguous()
            gather_columns(np_view(x[b0:b1]), channels.numpy(), cells.numpy(), *args, cb.numpy())
            torch.bmm(vals, cb, out=yb)
            scatter_rows(yb.numpy(), rows.numpy(), np_view(b_vec), y[b0:b1].numpy())
        ctx.save_for_backward(x, values, rows, channels, cells, ch_ptr, ch_items)
        ctx.geo, ctx.has_bias = geo, bias is not None
        return y.view(B, out_channels, OH, OW)

    @staticmethod
    def backward(ctx, gy):
        sync_threads()
        x, values, rows, channels, cells, ch_ptr, ch_items = ctx.saved_tensors
        geo = ctx.geo
        B, C, H, W = x.shape
        t, R, K = values.shape
        OH, OW = gy.shape[2], gy.shape[3]
        L = OH * OW
        args = _geo_args(geo, OH, OW)
        gy = gy.contiguous().view(B, -1, L)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx = x.new_empty(B, C, H, W) if need_x else None
        dv = torch.zeros_like(values) if need_w else None
        p = cells.shape[1]
        vals_t = values.detach().transpose(1, 2)
        nb = _chunk(B, t * K * L, x.element_size())
        cols = x.new_empty(t, K, nb * L)
        gbuf = x.new_empty(t, R, nb * L)
        for b0 in range(0, B, nb):
            b1 = min(B, b0 + nb)
            n = (b1 - b0) * L
            cb, gb = cols[:, :, :n], gbuf[:, :, :n]
            if n != nb * L:
                cb, gb = cb.contiguous(), gb.contiguous()
            gather_rows(gy[b0:b1].numpy(), rows.numpy(), gb.numpy())
            if need_w:
                gather_columns(np_view(x[b0:b1]), channels.numpy(), cells.numpy(), *args, cb.numpy())
                dv.baddbmm_(gb, cb.transpose(1, 2))
            if need_x:
                torch.bmm(vals_t, gb, out=cb)
                col2im_add(cb.numpy(), ch_ptr.numpy(), ch_items.numpy(), cells.numpy(), p, *args, dx[b0:b1].numpy())
        db = gy.sum((0, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dv, db, None, None, None, None, None, None, None


def _geo_args(geo: ConvGeometry, OH: int, OW: int) -> tuple[int, ...]:
    (sh, sw), (pt, _, pl, _), (dh, dw), (_, kw) = geo.stride, geo.padding, geo.dilation, geo.kernel
    return (kw, sh, sw, pt, pl, dh, dw, OH, OW)


def block_conv2d(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor,
                 channels: torch.Tensor, cells: torch.Tensor, ch_ptr: torch.Tensor, ch_items: torch.Tensor,
                 geo: ConvGeometry, out_channels: int) -> torch.Tensor:
    """HRBP block conv2d on the CPU (groups == 1); input (B, C, H, W), values (t, R, c*p)."""
    check_cpu_input(x, values, "BlockSparseConv2d")
    if x.dim() != 4:
        raise ValueError(f"BlockSparseConv2d expects a 4-D input (batch, channels, height, width), got {x.dim()}-D")
    return BlockConv2dFunction.apply(x, values, bias, rows, channels, cells, ch_ptr, ch_items, geo, out_channels)
