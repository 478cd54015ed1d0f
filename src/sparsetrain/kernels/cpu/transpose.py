"""Data movement kernels. A blocked parallel 2-D transpose: torch's strided copy of a large transpose runs far
below memory bandwidth here (13 ms for 3072 x 902 floats), and every linear pass needs one. A parallel gather.
The zero-padded batch-last copies in and out of the conv run kernels."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .runs import JIT

_BLOCK = 8  # measured: 3 ms for 902 x 3072 floats vs 9 ms with 32 (cache-set conflicts)


def transpose_into(src, dst) -> None:
    """dst[j, i] = src[i, j]; ``src`` may have any strides, ``dst`` is a C-contiguous (cols, rows) array."""
    if src.flags.c_contiguous:
        _transpose_contiguous(src, dst)
    else:
        _transpose_strided(src, dst)


@njit(**JIT)
def _transpose_contiguous(src, dst):
    """Flat 8x8 micro-tiles with unsigned offsets, parallel over 8-column strips of ``src``: 1.3-2.8x faster than
    the strided kernel on the shapes the linear layers transpose (902 x 768: 0.22 vs 0.53 ms, 2 threads)."""
    R, C = src.shape
    s = src.ravel()  # a view: src is C-contiguous
    d = dst.ravel()
    nbr = R // 8
    nbc = C // 8
    for bj in prange(nbc):
        j0 = bj * 8
        for bi in range(nbr):
            i0 = bi * 8
            for jj in range(8):
                db = np.uint64((j0 + jj) * R + i0)
                sb = np.uint64(i0 * C + j0 + jj)
                for ii in range(8):
                    d[db + np.uint64(ii)] = s[sb + np.uint64(ii * C)]
        for j in range(j0, j0 + 8):  # the last R % 8 rows of this strip
            for i in range(nbr * 8, R):
                d[j * R + i] = s[i * C + j]
    for j in range(nbc * 8, C):  # the last C % 8 columns
        for i in range(R):
            d[j * R + i] = s[i * C + j]


@njit(**JIT)
def _transpose_strided(src, dst):
    """The same for any strides of ``src`` (2-D indexing, 8x8 blocks)."""
    R, C = src.shape
    nbr = (R + _BLOCK - 1) // _BLOCK
    nbc = (C + _BLOCK - 1) // _BLOCK
    for t in prange(nbr * nbc):
        bi = t // nbc
        bj = t - bi * nbc
        i1 = min(R, bi * _BLOCK + _BLOCK)
        j1 = min(C, bj * _BLOCK + _BLOCK)
        for j in range(bj * _BLOCK, j1):
            for i in range(bi * _BLOCK, i1):
                dst[j, i] = src[i, j]


@njit(**JIT)
def take_into(src, idx, dst):
    """dst[i] = src[idx[i]]: the weights in the transposed structure's order, every backward (torch's
    advanced indexing runs single-threaded here, 1.3 ms for 236K values vs 0.2 ms)."""
    for i in prange(dst.shape[0]):
        dst[i] = src[idx[i]]


@njit(**JIT)
def pad_batch_last(src, dst, base, cstride, hp, wp, pt, pl, csum):
    """Write a (B, C, H, W) C-contiguous ``src`` batch-last and zero-framed into the flat ``dst``: channel ``c``'s
    (hp, wp, B) plane starts at ``base + c * cstride``, with ``src[:, c]`` at rows pt.., columns pl.. and zeros in
    the rest of the plane (padding rows and columns, discarded tail columns). One pass instead of torch's frame
    zeroing plus a strided permute copy (2-3x faster on a 8x128x7x7 input). When ``csum`` (C,) is not empty it
    receives each channel's sum (accumulated in float64, stored in its own dtype): a conv's bias gradient from the
    same read of dY."""
    B, C, H, W = src.shape
    s = src.ravel()
    plane = H * W
    image = C * plane
    rl = wp * B
    summed = csum.shape[0] != 0
    for c in prange(C):
        p = base + c * cstride
        acc = 0.0
        for r in range(hp):
            row = p + r * rl
            h = r - pt
            if h < 0 or h >= H:
                for i in range(row, row + rl):
                    dst[i] = 0.0
                continue
            for i in range(row, row + pl * B):
                dst[i] = 0.0
            sb = c * plane + h * W
            for w in range(W):
                o = np.uint64(row + (pl + w) * B)
                for b in range(B):
                    e = s[np.uint64(b * image + sb + w)]
                    dst[o + np.uint64(b)] = e
                    if summed:
                        acc += np.float64(e)
            for i in range(row + (pl + W) * B, row + rl):
                dst[i] = 0.0
        if summed:
            csum[c] = acc


@njit(**JIT)
def unpad_batch_first(src, base, cstride, wp, pt, pl, dst):
    """The inverse read of ``pad_batch_last``: ``dst`` (B, C, H, W) C-contiguous from the planes of the flat
    ``src``, so a batch-last result reaches autograd contiguous (no strided copy in AccumulateGrad)."""
    B, C, H, W = dst.shape
    d = dst.ravel()
    plane = H * W
    image = C * plane
    rl = wp * B
    for c in prange(C):
        p = base + c * cstride + pt * rl + pl * B
        for h in range(H):
            row = p + h * rl
            db = c * plane + h * W
            for b in range(B):
                o = np.uint64(b * image + db)
                sb = np.uint64(row + b)
                for w in range(W):
                    d[o + np.uint64(w)] = src[sb + np.uint64(w * B)]
