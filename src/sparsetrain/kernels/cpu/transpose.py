"""Data movement kernels. A blocked parallel 2-D transpose: torch's strided copy of a large transpose runs far
below memory bandwidth here (13 ms for 3072 x 902 floats), and every linear pass needs one. A parallel gather."""
from __future__ import annotations

from numba import njit, prange

from .runs import JIT

_BLOCK = 8  # measured: 3 ms for 902 x 3072 floats vs 9 ms with 32 (cache-set conflicts)


@njit(**JIT)
def transpose_into(src, dst):
    """dst[j, i] = src[i, j]; ``src`` may have any strides, ``dst`` is (cols, rows)."""
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
