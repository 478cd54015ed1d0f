"""HRBP block convolution as register-tiled implicit GEMM on batch-last data (stride 1; numba, no torch).

Layout: the batch is split into sub-batches of at most ``WIDE`` images (``subs``, one row per sub-batch: lanes L,
starts and lengths of its parts of the buffers), and each sub-batch is its own zero-padded batch-last array,
(C, hp, wp, L) flat. Block column ``k`` of group ``g`` (its input channel at one kernel cell) for output pixel
(oh, ow) of sub-batch ``s`` is then the contiguous run of L images at ``off[s, g, k] + (oh*wp + ow)*L`` from the
sub-batch's start. The output, its gradient and the input gradient are compact (unpadded) batch-last per
sub-batch, (C_O, OH, OW, L) and (C, H, W, L); ``goff[s, g, r]`` is the start of block row r's output channel. L is
a multiple of ``LANES`` (16 with AVX-512, else 8; the op pads the batch).

Why sub-batches rather than one (C, hp, wp, B) array: a task then streams memory that is its own and contiguous.
With B = 128 split into two 64-lane tasks inside one array, each core read and wrote every other 256 bytes, and the
power-of-two pixel stride put a tile's rows into few L1 sets; measured on the kernels alone, one thread, two
64-image sub-batches against one 128-image array: forward 1.12-1.39x and the (then scatter-form) dX 1.20-1.73x
faster (VGG-19's 8x8, 16x16 and 4x4 layers at 95%), dW level.

* ``block_fwd_tiles``  y = bias + W_g @ X_g per (sub-batch, group, pixel) task; four rows share each input load.
* ``block_dx_gather``  dX in gather form: for an input pixel and four channels of a group, the sum over the group's
  rows and the cells whose output pixel exists, in one register tile (four channels share each gradient load),
  added to dX once. Parallel over sub-batches only: every task owns its images, so no two tasks add to the same
  place (an input channel belongs to several groups). The scatter form (a tile per output pixel and four block
  columns, added into the padded input after only R steps) was 1.05-1.16x slower per layer step (min of 40
  alternating steps: 128x256@8, 256x256@8, 512x512@4, 512x512@2, 64x64@8 at 95%). A group's last one or two
  channels take a two-channel tile (at 95% a 128-channel input gives 14 per group): 1.01-1.06x per step.
* ``block_dw_tiles``   dW_g[r, k] = sum over sub-batches, pixels and images of gy * x in 4 x ``DOT_COLS`` register
  tiles; a task owns four rows of one block.

Every task runs ``microkernels`` tiles, whose accumulators stay in registers for a whole reduction. Why this
layout: the block rows of HRBP share their input streams, so a register tile of rows multiplies each loaded
vector four times; on batch-last data every stream is aligned and contiguous, and no column matrix is gathered.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .microkernels import (DOT_COLS, LANES, TILE, WIDE_NV, dot_tile, gather_pair_1, gather_pair_2, gather_pair_3,
                           gather_pair_4, gather_tile_1, gather_tile_2, gather_tile_3, gather_tile_4, rows_tile_1,
                           rows_tile_2, rows_tile_3, rows_tile_4)
from .runs import JIT

WIDE = WIDE_NV * LANES  # most lanes of one sub-batch (one register tile's width)
DW_ROWS = 4  # output rows per dW chunk on maps taller than 8 (measured 1.17-1.21x on 16x16, level on 8x8)


@njit(inline="always")
def _rows(nv, w, wb, K, nr, x, xo, xb, y, ids, r0, ys, yb, bias):
    """The forward tile of ``nv`` vectors (a sub-batch's width)."""
    if nv == 4:
        rows_tile_4(w, wb, K, nr, x, xo, xb, y, ids, r0, ys, yb, bias)
    elif nv == 3:
        rows_tile_3(w, wb, K, nr, x, xo, xb, y, ids, r0, ys, yb, bias)
    elif nv == 2:
        rows_tile_2(w, wb, K, nr, x, xo, xb, y, ids, r0, ys, yb, bias)
    else:
        rows_tile_1(w, wb, K, nr, x, xo, xb, y, ids, r0, ys, yb, bias)


@njit(inline="always")
def _gather(nv, w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb):
    """The gather-form input-gradient tile of ``nv`` vectors; two channels wide when at most two are left."""
    if nj <= 2:
        if nv == 4:
            gather_pair_4(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)
        elif nv == 3:
            gather_pair_3(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)
        elif nv == 2:
            gather_pair_2(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)
        else:
            gather_pair_1(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)
    elif nv == 4:
        gather_tile_4(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)
    elif nv == 3:
        gather_tile_3(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)
    elif nv == 2:
        gather_tile_2(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)
    else:
        gather_tile_1(w, wb, K, R, p, j0, nj, qv, qo, nq, gy, go, gb, dx, xo, xb)


@njit(**JIT)
def block_fwd_tiles(xp, off, vals, ids, bias, y, OH, OW, wp, subs):
    """Forward over the padded batch-last sub-batches; ``vals`` (t, R, K), ``off`` (S, t, K), ``ids`` (t, R) output
    channels, ``y`` flat, overwritten."""
    t, R, K = vals.shape
    w = vals.ravel()
    npix = OH * OW
    for task in prange(subs.shape[0] * t * npix):
        s = task // (t * npix)
        rest = task - s * (t * npix)
        g = rest // npix
        pix = rest - g * npix
        L = subs[s, 0]
        oh = pix // OW
        xb = subs[s, 1] + (oh * wp + pix - oh * OW) * L
        yb = subs[s, 2] + pix * L
        og = off[s, g]
        ig = ids[g]
        for r0 in range(0, R, TILE):
            _rows(L // LANES, w, g * R * K, K, min(TILE, R - r0), xp, og, xb, y, ig, r0, npix * L, yb, bias)


@njit(**JIT)
def block_dw_tiles(gy, goff, xp, off, dw, OH, OW, wp, subs):
    """Weight gradient of the blocks, ``dw`` (t, R, K) overwritten. A task owns four rows of one block and walks each
    sub-batch's output rows in chunks of ``DW_ROWS`` (the whole map up to 8 rows): the chunk of its four gradient
    rows stays in cache while every column tile of the block reads its input rows against it (a task per 4 x 4
    tile re-read the gradient rows from L3 for every column tile)."""
    t, R, K = dw.shape
    d = dw.ravel()
    nrb = (R + TILE - 1) // TILE
    chunk = OH if OH <= 8 else DW_ROWS
    for task in prange(t * nrb):
        g = task // nrb
        r0 = (task - g * nrb) * TILE
        nr = min(TILE, R - r0)
        for i in range((g * R + r0) * K, (g * R + r0 + nr) * K):
            d[i] = 0.0
        for s in range(subs.shape[0]):
            L = subs[s, 0]
            og = off[s, g]
            gg = goff[s, g]
            for h0 in range(0, OH, chunk):
                nh = min(chunk, OH - h0)
                gs = gy[subs[s, 2] + h0 * OW * L:]
                xs = xp[subs[s, 1] + h0 * wp * L:]
                for k0 in range(0, K, DOT_COLS):
                    dot_tile(gs, gg, r0, nr, xs, og, k0, min(DOT_COLS, K - k0), nh, OW * L, OW * L, wp * L, d,
                             g * R * K, K)


@njit(**JIT)
def block_dx_gather(gy, goff, vals, cell_h, cell_w, xoff, dx, H, W, OH, OW, pt, pl, subs):
    """Input gradient in gather form into the unpadded batch-last sub-batches of ``dx`` (C, H, W, L each, starting
    at ``subs[s, 4]``, of length ``subs[s, 5]``), overwritten. For every input pixel, group and four of the group's
    channels, one register tile sums the group's rows over the cells whose output pixel exists (``cell_h`` and
    ``cell_w`` (t, p): the cells' row and column shifts, dilation included), so each tile is stored once after
    R x p multiply-add steps. ``xoff`` (S, t, c): each block channel's plane."""
    t, R, K = vals.shape
    p = cell_h.shape[1]
    c = K // p
    w = vals.ravel()
    for s in prange(subs.shape[0]):
        L = subs[s, 0]
        nv = L // LANES
        d0 = np.uint64(subs[s, 4])
        for i in range(np.uint64(subs[s, 5])):
            dx[d0 + i] = 0.0
        qv = np.empty(p, np.int64)
        qo = np.empty(p, np.int64)
        for g in range(t):
            gg = goff[s, g]
            xg = xoff[s, g]
            for ih in range(H):
                for iw in range(W):
                    nq = 0
                    for q in range(p):
                        oh = ih + pt - cell_h[g, q]
                        ow = iw + pl - cell_w[g, q]
                        if 0 <= oh < OH and 0 <= ow < OW:
                            qv[nq] = q
                            qo[nq] = (oh * OW + ow) * L
                            nq += 1
                    if nq == 0:
                        continue
                    xb = subs[s, 4] + (ih * W + iw) * L
                    for j0 in range(0, c, TILE):
                        _gather(nv, w, g * R * K, K, R, p, j0, min(TILE, c - j0), qv, qo, nq, gy, gg, subs[s, 2],
                                dx, xg, xb)
