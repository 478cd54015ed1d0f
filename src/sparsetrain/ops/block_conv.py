"""Autograd op for the HRBP block convolution on the CPU: fused numba gather/scatter + one ``torch.bmm`` per pass.

Forward   y[:, rows[g]] = values[g] @ cols[g]                      (t batched GEMMs of identical shape)
dW        dvalues[g]    = dy[:, rows[g]] @ cols[g]^T               (the same blocks, no masking)
dX        dx            = col2im(values[g]^T @ dy[:, rows[g]])     (transposed blocks + scatter-add)

``cols[g]`` is the implicit-GEMM column matrix of block g (its input channels at its pattern cells). It is
rebuilt in the backward rather than saved, so the op keeps only the input alive, as a dense conv does; the work
is split into chunks (of the batch, or of output rows in the batch-last layout) so ``cols`` stays a few MB and
is reused while warm in cache. Two more variants skip the column matrix (stride 1 only): ``"runs"``
(``block_runs.py``) and ``"tiled"`` (``block_tiles.py``). Two layouts here, as in SparseProp: ``"over-width"``
(NCHW activations, runs along the output width) and ``"batch-last"`` ((C, H, W, B) activations, runs along the
batch; the output and the input gradient are transposed back to contiguous NCHW, as in ``block_tiles.py``, because
BatchNorm and pooling are slow on batch-last views).
"""
from __future__ import annotations

import torch

from ..kernels.cpu.block import (col2im_add, col2im_add_bl, gather_columns, gather_columns_bl, gather_rows,
                                 gather_rows_bl, scatter_rows, scatter_rows_bl)
from ..kernels.cpu.microkernels import LANES, WIDE_NV
from .common import (batch_first, batch_last, check_conv_input, check_cpu_input, np_view, refuse_double_backward,
                     unviewed)
from .block_planes import BlockPlanesConv2dFunction, image_tiles
from .block_runs import BlockRunsConv2dFunction
from .block_tiles import BlockTilesConv2dFunction
from .conv import ConvGeometry
from .plan import Plan
from .threads import sync_threads

CHUNK_BYTES = 2 << 20  # column-matrix bytes per chunk: small chunks stay in cache between gather and GEMM
BLOCK_VARIANTS = ("over-width", "batch-last", "runs", "tiled", "planes")
STRIDE1_VARIANTS = ("runs", "tiled", "planes")  # implicit GEMM over contiguous runs: stride 1 only
PLANE_VARIANTS = ("planes",)  # ...and an output plane of the input's shape (padding 'same')


