"""HRBP block convolution as implicit GEMM on padded runs (stride 1): no column matrix at all (numba; no torch).

As in SparseProp's run layout (``runs.py``), block column ``k`` of group ``g`` (input channel ``chans[g, k // p]`` at
kernel cell ``cells[g, k % p]``) is a contiguous stream of the zero-padded input starting at ``off[g, k]``. What
HRBP adds is that all R rows of a block read the *same* streams, so these kernels take the rows of a block two at a
time: every input value loaded feeds two outputs (forward) and every gradient run two weight-gradient sums (dW).
That halves the loads per multiply-add of the unstructured kernels, which is the CPU form of the GPU kernels'
register tiling. The input gradient has no shared streams (each input channel is read by different groups at
different shifts) and runs on SparseProp's ``spmm_runs`` over the transposed structure.

* ``block_spmm_runs``   y[g_img, rows[g, r]*Lout + t0 + q] = bias + sum_k vals[g, r, k] * x[g_img, off[g, k] + t0 + q]
* ``block_sddmm_runs``  dw[g, r, k] = sum_img sum_q gy[img, rows[g, r]*Lout + g0 + q] * x[img, off[g, k] + q]

Rows of a block are paired (2i, 2i+1); an odd last row is paired with itself, with zero weights for the twin in the
forward pass (the twin adds nothing) and an identical recomputation in dW (the same value is stored twice).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .runs import JIT


@njit(inline="always")
def _streams4(xr, og, k, q0, m):
    """The four input streams of block columns k..k+3, each ``m`` long from run position ``q0``."""
    return (xr[og[k] + q0:og[k] + q0 + m], xr[og[k + 1] + q0:og[k + 1] + q0 + m],
            xr[og[k + 2] + q0:og[k + 2] + q0 + m], xr[og[k + 3] + q0:og[k + 3] + q0 + m])


@njit(**JIT)
def block_spmm_runs(x, off, vals, rows, bias, y, t0, n, tile):
    """Forward over padded runs; ``x`` (G, Lx), ``y`` (G, C_O*Lout), ``vals`` (t, R, K), ``off`` (t, K)."""
    G = x.shape[0]
    t, R, K = vals.shape
    Lout = y.shape[1] // (t * R)
    ntiles = (n + tile - 1) // tile
    npairs = (R + 1) // 2
    zeros = np.zeros(K, dtype=vals.dtype)
    for task in prange(G * ntiles * t * npairs):
        gi = task // (ntiles * t * npairs)
        rest = task - gi * (ntiles * t * npairs)
        bt = rest // (t * npairs)
        rest = rest - bt * (t * npairs)
        grp = rest // npairs
        ia = 2 * (rest - grp * npairs)
        ib = min(ia + 1, R - 1)
        ra = rows[grp, ia]
        rb = rows[grp, ib]
        q0 = t0 + bt * tile
        m = min(tile, n - bt * tile)
        xr = x[gi]
        ya = y[gi, ra * Lout + q0:ra * Lout + q0 + m]
        yb = y[gi, rb * Lout + q0:rb * Lout + q0 + m]
        va = vals[grp, ia]
        vb = vals[grp, ib] if ib != ia else zeros
        ba = bias[ra]
        bb = bias[rb]
        for q in range(np.uint64(m)):
            ya[q] = ba
            yb[q] = bb
        og = off[grp]
        k = 0
        while k + 4 <= K:
            x0, x1, x2, x3 = _streams4(xr, og, k, q0, m)
            a0, a1, a2, a3 = va[k], va[k + 1], va[k + 2], va[k + 3]
            b0, b1, b2, b3 = vb[k], vb[k + 1], vb[k + 2], vb[k + 3]
            for q in range(np.uint64(m)):
                u0, u1, u2, u3 = x0[q], x1[q], x2[q], x3[q]
                ya[q] += a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3
                yb[q] += b0 * u0 + b1 * u1 + b2 * u2 + b3 * u3
            k += 4
        while k < K:
            x0 = xr[og[k] + q0:og[k] + q0 + m]
            a0, b0 = va[k], vb[k]
            for q in range(np.uint64(m)):
                u0 = x0[q]
                ya[q] += a0 * u0
                yb[q] += b0 * u0
            k += 1


@njit(**JIT)
def block_sddmm_runs(x, gy, off, rows, dw, g0, n, tile):
    """Weight gradient of the blocks (see module docstring); ``dw`` (t, R, K) is overwritten. Parallel over row pairs:
    each task owns its two rows of ``dw``, so no thread waits for another."""
    G = x.shape[0]
    t, R, K = dw.shape
    Lout = gy.shape[1] // (t * R)
    ntiles = (n + tile - 1) // tile
    npairs = (R + 1) // 2
    for task in prange(t * npairs):
        grp = task // npairs
        ia = 2 * (task - grp * npairs)
        ib = min(ia + 1, R - 1)
        ra = rows[grp, ia]
        rb = rows[grp, ib]
        da = dw[grp, ia]
        db = dw[grp, ib]
        for k in range(K):
            da[k] = 0.0
            db[k] = 0.0
        og = off[grp]
        for gi in range(G):
            xr = x[gi]
            for bt in range(ntiles):
                q0 = bt * tile
                m = min(tile, n - q0)
                ga = gy[gi, ra * Lout + g0 + q0:ra * Lout + g0 + q0 + m]
                gb = gy[gi, rb * Lout + g0 + q0:rb * Lout + g0 + q0 + m]
                k = 0
                while k + 4 <= K:
                    x0, x1, x2, x3 = _streams4(xr, og, k, q0, m)
                    a0, a1, a2, a3 = da[k], da[k + 1], da[k + 2], da[k + 3]
                    b0, b1, b2, b3 = db[k], db[k + 1], db[k + 2], db[k + 3]
                    for q in range(np.uint64(m)):
                        u, v = ga[q], gb[q]
                        w0, w1, w2, w3 = x0[q], x1[q], x2[q], x3[q]
                        a0 += u * w0
                        a1 += u * w1
                        a2 += u * w2
                        a3 += u * w3
                        b0 += v * w0
                        b1 += v * w1
                        b2 += v * w2
                        b3 += v * w3
                    da[k], da[k + 1], da[k + 2], da[k + 3] = a0, a1, a2, a3
                    db[k], db[k + 1], db[k + 2], db[k + 3] = b0, b1, b2, b3
                    k += 4
                while k < K:
                    x0 = xr[og[k] + q0:og[k] + q0 + m]
                    a0, b0 = da[k], db[k]
                    for q in range(np.uint64(m)):
                        a0 += ga[q] * x0[q]
                        b0 += gb[q] * x0[q]
                    da[k], db[k] = a0, b0
                    k += 1
