"""HRBP block convolution as register-tiled implicit GEMM straight on NCHW planes (numba, no torch).

For a stride-1 conv whose output keeps the input's plane (padding 'same'), the input pixel that kernel cell q
reads for output pixel i of a plane of P = H*W pixels is i + shift[q] (shift = dh*W + dw, constant over the
plane), where it exists. So a block column (input channel j at cell q) of one image is that image's plane of
channel j read at a constant offset, and the lanes whose pixel falls outside the plane (the frame, and the
columns that wrap around from the next row) are switched off by a lane mask: the masked loads read them as zero
and touch no memory. No padded copy, no batch-last layout and no transposes back: the kernels read the NCHW input
and output gradient as they are and write the NCHW output and input gradient themselves.

Vectors run along a plane (``LANES`` pixels), each tile ``WIDE_NV`` vectors of one image; ``nvp`` vectors per
plane (rounded up to whole tiles, the masks of the vectors past the plane are 0). Planes of at most ``LANES``
pixels (4x4 with AVX-512) take *image tiles* instead (``images``): a vector holds one image's whole plane and a
tile the same plane of ``WIDE_NV`` images (``C*P`` apart), all under the plane's first mask row, so a 4x4 plane
fills its vectors instead of a quarter of a tile. ``masks`` holds one row of
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

from .microkernels import (DOT_COLS, LANES, TILE, WIDE_NV, dot_plane, gather_plane, gather_plane_pair, rows_plane,
                           vector_sum)
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
def block_fwd_planes(x, xoff, qm, vals, ids, bias, y, masks, nvp, C, OC, P, images):
    """Forward, ``y`` (B, OC, P) flat overwritten; ``x`` (B, C, P) flat; ``vals`` (t, R, K); ``xoff`` (t, K) block
    column offsets in an image (channel plane + shift), ``qm`` (t, p) the mask rows of the cells; ``ids`` (t, R).
    ``images``: image tiles (planes of at most LANES pixels), per (group of WIDE_NV images, group) task."""
    t, R, K = vals.shape
    p = qm.shape[1]
    w = vals.ravel()
    B = x.size // (C * P)
    ntiles = nvp // WIDE_NV
    lrow = masks.size - nvp
    if images:
        for task in prange(-(-B // WIDE_NV) * t):
            n0 = task // t * WIDE_NV
            g = task % t
            for r0 in range(0, R, TILE):
                rows_plane(w, g * R * K, K, min(TILE, R - r0), x, xoff[g], n0 * C * P, y, ids[g], r0, P, n0 * OC * P,
                           bias, masks, qm[g], 0, lrow, p, C * P, OC * P, 0, min(WIDE_NV, B - n0))
        return
    for task in prange(B * t * ntiles):
        n = task // (t * ntiles)
        rest = task - n * (t * ntiles)
        g = rest // ntiles
        v0 = (rest - g * ntiles) * WIDE_NV
        xb = n * C * P + v0 * LANES
        yb = n * OC * P + v0 * LANES
        for r0 in range(0, R, TILE):
            rows_plane(w, g * R * K, K, min(TILE, R - r0), x, xoff[g], xb, y, ids[g], r0, P, yb, bias, masks, qm[g],
                       v0, lrow, p, LANES, LANES, 1, WIDE_NV)


@njit(inline="always")
def _gather(w, wbase, K, R, p, j0, nj, qv, qoff, gy, goff, gb, dx, xoff, xb, masks, qm, mbase, lrow, first, gvs, dvs,
            mstep, nval):
    """One dX register tile of ``nj`` channels from j0 (the two-channel tile for a group's last one or two)."""
    if nj <= 2:
        gather_plane_pair(w, wbase, K, R, p, j0, nj, qv, qoff, p, gy, goff, gb, dx, xoff, xb, masks, qm, mbase, lrow,
                          first, gvs, dvs, mstep, nval)
    else:
        gather_plane(w, wbase, K, R, p, j0, nj, qv, qoff, p, gy, goff, gb, dx, xoff, xb, masks, qm, mbase, lrow,
                     first, gvs, dvs, mstep, nval)


@njit(**JIT)
def block_dx_planes(gy, goff, vals, qoff, qm, xoff, first, unused, dx, masks, nvp, C, OC, P, slices, images):
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
    if images:  # image tiles: a task per group of WIDE_NV images, every channel
        for task in prange(-(-B // WIDE_NV)):
            n0 = task * WIDE_NV
            nval = min(WIDE_NV, B - n0)
            for h in range(nval):
                for ch in unused:
                    dx[(n0 + h) * C * P + ch * P:(n0 + h) * C * P + (ch + 1) * P] = 0.0
            for g in range(t):
                for j0 in range(0, c, TILE):
                    _gather(w, g * R * K, K, R, p, j0, min(TILE, c - j0), qv, qoff[g], gy, goff[g], n0 * OC * P, dx,
                            xoff[g], n0 * C * P, masks, qm[g], 0, lrow, first[g], OC * P, C * P, 0, nval)
        return
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
                    _gather(w, g * R * K, K, R, p, j0, nj, qv, qoff[g], gy, goff[g], gb, dx, xoff[g], xb, masks,
                            qm[g], v0, lrow, first[g], LANES, LANES, 1, WIDE_NV)


@njit(**JIT)
def block_dw_planes(gy, goff, x, xoff, xch, pxoff, qm, dw, masks, nvp, C, OC, P, nb, parts, packed, ids, db):
    """Weight gradient of the blocks, ``dw`` (t, R, K) overwritten. A task owns one of ``parts`` slices of a block's
    rows (whole four-row tiles) and walks the batch in chunks of ``nb`` images. In NCHW one channel's planes of
    successive images lie C*P elements apart, a power of two here, so a chunk's planes of one channel share a
    cache set. Small planes (``packed``) therefore go through contiguous packs, per chunk, of the group's input
    channels (``xch`` (t, c) their planes, ``pxoff`` (t, K) the block columns in the pack) and of each four gradient
    rows; large ones are read in place (``xoff`` (t, K)), in chunks of one or two images. Each register tile takes
    four rows and four channels at one cell (one lane mask for all four columns) and adds its sums to the task's
    tile-major buffer with one vector (a reduction tree, not sixteen horizontal sums); the buffer is written to
    ``dw`` at the end. With a ``db`` of OC elements (else empty), also the bias gradient: each task sums its rows of
    the gradient chunk by chunk, right after packing them (or, in place, just before its tiles read them), so the
    gradient is not read from memory once more for it; ``ids`` (t, R) the rows' output channels."""
    t, R, K = dw.shape
    p = qm.shape[1]
    c = K // p
    d = dw.ravel()
    B = x.size // (C * P)
    nrb = (R + TILE - 1) // TILE
    ncb = (c + DOT_COLS - 1) // DOT_COLS
    lrow = masks.size - nvp
    rowlen = -(-P // LANES) * LANES
    span = nb * P
    rows_at = np.arange(TILE) * span
    for task in prange(t * parts):
        g = task // parts
        part = task - g * parts
        rb0, rb1 = part * nrb // parts, (part + 1) * nrb // parts
        buf = np.zeros((rb1 - rb0) * p * ncb * LANES, dw.dtype)
        xpack = np.empty(c * span if packed else 0, x.dtype)
        gpack = np.empty(TILE * span if packed else 0, gy.dtype)
        rsum = np.zeros(rb1 * TILE - rb0 * TILE if db.size else 0, np.float64)  # the task's rows' bias gradient
        for n0 in range(0, B, nb):
            nh = min(nb, B - n0)
            gs, xs = gy[n0 * OC * P:], x[n0 * C * P:]
            if packed:
                for j in range(c):
                    for h in range(nh):
                        src = (n0 + h) * C * P + xch[g, j]
                        xpack[j * span + h * P:j * span + (h + 1) * P] = x[src:src + P]  # a slice copy: vectorised
            for rb in range(rb0, rb1):
                r0 = rb * TILE
                nr = min(TILE, R - r0)
                if packed:
                    for i in range(nr):
                        for h in range(nh):
                            src = (n0 + h) * OC * P + goff[g, r0 + i]
                            gpack[i * span + h * P:i * span + (h + 1) * P] = gy[src:src + P]
                        if db.size:
                            rsum[r0 - rb0 * TILE + i] += vector_sum(gpack, i * span, nh * P)
                elif db.size:
                    for i in range(nr):
                        for h in range(nh):
                            src = (n0 + h) * OC * P + goff[g, r0 + i]
                            rsum[r0 - rb0 * TILE + i] += vector_sum(gy, src, P)
                for q in range(p):
                    for cb in range(ncb):
                        tile = ((rb - rb0) * p + q) * ncb + cb
                        k0, nk = cb * DOT_COLS * p + q, min(DOT_COLS, c - cb * DOT_COLS)
                        if packed:
                            dot_plane(gpack, rows_at, 0, nr, xpack, pxoff[g], k0, nk, nh, rowlen, P, P, buf,
                                      tile * LANES, K, masks, p, qm[g, q], lrow)
                        else:
                            dot_plane(gs, goff[g], r0, nr, xs, xoff[g], k0, nk, nh, rowlen, OC * P, C * P, buf,
                                      tile * LANES, K, masks, p, qm[g, q], lrow)
        if db.size:
            for r in range(rb0 * TILE, min(R, rb1 * TILE)):
                db[ids[g, r]] = rsum[r - rb0 * TILE]
        for rb in range(rb0, rb1):
            r0 = rb * TILE
            for q in range(p):
                for cb in range(ncb):
                    tile = ((rb - rb0) * p + q) * ncb + cb
                    for i in range(min(TILE, R - r0)):
                        for j in range(min(DOT_COLS, c - cb * DOT_COLS)):
                            k = (cb * DOT_COLS + j) * p + q
                            d[(g * R + r0 + i) * K + k] = buf[tile * LANES + i * DOT_COLS + j]
