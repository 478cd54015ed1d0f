"""Autograd op for the HRBP block convolution on NCHW planes (stride 1, output plane = input plane; CPU; variant
``"planes"``).

The kernels (``kernels/cpu/block_planes.py``) read the NCHW input and output gradient in place and write the
NCHW output and input gradient directly: a block column is a channel plane read at the cell's constant shift,
with lane masks for the pixels that fall outside the plane. Compared with the ``tiled`` variant this drops the
padded batch-last copy of the input, the batch-last copy of the output gradient and the transposes of the output
and the input gradient back to NCHW (about 30% of a ``tiled`` step on VGG-19's 8x8 layers), any batch padding
and the workspaces: the op keeps only the input alive for the backward, as a dense conv does. Same maths as
``block_conv.py``; the register tiles are ``block_tiles.py``'s with masked loads and stores.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..kernels.cpu.block_planes import block_dw_planes, block_dx_planes, block_fwd_planes, plane_masks
from ..kernels.cpu.microkernels import LANES, TILE, WIDE_NV
from .common import np_empty, np_view, refuse_double_backward, zeros
from .conv import ConvGeometry
from .plan import Plan, cached, kernel_arrays
from .threads import sync_threads

DW_PACKED_BELOW = 256  # dW packs its chunks for planes of fewer pixels (8x8: 1.4x faster packed; 32x32: 1.5x in place)
DW_PACK_ELEMS = 2048  # elements of the four packed gradient rows of one dW chunk: 8 KB, in L1 (16 KB: 1.0-1.3x slower)
DW_VECTORS = 32  # vectors of a plane per dW register tile and in-place chunk (16x16: 2 images, 32x32: 1)


def image_tiles(pixels: int) -> bool:
    """Whether the planes kernels take image tiles (a vector per image's whole plane) for planes of ``pixels``: at
    most one vector's worth, where a tile has more than one vector (AVX-512; 4x4 planes and smaller)."""
    return pixels <= LANES and WIDE_NV > 1


class PlanesPlan(NamedTuple):
    """Offsets and lane masks of one plane size (NumPy, ready for the kernels)."""

    xoff: np.ndarray  # (t, c*p) block column in an image: channel plane + the cell's shift
    goff: np.ndarray  # (t, R) block row's plane in an image of the output (gradient)
    ids: np.ndarray  # (t, R) block row's output channel
    qoff: np.ndarray  # (t, p) a cell's output pixel relative to the input pixel it reads (dX)
    qm: np.ndarray  # (t, p) a cell's row in either mask table
    xch: np.ndarray  # (t, c) block channel's plane in an image
    packed: np.ndarray  # (t, c*p) block column in dW's packed input (nb images per channel)
    first: np.ndarray  # (t, c) 1 where the group is the first (in kernel order) to write that input channel's dX
    unused: np.ndarray  # input channels in no group (their dX is zero)
    fwd_masks: np.ndarray  # lane masks of the input pixels each cell reads (forward, dW)
    dx_masks: np.ndarray  # lane masks of the output pixels each cell feeds (dX)
    nvp: int  # vectors per plane, whole tiles
    nb: int  # images per dW chunk
    dw_packed: bool  # dW packs its chunks (small planes)
    images: bool  # image tiles: a vector per image's plane (planes of at most LANES pixels, with WIDE_NV > 1)


def planes_plan(plan: Plan, rows: torch.Tensor, channels: torch.Tensor, cells: torch.Tensor, geo: ConvGeometry,
                C: int, H: int, W: int) -> PlanesPlan:
    """The kernels' offsets and lane masks for C input channels of H x W, cached per input size. Both mask tables have
    a row per kernel cell at the same place, so ``qm`` indexes either."""
    def build():
        P = H * W
        (Kh, Kw), (dh, dw), (pt, _, pl, _) = geo.kernel, geo.dilation, geo.padding
        cell = torch.arange(Kh * Kw)
        sh, sw = (cell // Kw) * dh - pt, (cell % Kw) * dw - pl  # rows and columns a kernel cell reads away
        fwd = plane_masks(H, W, sh.numpy(), sw.numpy())
        dxm = plane_masks(H, W, (-sh).numpy(), (-sw).numpy())
        nvp = fwd.size // (Kh * Kw + 1)
        shift = sh * W + sw
        cells_, ch, ids = cells.long(), channels.long(), rows.long()
        t, c = ch.shape
        p = cells.shape[1]
        dw_packed = P < DW_PACKED_BELOW
        nb = max(1, DW_PACK_ELEMS // (TILE * P) if dw_packed else DW_VECTORS // -(-P // LANES))
        cell_shift = shift[cells_].repeat(1, c)  # column j*p + q -> its cell's shift
        xoff = ch.repeat_interleave(p, dim=1) * P + cell_shift
        packed = torch.arange(c).repeat_interleave(p) * (nb * P) + cell_shift
        first = torch.zeros(t * c, dtype=torch.int64)
        seen, at = np.unique(ch.flatten().numpy(), return_index=True)  # groups in kernel order
        first[torch.from_numpy(at)] = 1
        unused = np.setdiff1d(np.arange(C), seen)
        arrays = kernel_arrays(xoff, ids * P, ids, -shift[cells_], cells_ * nvp, ch * P, packed, first.view(t, c))
        return PlanesPlan(*arrays, unused.astype(np.int64), fwd, dxm, nvp, nb, dw_packed, image_tiles(P))
    return cached(plan, ("block-planes", C, H, W), build)


class BlockPlanesConv2dFunction(torch.autograd.Function):
    """y = block_conv(x) for a stride-1 'same' conv, straight on NCHW planes; see the module docstring."""

    @staticmethod
    def forward(ctx, x, values, bias, rows, channels, cells, geo: ConvGeometry, out_channels: int, plan: Plan):
        B, C, H, W = x.shape
        x = x.detach().contiguous()  # a copy only for another memory format (channels_last)
        pp = planes_plan(plan, rows, channels, cells, geo, C, H, W)
        y = np_empty((B, out_channels, H, W), x.dtype)
        out = torch.from_numpy(y)  # the tensor before the kernel (torch calls are slow on cold caches after it)
        b = np_view(bias) if bias is not None else zeros(out_channels, x.dtype)
        sync_threads()
        block_fwd_planes(np_view(x).reshape(-1), pp.xoff, pp.qm, np_view(values), pp.ids, b, y.reshape(-1),
                         pp.fwd_masks, pp.nvp, C, out_channels, H * W, pp.images)
        ctx.save_for_backward(x, values)
        ctx.pp, ctx.has_bias = pp, bias is not None
        return out

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward("BlockSparseConv2d")
        x, values = ctx.saved_tensors
        pp = ctx.pp
        B, C, H, W = x.shape
        OC, P = dy.shape[1], H * W
        dy = dy.contiguous()
        gy = np_view(dy).reshape(-1)
        vals = np_view(values)
        dx = dw = db = None
        threads = sync_threads()
        t, R = pp.goff.shape
        if ctx.needs_input_grad[0]:
            dx_np = np_empty((B, C, H, W), dy.dtype)
            dx = torch.from_numpy(dx_np)
            ntiles = pp.nvp // WIDE_NV
            slices = 1 if B >= 2 * threads else min(ntiles, -(-2 * threads // B))  # runs of tiles for small batches
            block_dx_planes(gy, pp.goff, vals, pp.qoff, pp.qm, pp.xch, pp.first, pp.unused, dx_np.reshape(-1),
                            pp.dx_masks, pp.nvp, C, OC, P, slices, pp.images)
        need_db = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1]:
            dw_np = np_empty(values.shape, values.dtype)
            dw = torch.from_numpy(dw_np)
            db_np = np_empty(OC if need_db else 0, dy.dtype)  # the bias gradient rides on dW's reads of dy
            if need_db:
                db = torch.from_numpy(db_np)
            parts = min(-(-R // TILE), -(-2 * threads // t))  # two tasks per thread at least, where rows allow
            block_dw_planes(gy, pp.goff, np_view(x).reshape(-1), pp.xoff, pp.xch, pp.packed, pp.qm, dw_np, pp.fwd_masks,
                            pp.nvp, C, OC, P, pp.nb, parts, pp.dw_packed, pp.ids, db_np)
        elif need_db:
            db = dy.sum((0, 2, 3))
        return dx, dw, db, None, None, None, None, None, None
