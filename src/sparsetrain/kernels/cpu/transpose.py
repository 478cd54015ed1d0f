"""Data movement kernels. A blocked parallel 2-D transpose on 8x8 register tiles: torch's strided copy of a large
transpose runs far below memory bandwidth here (13 ms for 3072 x 902 floats), and every linear pass needs one.
A parallel gather. The zero-padded batch-last copies in and out of the conv run kernels."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .runs import JIT
from .simd import tile8

_BLOCK = 8  # strided sources, scalar: measured 3 ms for 902 x 3072 floats vs 9 ms with 32 (cache-set conflicts)
_STRIP = 8  # tiles per block side in _transpose_blocks (64 x 64 elements)
_MIN_TASKS = 16  # parallel strips below which the other traversal order is taken
_ROW_BLOCK = 16  # 8-row strips per task in _transpose_row_blocks (128 rows: 512 bytes per destination row)
_NARROW = 128  # columns up to which a tall source takes _transpose_row_blocks (measured: 64 and 128 gain 2-3x;
               # 768 and 902 columns lose to the other orders)


def transpose_into(src, dst) -> None:
    """dst[j, i] = src[i, j]; ``src`` may have any strides, ``dst`` is a C-contiguous (cols, rows) array."""
    if src.flags.c_contiguous:
        R, C = src.shape
        row_tasks, block_tasks = R // 8, (C // 8 + _STRIP - 1) // _STRIP
        wide = R <= C
        # each order by its shape, unless that leaves too few parallel tasks (a batch of 8 rows: one strip)
        if not wide and C <= _NARROW and R >= _MIN_TASKS * _ROW_BLOCK * 8:
            _transpose_row_blocks(src, dst)  # tall and narrow (a batch-last conv output): see its docstring
            return
        if (wide and row_tasks < _MIN_TASKS) or (not wide and block_tasks < _MIN_TASKS):
            wide = row_tasks >= block_tasks
        (_transpose_rows if wide else _transpose_blocks)(src, dst)
    else:
        _transpose_strided(src, dst)


@njit(inline="always")
def _scalar_part(s, d, R, C, i0, i1, j0, j1):
    """d[j*R + i] = s[i*C + j] for rows [i0, i1) and columns [j0, j1) of the (R, C) source: the edges no whole
    8x8 tile covers."""
    for i in range(i0, i1):
        for j in range(j0, j1):
            d[j * R + i] = s[i * C + j]


@njit(**JIT)
def _transpose_rows(src, dst):
    """8x8 register tiles (``simd.tile8``), parallel over 8-row strips of ``src``, each read front to back: the
    order for wide sources (rows <= columns; 902 x 3072 floats: 0.35 ms against 0.73 ms for scalar tiles)."""
    R, C = src.shape
    s = src.ravel()  # a view: src is C-contiguous
    d = dst.ravel()
    nbr = R // 8
    nbc = C // 8
    for bi in prange(nbr):
        i0 = bi * 8
        for bj in range(nbc):
            j0 = bj * 8
            tile8(s, i0 * C + j0, C, d, j0 * R + i0, R)
        _scalar_part(s, d, R, C, i0, i0 + 8, nbc * 8, C)  # the last C % 8 columns of this strip
    _scalar_part(s, d, R, C, nbr * 8, R, 0, C)  # the last R % 8 rows


@njit(**JIT)
def _transpose_blocks(src, dst):
    """The same tiles, parallel over strips of 64 ``src`` columns walked in 64 x 64 blocks (so the block's
    destination rows stay in cache): the order for tall sources (3072 x 902 floats: 0.45 ms against 0.63 ms)."""
    R, C = src.shape
    s = src.ravel()
    d = dst.ravel()
    nbr = R // 8
    nbc = C // 8
    strips = (nbc + _STRIP - 1) // _STRIP
    for t in prange(strips):
        bj0 = t * _STRIP
        bj1 = min(nbc, bj0 + _STRIP)
        for bi0 in range(0, nbr, _STRIP):
            for bj in range(bj0, bj1):
                j0 = bj * 8
                for bi in range(bi0, min(nbr, bi0 + _STRIP)):
                    i0 = bi * 8
                    tile8(s, i0 * C + j0, C, d, j0 * R + i0, R)
        _scalar_part(s, d, R, C, nbr * 8, R, bj0 * 8, bj1 * 8)  # the last R % 8 rows of this strip
    _scalar_part(s, d, R, C, 0, R, nbc * 8, C)  # the last C % 8 columns


@njit(**JIT)
def _transpose_row_blocks(src, dst):
    """The same tiles, parallel over blocks of ``_ROW_BLOCK`` 8-row strips of ``src``, each walked column tile by
    column tile, so every destination row gets 512 contiguous bytes at a time: the order for tall, narrow sources
    (a block layer's (C_O*H*W, 64) output), too narrow for ``_transpose_blocks``' column strips to share out.
    Row by row, the destination rows lie so far apart that a strip's tiles into them evict each other:
    16384 x 64 floats took 0.31 ms that way, 0.24 / 0.11 / 0.14 ms in blocks of 64 / 128 / 256 rows."""
    R, C = src.shape
    s = src.ravel()
    d = dst.ravel()
    nbr = R // 8
    nbc = C // 8
    blocks = (nbr + 32 - 1) // 32
    for t in prange(blocks):
        bi0 = t * 32
        bi1 = min(nbr, bi0 + 32)
        for bj in range(nbc):
            j0 = bj * 8
            for bi in range(bi0, bi1):
                i0 = bi * 8
                tile8(s, i0 * C + j0, C, d, j0 * R + i0, R)
        _scalar_part(s, d, R, C, bi0 * 8, bi1 * 8, nbc * 8, C)  # the last C % 8 columns of this block
    _scalar_part(s, d, R, C, nbr * 8, R, 0, C)  # the last R % 8 rows


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


@njit(inline="always")
def _gather_batch_last(s, c0, image, n, B, stage):
    """stage[k*B + b] = s[b*image + c0 + k] for k < n, b < B: one channel's (B, n) slab batch-last, by 8x8 tiles
    (the rest scalar)."""
    nk = n // 8
    nb = B // 8
    for bb in range(nb):
        b0 = bb * 8
        for kb in range(nk):
            tile8(s, b0 * image + c0 + kb * 8, image, stage, kb * 8 * B + b0, B)
    for k in range(n):
        lo = 0 if k >= nk * 8 else nb * 8  # the rows (b) and columns (k) no tile covered
        for b in range(lo, B):
            stage[k * B + b] = s[b * image + c0 + k]


@njit(inline="always")
def _scatter_batch_first(stage, d, c0, image, n, B):
    """The inverse: d[b*image + c0 + k] = stage[k*B + b]."""
    nk = n // 8
    nb = B // 8
    for bb in range(nb):
        b0 = bb * 8
        for kb in range(nk):
            tile8(stage, kb * 8 * B + b0, B, d, b0 * image + c0 + kb * 8, image)
    for k in range(n):
        lo = 0 if k >= nk * 8 else nb * 8
        for b in range(lo, B):
            d[b * image + c0 + k] = stage[k * B + b]


_PARTS = 32  # parallel parts of the channels in the batch-last copies
_CHUNK = 64  # pixels per register-tile transpose at least (several channels of a small plane)


@njit(inline="always")
def _chunks(C, plane):
    """(channels per chunk, chunks, parallel parts) of the batch-last copies. Channel by channel, a plane of fewer
    than 8 pixels has no whole 8x8 tile and runs scalar: on 128x512x2x2 (VGG-19's last block layer) both copies
    took 0.4-0.5 ms against 0.06-0.07 ms in chunks of 16 channels (medians, 2 threads; 4x4: 0.23-0.31 against
    0.15-0.25 ms; level from 8x8 up, where a chunk is one channel). 32 and 128 pixels measured no better."""
    nch = max(1, _CHUNK // max(1, plane))  # an empty plane has nothing to copy
    chunks = (C + nch - 1) // nch
    return nch, chunks, min(chunks, _PARTS)


@njit(inline="always")
def _zero_run(a, start, n):
    """a[start:start + n] = 0 with an unsigned range (a signed one keeps numba's wraparound check: scalar code)."""
    for i in range(np.uint64(n)):
        a[start + i] = 0.0


@njit(**JIT)
def pad_batch_last(src, dst, base, cstride, hp, wp, pt, pl, csum):
    """Write a (B, C, H, W) C-contiguous ``src`` batch-last and zero-framed into the flat ``dst``: channel ``c``'s
    (hp, wp, B) plane starts at ``base + c * cstride``, with ``src[:, c]`` at rows pt.., columns pl.. and zeros in
    the rest of the plane (padding rows and columns, discarded tail columns). One pass instead of torch's frame
    zeroing plus a strided permute copy (2-3x faster on a 8x128x7x7 input): each chunk of channels is transposed
    by register tiles into a small buffer, whose rows are then copied in. When ``csum`` (C,) is not empty it
    receives each channel's sum (accumulated in float64, stored in its own dtype): a conv's bias gradient from the
    same read of dY."""
    B, C, H, W = src.shape
    s = src.ravel()
    plane = H * W
    image = C * plane
    rl = wp * B
    wb = W * B
    summed = csum.shape[0] != 0
    nch, chunks, parts = _chunks(C, plane)
    if hp == H and wp == W and cstride == plane * B:  # no frame, planes back to back: the tiles write dst itself
        for part in prange(parts):
            for ck in range(part * chunks // parts, (part + 1) * chunks // parts):
                c0 = ck * nch
                c1 = min(C, c0 + nch)
                _gather_batch_last(s, c0 * plane, image, (c1 - c0) * plane, B, dst[base + c0 * cstride:])
                if summed:
                    for c in range(c0, c1):
                        acc = 0.0
                        p = np.uint64(base + c * cstride)
                        for i in range(np.uint64(plane * B)):
                            acc += np.float64(dst[p + i])
                        csum[c] = acc
        return
    for part in prange(parts):
        stage = np.empty(nch * plane * B, dtype=src.dtype)  # one per part, not per chunk: allocations add up
        for ck in range(part * chunks // parts, (part + 1) * chunks // parts):
            c0 = ck * nch
            c1 = min(C, c0 + nch)
            _gather_batch_last(s, c0 * plane, image, (c1 - c0) * plane, B, stage)
            for c in range(c0, c1):
                p = base + c * cstride
                so = np.uint64((c - c0) * plane * B)  # unsigned: int64 + uint64 is a float64 in numba
                for r in range(hp):
                    row = np.uint64(p + r * rl)
                    h = r - pt
                    if h < 0 or h >= H:
                        _zero_run(dst, row, rl)
                        continue
                    _zero_run(dst, row, pl * B)
                    o = row + np.uint64(pl * B)
                    sb = so + np.uint64(h * wb)
                    for i in range(np.uint64(wb)):
                        dst[o + i] = stage[sb + i]
                    _zero_run(dst, row + np.uint64((pl + W) * B), rl - (pl + W) * B)
                if summed:
                    acc = 0.0
                    for i in range(np.uint64(plane * B)):
                        acc += np.float64(stage[so + i])
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
    wb = W * B
    nch, chunks, parts = _chunks(C, plane)
    if pt == 0 and pl == 0 and wp == W and cstride == plane * B:  # unpadded planes back to back: no staging
        for part in prange(parts):
            for ck in range(part * chunks // parts, (part + 1) * chunks // parts):
                c0 = ck * nch
                c1 = min(C, c0 + nch)
                _scatter_batch_first(src[base + c0 * cstride:], d, c0 * plane, image, (c1 - c0) * plane, B)
        return
    for part in prange(parts):
        stage = np.empty(nch * plane * B, dtype=dst.dtype)
        for ck in range(part * chunks // parts, (part + 1) * chunks // parts):
            c0 = ck * nch
            c1 = min(C, c0 + nch)
            for c in range(c0, c1):
                p = base + c * cstride + pt * rl + pl * B
                so = (c - c0) * plane * B
                for h in range(H):
                    o = np.uint64(so + h * wb)
                    sb = np.uint64(p + h * rl)
                    for i in range(np.uint64(wb)):
                        stage[o + i] = src[sb + i]
            _scatter_batch_first(stage, d, c0 * plane, image, (c1 - c0) * plane, B)


@njit(**JIT)
def pad_planes(src, dst, base, pstride, hp, wp, pt, pl, frame):
    """Copy every (H, W) plane of a C-contiguous (B, C, H, W) ``src`` into the flat ``dst``: plane ``i`` (image-major)
    at ``base + i * pstride`` as (hp, wp) rows with ``src``'s rows at rows pt.., columns pl... With ``frame`` the rest
    of each (hp, wp) plane is written as zeros in the same pass (a fresh buffer); without it only the interior is
    written (a workspace whose frame is already zero). The over-width counterpart of ``pad_batch_last``: torch's
    frame zeroing plus a strided slice copy took 2.5 ms on a 128x128x16x16 input here."""
    B, C, H, W = src.shape
    s = src.ravel()
    plane = H * W
    for i in prange(B * C):
        d0 = base + i * pstride
        s0 = i * plane
        for r in range(hp):
            row = np.uint64(d0 + r * wp)
            h = r - pt
            if h < 0 or h >= H:
                if frame:
                    _zero_run(dst, row, wp)
                continue
            if frame:
                _zero_run(dst, row, pl)
                _zero_run(dst, row + np.uint64(pl + W), wp - pl - W)
            o = row + np.uint64(pl)
            sr = np.uint64(s0 + h * W)
            for j in range(np.uint64(W)):
                dst[o + j] = s[sr + j]