def channel_items(channels: torch.Tensor, p: int, n_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input channel, the block rows (g*(c*p) + k) that read it: a CSR (ptr, items) for the col2im kernels."""
    ch = channels.repeat_interleave(p, dim=1).flatten()  # channel of block row g*(c*p) + k
    items = torch.sort(ch, stable=True).indices
    ptr = torch.zeros(n_channels + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(ch, minlength=n_channels), 0, out=ptr[1:])
    return ptr, items


def _per_chunk(total: int, unit_elems: int, itemsize: int) -> int:
    """How many units (images or output rows) of ``unit_elems`` column entries fit one chunk."""
    return max(1, min(total, CHUNK_BYTES // max(1, unit_elems * itemsize)))


def _geo_args(geo: ConvGeometry, OH: int, OW: int) -> tuple[int, ...]:
    (sh, sw), (pt, _, pl, _), (dh, dw), (_, kw) = geo.stride, geo.padding, geo.dilation, geo.kernel
    return (kw, sh, sw, pt, pl, dh, dw, OH, OW)


def _buffers(x: torch.Tensor, t: int, R: int, K: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(t, K, n), x.new_empty(t, R, n)


def _fit(buf: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` columns of a (t, rows, N) buffer as a contiguous tensor (a view when n == N)."""
    return buf if buf.shape[2] == n else buf[:, :, :n].contiguous()


class BlockConv2dFunction(torch.autograd.Function):
    """y = block_conv(x); see the module docstring."""

    @staticmethod
    def forward(ctx, x, values, bias, rows, channels, cells, ch_ptr, ch_items, geo: ConvGeometry, out_channels,
                variant):
        sync_threads()
        B, C, H, W = x.shape
        OH, OW = geo.out_size(H, W)
        t, R, K = values.shape
        args = _geo_args(geo, OH, OW)
        b_vec = np_view(bias) if bias is not None else x.new_zeros(out_channels).numpy()
        vals = values.detach()
        ch, ce, rw = channels.numpy(), cells.numpy(), rows.numpy()
        if variant == "batch-last":
            xT = batch_last(x)  # free when x is a batch-last view
            yT = x.new_empty(out_channels, OH, OW, B)
            yflat = yT.view(out_channels, -1).numpy()
            per = _per_chunk(OH, t * K * OW * B, x.element_size())
            cols, ybuf = _buffers(x, t, R, K, per * OW * B)
            for oh0 in range(0, OH, per):
                oh1 = min(OH, oh0 + per)
                cb, yb = _fit(cols, (oh1 - oh0) * OW * B), _fit(ybuf, (oh1 - oh0) * OW * B)
                gather_columns_bl(xT.numpy(), ch, ce, *args, oh0, oh1, cb.numpy())
                torch.bmm(vals, cb, out=yb)
                scatter_rows_bl(yb.numpy(), rw, b_vec, yflat, oh0 * OW * B)
            saved = xT
            y = batch_first(yT)  # contiguous: BatchNorm and pooling are slow on batch-last views (block_tiles.py)
        else:
            x = x.detach().contiguous()
            L = OH * OW
            y = x.new_empty(B, out_channels, L)
            per = _per_chunk(B, t * K * L, x.element_size())
            cols, ybuf = _buffers(x, t, R, K, per * L)
            for b0 in range(0, B, per):
                b1 = min(B, b0 + per)
                cb, yb = _fit(cols, (b1 - b0) * L), _fit(ybuf, (b1 - b0) * L)
                gather_columns(np_view(x[b0:b1]), ch, ce, *args, cb.numpy())
                torch.bmm(vals, cb, out=yb)
                scatter_rows(yb.numpy(), rw, b_vec, y[b0:b1].numpy())
            saved = x
            y = y.view(B, out_channels, OH, OW)
        ctx.save_for_backward(saved, values, rows, channels, cells, ch_ptr, ch_items)
        ctx.geo, ctx.has_bias, ctx.variant, ctx.out_hw = geo, bias is not None, variant, (OH, OW)
        return unviewed(y)

    @staticmethod
    def backward(ctx, gy):
        refuse_double_backward("BlockSparseConv2d")
        sync_threads()
        saved, values, rows, channels, cells, ch_ptr, ch_items = ctx.saved_tensors
        OH, OW = ctx.out_hw
        t, R, K = values.shape
        args = _geo_args(ctx.geo, OH, OW)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dv = torch.zeros_like(values) if need_w else None
        vals_t = values.detach().transpose(1, 2)
        ch, ce, rw, cp, ci_items = channels.numpy(), cells.numpy(), rows.numpy(), ch_ptr.numpy(), ch_items.numpy()
        dx = None
        if ctx.variant == "batch-last":
            C, H, W, B = saved.shape
            gyT = batch_last(gy)
            gflat = gyT.view(gyT.shape[0], -1).numpy()
            dxT = saved.new_zeros(C, H, W, B) if need_x else None
            per = _per_chunk(OH, t * K * OW * B, saved.element_size())
            cols, gbuf = _buffers(saved, t, R, K, per * OW * B)
            for oh0 in range(0, OH, per):
                oh1 = min(OH, oh0 + per)
                cb, gb = _fit(cols, (oh1 - oh0) * OW * B), _fit(gbuf, (oh1 - oh0) * OW * B)
                gather_rows_bl(gflat, rw, oh0 * OW * B, gb.numpy())
                if need_w:
                    gather_columns_bl(saved.numpy(), ch, ce, *args, oh0, oh1, cb.numpy())
                    dv.baddbmm_(gb, cb.transpose(1, 2))
                if need_x:
                    torch.bmm(vals_t, gb, out=cb)
                    col2im_add_bl(cb.numpy(), cp, ci_items, ce, *args, oh0, oh1, dxT.numpy())
            if need_x:  # contiguous, by our transpose rather than a consumer's (or AccumulateGrad's) slow copy
                dx = batch_first(dxT)
            db_dims = (1, 2, 3)
        else:
            B, C, H, W = saved.shape
            L = OH * OW
            gy = gy.contiguous().view(B, -1, L)
            dx = saved.new_empty(B, C, H, W) if need_x else None
            per = _per_chunk(B, t * K * L, saved.element_size())
            cols, gbuf = _buffers(saved, t, R, K, per * L)
            for b0 in range(0, B, per):
                b1 = min(B, b0 + per)
                cb, gb = _fit(cols, (b1 - b0) * L), _fit(gbuf, (b1 - b0) * L)
                gather_rows(gy[b0:b1].numpy(), rw, gb.numpy())
                if need_w:
                    gather_columns(np_view(saved[b0:b1]), ch, ce, *args, cb.numpy())
                    dv.baddbmm_(gb, cb.transpose(1, 2))
                if need_x:
                    torch.bmm(vals_t, gb, out=cb)
                    col2im_add(cb.numpy(), cp, ci_items, ce, *args, dx[b0:b1].numpy())
            gyT = gy
            db_dims = (0, 2)
        db = gyT.sum(db_dims) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dv, db, None, None, None, None, None, None, None, None


def block_variants(geo: ConvGeometry) -> tuple[str, ...]:
    """The CPU variants that can run ``geo``: ``"runs"``, ``"tiled"`` and ``"planes"`` need stride 1, ``"planes"``
    also an output plane of the input's shape."""
    return tuple(v for v in BLOCK_VARIANTS if (v not in STRIDE1_VARIANTS or geo.stride == (1, 1))
                 and (v not in PLANE_VARIANTS or geo.keeps_plane))


def plane_fill(h: int, w: int) -> float:
    """The share of the ``planes`` variant's lanes that an h x w plane fills: its register tiles cover whole
    multiples of ``WIDE_NV * LANES`` pixels, or with image tiles (planes of at most one vector) one vector per
    image."""
    if image_tiles(h * w):
        return h * w / LANES
    tile = WIDE_NV * LANES
    return h * w / (-(-(h * w) // tile) * tile)


# image-tile planes (4x4 maps with AVX-512) against `tiled`/`batch-last`, whole layer steps at 90-95%: 1.2-1.5x at
# batch 8-16, 1.05-1.1x at 32-64, 0.85-1.01x at 128 (docs/hrbp.md)
IMAGE_TILES_MAX_BATCH = 64


def choose_block_variant(x: torch.Tensor, geo: ConvGeometry) -> str:
    """Without timing (measured on VGG-19's and ResNet-32's layers, docs/hrbp.md): the NCHW-plane register tiles for
    a stride-1 conv that keeps its plane, where the plane fills at least 3/4 of their lanes (8x8 and larger with
    AVX-512, and 4x4 as image tiles up to a batch of ``IMAGE_TILES_MAX_BATCH``; 2x2 planes would be mostly idle
    lanes); else, for stride 1, the batch-last register tiles on
    maps narrower than 32 with a batch of at least 16 (a smaller one would be mostly padding lanes); else
    batch-last when output rows are short (< 16) and the batch gives runs of at least 8; else runs over the width
    for stride 1 (no column matrix) and over-width otherwise."""
    h, w = x.shape[-2], x.shape[-1]
    _, ow = geo.out_size(h, w)
    batch = x.shape[0] if x.dim() == 4 else 1
    stride1 = geo.stride == (1, 1)
    if geo.keeps_plane and plane_fill(h, w) >= 0.75 and (batch <= IMAGE_TILES_MAX_BATCH or not image_tiles(h * w)):
        return "planes"
    if stride1 and ow < 32 and batch >= 16:
        return "tiled"
    if ow < 16 and batch >= 8:
        return "batch-last"
    return "runs" if stride1 else "over-width"


def block_conv2d(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor,
                 channels: torch.Tensor, cells: torch.Tensor, ch_ptr: torch.Tensor, ch_items: torch.Tensor,
                 geo: ConvGeometry, out_channels: int, variant: str | None = None,
                 plan: Plan | None = None) -> torch.Tensor:
    """HRBP block conv2d on the CPU (groups == 1); input (B, C, H, W), values (t, R, c*p).

    ``variant``: ``"over-width"``, ``"batch-last"``, ``"runs"`` or ``"tiled"`` (stride 1), ``"planes"`` (stride 1,
    output plane = input plane) or None
    (``choose_block_variant``);
    ``plan`` caches the runs variant's offsets between calls (the layer owns it)."""
    check_cpu_input(x, values, "BlockSparseConv2d")
    check_conv_input(x, geo, "BlockSparseConv2d")
    if variant is None:
        variant = choose_block_variant(x, geo)
    elif variant not in block_variants(geo):
        raise ValueError(f"variant must be one of {block_variants(geo)} or None for stride {geo.stride} and "
                         f"padding {geo.padding}, got {variant!r}")
    if variant == "runs" and x.shape[0] > 0:
        return BlockRunsConv2dFunction.apply(x, values, bias, rows, channels, cells, geo, out_channels,
                                             Plan() if plan is None else plan)
    if variant == "tiled" and x.shape[0] > 0:
        return BlockTilesConv2dFunction.apply(x, values, bias, rows, channels, cells, geo, out_channels,
                                              Plan() if plan is None else plan)
    if variant == "planes" and x.shape[0] > 0:
        return BlockPlanesConv2dFunction.apply(x, values, bias, rows, channels, cells, geo, out_channels,
                                               Plan() if plan is None else plan)
    if variant in STRIDE1_VARIANTS:
        variant = "over-width"  # an empty batch: nothing to stream
    return BlockConv2dFunction.apply(x, values, bias, rows, channels, cells, ch_ptr, ch_items, geo, out_channels,
                                     variant)
