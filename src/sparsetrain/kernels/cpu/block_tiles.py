"""HRBP block convolution as register-tiled implicit GEMM on batch-last data (stride 1; numba, no torch).

Layout: the input is zero-padded batch-last, ``xp`` (C, hp, wp, B) flat, so block column ``k`` of group ``g`` (its
input channel at one kernel cell) for output pixel (oh, ow) is the contiguous run of B images at
``off[g, k] + (oh*wp + ow)*B``. The output and its gradient are compact batch-last (C_O, OH, OW, B); ``goff[g, r]``
is the start of block row r's output channel. B must be a multiple of ``LANES`` (the op pads the batch).

* ``block_fwd_tiles``  y = bias + W_g @ X_g per (lane tile, group, pixel) task; four rows share each input load.
* ``block_dx_tiles``   dxp[off[g,k] + pixel + l] += sum_r W_g[r, k] * gy[goff[g,r] + pixel + l]; four columns share
  each gradient load. Parallel over lane tiles only: every task owns its images, so no two tasks add to the same
  place (the same input value is read by several groups, pixels and cells).
* ``block_dw_tiles``   dW_g[r, k] = sum over pixels and images of gy * x, four rows by four columns per task; each
  task owns its entries of dW.

Every task runs ``microkernels`` tiles, whose accumulators stay in registers for a whole reduction. Why this
layout: the block rows of HRBP share their input streams, so a register tile of rows multiplies each loaded
vector four times; on batch-last data every stream is aligned and contiguous, and no column matrix is gathered.
"""
from __future__ import annotations

from numba import njit, prange

from .microkernels import LANES, TILE, cols_tile, cols_tile_wide, dot_tile, rows_tile, rows_tile_wide
from .runs import JIT

WIDE = TILE * LANES  # lanes of the wide tiles


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
    """Input gradient into the padded batch-last ``dxp`` (accumulated: zero it first). ``gy`` compact batch-last,
    ``goff`` (t, R). ``wide``: 64-lane tasks (for B // 64 >= threads) instead of 16-lane ones."""
    t, R, K = vals.shape
    w = vals.ravel()
    width = WIDE if wide else LANES
    n_tiles = B // width
    for lt in prange(n_tiles + (B - n_tiles * width) // LANES):
        for g in range(t):
            og = off[g]
            gg = goff[g]
            for oh in range(OH):
                for ow in range(OW):
                    xb = (oh * wp + ow) * B
                    gb = (oh * OW + ow) * B
                    for k0 in range(0, K, TILE):
                        nk = min(TILE, K - k0)
                        if lt < n_tiles and wide:
                            l0 = lt * WIDE
                            cols_tile_wide(w, g * R * K, K, R, k0, nk, gy, gg, gb + l0, dxp, og, xb + l0)
                        elif wide:
                            l0 = n_tiles * WIDE + (lt - n_tiles) * LANES
                            cols_tile(w, g * R * K, K, R, k0, nk, gy, gg, gb + l0, dxp, og, xb + l0)
                        else:
                            cols_tile(w, g * R * K, K, R, k0, nk, gy, gg, gb + lt * LANES, dxp, og, xb + lt * LANES)


@njit(**JIT)
def block_dw_tiles(gy, goff, xp, off, dw, OH, OW, wp, B):
    """Weight gradient of the blocks, ``dw`` (t, R, K) overwritten: per output row oh, the OW*B contiguous elements
    of each gradient row and input column."""
    t, R, K = dw.shape
    d = dw.ravel()
    nrb = (R + TILE - 1) // TILE
    nkb = (K + TILE - 1) // TILE
    for task in prange(t * nrb * nkb):
        g = task // (nrb * nkb)
        rest = task - g * (nrb * nkb)
        rb = rest // nkb
        kb = rest - rb * nkb
        r0 = rb * TILE
        k0 = kb * TILE
        dot_tile(gy, goff[g], r0, min(TILE, R - r0), xp, off[g], k0, min(TILE, K - k0), OH, OW * B, OW * B, wp * B,
                 d, g * R * K, K)
