"""HRBP block convolution as register-tiled implicit GEMM on batch-last data (stride 1; numba, no torch).

Layout: the batch is split into sub-batches of at most ``WIDE`` images (``subs``, one row per sub-batch: lanes L,
start in the input buffer, start in the output buffer, input length), and each sub-batch is its own zero-padded
batch-last array, (C, hp, wp, L) flat. Block column ``k`` of group ``g`` (its input channel at one kernel cell) for
output pixel (oh, ow) of sub-batch ``s`` is then the contiguous run of L images at ``off[s, g, k] + (oh*wp + ow)*L``
from the sub-batch's start. The output and its gradient are compact batch-last per sub-batch, (C_O, OH, OW, L);
``goff[s, g, r]`` is the start of block row r's output channel. L is a multiple of ``LANES`` (16 with AVX-512,
else 8; the op pads the batch).

Why sub-batches rather than one (C, hp, wp, B) array: a task then streams memory that is its own and contiguous.
With B = 128 split into two 64-lane tasks inside one array, each core read and wrote every other 256 bytes, and the
power-of-two pixel stride put a tile's rows into few L1 sets; measured on the kernels alone, one thread, two
64-image sub-batches against one 128-image array: forward 1.12-1.39x and dX 1.20-1.73x faster (VGG-19's 8x8,
16x16 and 4x4 layers at 95%), dW level.

* ``block_fwd_tiles``  y = bias + W_g @ X_g per (sub-batch, group, pixel) task; four rows share each input load.
* ``block_dx_tiles``   dxp[off[s,g,k] + pixel + l] = sum over g, r of W_g[r, k] * gy[goff[s,g,r] + pixel + l]; four
  columns share each gradient load. Parallel over sub-batches only: every task owns its images, so no two tasks
  add to the same place (the same input value is read by several groups, pixels and cells).
* ``block_dw_tiles``   dW_g[r, k] = sum over sub-batches, pixels and images of gy * x in 4 x ``DOT_COLS`` register
  tiles; a task owns four rows of one block.

Every task runs ``microkernels`` tiles, whose accumulators stay in registers for a whole reduction. Why this
layout: the block rows of HRBP share their input streams, so a register tile of rows multiplies each loaded
vector four times; on batch-last data every stream is aligned and contiguous, and no column matrix is gathered.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .microkernels import (DOT_COLS, LANES, TILE, WIDE_NV, cols_tile_1, cols_tile_2, cols_tile_3, cols_tile_4,
                           dot_tile, rows_tile_1, rows_tile_2, rows_tile_3, rows_tile_4)
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
def _cols(nv, w, wb, K, R, k0, nk, gy, go, gb, dx, xo, xb):
    """The input-gradient tile of ``nv`` vectors."""
    if nv == 4:
        cols_tile_4(w, wb, K, R, k0, nk, gy, go, gb, dx, xo, xb)
    elif nv == 3:
        cols_tile_3(w, wb, K, R, k0, nk, gy, go, gb, dx, xo, xb)
    elif nv == 2:
        cols_tile_2(w, wb, K, R, k0, nk, gy, go, gb, dx, xo, xb)
    else:
        cols_tile_1(w, wb, K, R, k0, nk, gy, go, gb, dx, xo, xb)


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
def block_dx_tiles(gy, goff, vals, off, dxp, OH, OW, wp, subs):
    """Input gradient into the padded batch-last sub-batches of ``dxp``, overwritten: each task (a sub-batch) first
    zeroes its own part (in parallel, so a fresh buffer's pages are touched by every thread, not by one
    ``np.zeros``), then adds every block's contribution. ``gy`` compact batch-last, ``goff`` (S, t, R)."""
    t, R, K = vals.shape
    w = vals.ravel()
    for s in prange(subs.shape[0]):
        L = subs[s, 0]
        nv = L // LANES
        x0 = np.uint64(subs[s, 1])
        for i in range(np.uint64(subs[s, 3])):
            dxp[x0 + i] = 0.0
        for g in range(t):
            og = off[s, g]
            gg = goff[s, g]
            for oh in range(OH):
                for ow in range(OW):
                    xb = subs[s, 1] + (oh * wp + ow) * L
                    gb = subs[s, 2] + (oh * OW + ow) * L
                    for k0 in range(0, K, TILE):
                        _cols(nv, w, g * R * K, K, R, k0, min(TILE, K - k0), gy, gg, gb, dxp, og, xb)


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
