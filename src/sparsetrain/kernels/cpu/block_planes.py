"""HRBP block convolution as register-tiled implicit GEMM straight on NCHW planes (numba, no torch).

For a stride-1 conv whose output keeps the input's plane (padding 'same'), the input pixel that kernel cell q
reads for output pixel i of a plane of P = H*W pixels is i + shift[q] (shift = dh*W + dw, constant over the
plane), where it exists. So a block column (input channel j at cell q) of one image is that image's plane of
channel j read at a constant offset, and the lanes whose pixel falls outside the plane (the frame, and the
columns that wrap around from the next row) are switched off by a lane mask: the masked loads read them as zero
and touch no memory. No padded copy, no batch-last layout and no transposes back: the kernels read the NCHW input
and output gradient as they are and write the NCHW output and input gradient themselves.

Vectors run along a plane (``LANES`` pixels), each tile ``WIDE_NV`` vectors of one image; ``nvp`` vectors per
plane (rounded up to whole tiles, the masks of the vectors past the plane are 0). ``masks`` holds one row of
``nvp`` lane masks per kernel cell (bit l = lane l) followed by one row of the plane's own lanes (at ``lrow``).

* ``block_fwd_planes``  y = bias + W_g @ X_g per (image, group, tile of the plane) task; four rows share each load.
* ``block_dx_planes``   dX in gather form per (image, run of tiles) task: four channels of a group sum the group's
  rows over its cells (masks of the output pixels that exist) and store (first group) or add to dX.
* ``block_dw_planes``   dW per (group, slice of rows) task: 4 x ``DOT_COLS`` dot products over chunks of images.

Why: on VGG-19's 8x8 and 16x16 layers the batch-last ``tiled`` kernels spend about 30% of a step in the four
NCHW <-> batch-last copies (docs/hrbp.md); here there are none.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .microkernels import (DOT_COLS, LANES, TILE, WIDE_NV, dot_plane, gather_plane, gather_plane_full,
                           gather_plane_pair, rows_plane)
from .runs import JIT


def plane_masks(H: int, W: int, dh: np.ndarray, dw: np.ndarray) -> np.ndarray:
    """Lane masks of a plane of H x W pixels for cells shifted by (dh[q], dw[q]) rows and columns: row q, vector v,
    bit l is set where pixel v*LANES + l is in the plane and so is that pixel moved by the shift; a last row of the
    plane's own lanes. Shape ((len(dh) + 1) * nvp,), nvp = the vectors per plane rounded up to whole tiles."""
    P = H * W
    nvp = -(-P // (LANES * WIDE_NV)) * WIDE_NV
    pix = np.arange(nvp * LANES)
    h, w = pix // W, pix % W
    inside = pix < P
    valid = [inside & (h + a >= 0) & (h + a < H) & (w + b >= 0) & (w + b < W) for a, b in zip(dh, dw)] + [inside]
    bits = np.stack(valid).reshape(len(valid), nvp, LANES).astype(np.int64) << np.arange(LANES, dtype=np.int64)
    return bits.sum(-1).reshape(-1)


@njit(**JIT)
def block_fwd_planes(x, xoff, qm, vals, ids, bias, y, masks, nvp, C, OC, P):
    """Forward, ``y`` (B, OC, P) flat overwritten; ``x`` (B, C, P) flat; ``vals`` (t, R, K); ``xoff`` (t, K) block
    column offsets in an image (channel plane + shift), ``qm`` (t, p) the mask rows of the cells; ``ids`` (t, R)."""
    t, R, K = vals.shape
    p = qm.shape[1]
    w = vals.ravel()
    B = x.size // (C * P)
    ntiles = nvp // WIDE_NV
    lrow = masks.size - nvp
    for task in prange(B * t * ntiles):
        n = task // (t * ntiles)
        rest = task - n * (t * ntiles)
        g = rest // ntiles
        v0 = (rest - g * ntiles) * WIDE_NV
        xb = n * C * P + v0 * LANES
        yb = n * OC * P + v0 * LANES
        for r0 in range(0, R, TILE):
            rows_plane(w, g * R * K, K, min(TILE, R - r0), x, xoff[g], xb, y, ids[g], r0, P, yb, bias, masks, qm[g],
                       v0, lrow, p)


@njit(**JIT)
def block_dx_planes(gy, goff, vals, qoff, qm, xoff, first, unused, dx, masks, nvp, C, OC, P, slices):
    """Input gradient, ``dx`` (B, C, P) flat overwritten; ``gy`` (B, OC, P); ``goff`` (t, R) row planes; ``qoff`` (t, p)
    each cell's output pixel relative to the input pixel, ``qm`` (t, p) its mask rows in ``masks`` (of the output
    pixels); ``xoff`` (t, c) each block channel's plane; ``first`` (t, c) 1 where group g is the first to write that
    channel (it stores, the later groups add), ``unused`` the channels in no group (zeroed). A task owns one of
    ``slices`` runs of tiles of an image's planes, for every channel, and takes group by group, four channels at a
    time, all its tiles: the four channels' planes then stay in L1 (tile-major, the stores of a task's tiles
    for all channels, 1 KB apart on 16x16 planes, shared a few cache sets: 1.2x slower on one thread)."""
    t, R, K = vals.shape
    p = qoff.shape[1]
    c = K // p
    w = vals.ravel()
    B = dx.size // (C * P)
    ntiles = nvp // WIDE_NV
    lrow = masks.size - nvp
    qv = np.arange(p)
    for task in prange(B * slices):
        n = task // slices
        sl = task - n * slices
        tile0, tile1 = sl * ntiles // slices, (sl + 1) * ntiles // slices
        lo, hi = tile0 * WIDE_NV * LANES, min(P, tile1 * WIDE_NV * LANES)
        for ch in unused:
            dx[n * C * P + ch * P + lo:n * C * P + ch * P + hi] = 0.0
        for g in range(t):
            for j0 in range(0, c, TILE):
                nj = min(TILE, c - j0)
                for tile in range(tile0, tile1):
                    v0 = tile * WIDE_NV
                    xb = n * C * P + v0 * LANES
                    gb = n * OC * P + v0 * LANES
                    if nj == TILE:
                        gather_plane_full(w, g * R * K, K, R, p, j0, nj, qv, qoff[g], p, gy, goff[g], gb, dx, xoff[g],
                                          xb, masks, qm[g], v0, lrow, first[g])
                    elif nj <= 2:
                        gather_plane_pair(w, g * R * K, K, R, p, j0, nj, qv, qoff[g], p, gy, goff[g], gb, dx, xoff[g],
                                          xb, masks, qm[g], v0, lrow, first[g])
                    else:
                        gather_plane(w, g * R * K, K, R, p, j0, nj, qv, qoff[g], p, gy, goff[g], gb, dx, xoff[g], xb,
                                     masks, qm[g], v0, lrow, first[g])


@njit(**JIT)
def block_dw_planes(gy, goff, x, xch, pxoff, qm, dw, masks, nvp, C, OC, P, nb, parts):
    """Weight gradient of the blocks, ``dw`` (t, R, K) overwritten. A task owns one of ``parts`` slices of a block's
    rows (whole four-row tiles) and walks the batch in chunks of ``nb`` images. It packs the chunk's planes of the
    group's input channels (``xch`` (t, c)) and then of each four gradient rows into contiguous buffers: in the NCHW
    tensors one channel's planes of successive images lie a power of two apart (C*P elements), so a chunk's rows
    would share a few cache sets and evict each other. ``pxoff`` (t, K): the block columns in the packed input
    (channel's plane + the cell's shift). Each register tile takes four channels at one cell (same lane masks)."""
    t, R, K = dw.shape
    p = qm.shape[1]
    c = K // p
    d = dw.ravel()
    B = x.size // (C * P)
    nrb = (R + TILE - 1) // TILE
    lrow = masks.size - nvp
    rowlen = -(-P // LANES) * LANES
    span = nb * P
    rows_at = np.arange(TILE) * span
    for task in prange(t * parts):
        g = task // parts
        part = task - g * parts
        rb0, rb1 = part * nrb // parts, (part + 1) * nrb // parts
        for i in range((g * R + rb0 * TILE) * K, (g * R + min(R, rb1 * TILE)) * K):
            d[i] = 0.0
        xpack = np.empty(c * span, x.dtype)
        gpack = np.empty(TILE * span, gy.dtype)
        for n0 in range(0, B, nb):
            nh = min(nb, B - n0)
            for j in range(c):
                for h in range(nh):
                    src = (n0 + h) * C * P + xch[g, j]
                    xpack[j * span + h * P:j * span + (h + 1) * P] = x[src:src + P]  # a slice copy is vectorised
            for rb in range(rb0, rb1):
                r0 = rb * TILE
                nr = min(TILE, R - r0)
                for i in range(nr):
                    for h in range(nh):
                        src = (n0 + h) * OC * P + goff[g, r0 + i]
                        gpack[i * span + h * P:i * span + (h + 1) * P] = gy[src:src + P]
                for q in range(p):
                    for j0 in range(0, c, DOT_COLS):
                        dot_plane(gpack, rows_at, 0, nr, xpack, pxoff[g], j0 * p + q, min(DOT_COLS, c - j0), nh,
                                  rowlen, P, P, d, (g * R + r0) * K, K, masks, p, qm[g, q], lrow)
