"""HRBP block convolution as register-tiled implicit GEMM on batch-last data (stride 1; numba, no torch).

Layout: the input is zero-padded batch-last, ``xp`` (C, hp, wp, B) flat, so block column ``k`` of group ``g`` (its
input channel at one kernel cell) for output pixel (oh, ow) is the contiguous run of B images at
``off[g, k] + (oh*wp + ow)*B``. The output and its gradient are compact batch-last (C_O, OH, OW, B); ``goff[g, r]``
is the start of block row r's output channel. B must be a multiple of ``LANES`` (16 with AVX-512, else 8; the op
pads the batch).

* ``block_fwd_tiles``  y = bias + W_g @ X_g per (lane tile, group, pixel) task; four rows share each input load.
* ``block_dx_tiles``   dxp[off[g,k] + pixel + l] = sum over g, r of W_g[r, k] * gy[goff[g,r] + pixel + l]; four
  columns share each gradient load. Parallel over lane tiles only: every task owns its images, so no two tasks
  add to the same place (the same input value is read by several groups, pixels and cells).
* ``block_dw_tiles``   dW_g[r, k] = sum over pixels and images of gy * x in 4 x ``DOT_COLS`` register tiles; a task
  owns four rows of one block.

Every task runs ``microkernels`` tiles, whose accumulators stay in registers for a whole reduction. Why this
layout: the block rows of HRBP share their input streams, so a register tile of rows multiplies each loaded
vector four times; on batch-last data every stream is aligned and contiguous, and no column matrix is gathered.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .microkernels import DOT_COLS, LANES, TILE, WIDE_NV, cols_tile, cols_tile_wide, dot_tile, rows_tile, rows_tile_wide
from .runs import JIT

WIDE = WIDE_NV * LANES  # lanes of the wide tiles
DW_ROWS = 4  # output rows per dW chunk on maps taller than 8 (measured 1.17-1.21x on 16x16, level on 8x8)


@njit(**JIT)
def block_fwd_tiles(xp, off, vals, ids, bias, y, OH, OW, wp, B):
    """Forward over the padded batch-last input; ``vals`` (t, R, K), ``off`` (t, K), ``ids`` (t, R) output channels,
    ``y`` (C_O*OH*OW*B,) flat, overwritten."""
    t, R, K = vals.shape
    w = vals.ravel()
    plane = OH * OW * B
    n_wide = B // WIDE
    n_tiles = n_wide + (B - n_wide * WIDE) // LANES
    npix = OH * OW
    for task in prange(n_tiles * t * npix):
        lt = task // (t * npix)
        rest = task - lt * (t * npix)
        g = rest // npix
        pix = rest - g * npix
        oh = pix // OW
        xb = (oh * wp + pix - oh * OW) * B
        yb = pix * B
        og = off[g]
        ig = ids[g]
        if lt < n_wide:
            l0 = lt * WIDE
            for r0 in range(0, R, TILE):
                rows_tile_wide(w, g * R * K, K, min(TILE, R - r0), xp, og, xb + l0, y, ig, r0, plane, yb + l0, bias)
        else:
            l0 = n_wide * WIDE + (lt - n_wide) * LANES
            for r0 in range(0, R, TILE):
                rows_tile(w, g * R * K, K, min(TILE, R - r0), xp, og, xb + l0, y, ig, r0, plane, yb + l0, bias)


@njit(**JIT)
def block_dx_tiles(gy, goff, vals, off, dxp, OH, OW, wp, B, wide):
    """Input gradient into the padded batch-last ``dxp`` (C*hp*wp*B,), overwritten: each task first zeroes its own
    images' lanes (in parallel, so a fresh buffer's pages are touched by both threads, not by one ``np.zeros``),
    then adds every block's contribution. ``gy`` compact batch-last, ``goff`` (t, R). ``wide``: tasks of ``WIDE``
    lanes (for B // WIDE >= threads) instead of one vector's."""
    t, R, K = vals.shape
    w = vals.ravel()
    width = WIDE if wide else LANES
    n_tiles = B // width
    positions = dxp.shape[0] // B
    for lt in prange(n_tiles + (B - n_tiles * width) // LANES):
        big = lt < n_tiles
        l0 = lt * width if big else n_tiles * width + (lt - n_tiles) * LANES
        n = np.uint64(width if big else LANES)
        for p in range(positions):
            base = np.uint64(p * B + l0)
            for i in range(n):
                dxp[base + i] = 0.0
        for g in range(t):
            og = off[g]
            gg = goff[g]
            for oh in range(OH):
                for ow in range(OW):
                    xb = (oh * wp + ow) * B + l0
                    gb = (oh * OW + ow) * B + l0
                    for k0 in range(0, K, TILE):
                        if big and wide:
                            cols_tile_wide(w, g * R * K, K, R, k0, min(TILE, K - k0), gy, gg, gb, dxp, og, xb)
                        else:
                            cols_tile(w, g * R * K, K, R, k0, min(TILE, K - k0), gy, gg, gb, dxp, og, xb)


@njit(**JIT)
def block_dw_tiles(gy, goff, xp, off, dw, OH, OW, wp, B):
    """Weight gradient of the blocks, ``dw`` (t, R, K) overwritten. A task owns four rows of one block and walks the
    output rows in chunks of ``DW_ROWS`` (the whole map up to 8 rows): the chunk of its four gradient rows stays in
    cache while every column tile of the block reads its input rows against it (a task per 4 x 4 tile re-read the
    gradient rows from L3 for every column tile)."""
    t, R, K = dw.shape
    d = dw.ravel()
    nrb = (R + TILE - 1) // TILE
    for task in prange(t * nrb):
        g = task // nrb
        r0 = (task - g * nrb) * TILE
        nr = min(TILE, R - r0)
        for i in range((g * R + r0) * K, (g * R + r0 + nr) * K):
            d[i] = 0.0
        og = off[g]
        gg = goff[g]
        chunk = OH if OH <= 8 else DW_ROWS
        for h0 in range(0, OH, chunk):
            nh = min(chunk, OH - h0)
            for k0 in range(0, K, DOT_COLS):
                dot_tile(gy[h0 * OW * B:], gg, r0, nr, xp[h0 * wp * B:], og, k0, min(DOT_COLS, K - k0), nh, OW * B,
                         OW * B, wp * B, d, g * R * K, K)
