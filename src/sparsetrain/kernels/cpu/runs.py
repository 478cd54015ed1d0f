"""The two SparseProp kernels every stride-1 layer reduces to: sparse rows times contiguous runs.

A "run" layout puts the vectorised dimension last and contiguous: for a linear layer it is the
batch (rows of X^T); for a stride-1 convolution on a zero-padded input it is a whole flattened
output plane (paper section 3.3; see ops/conv.py), so every nonzero touches one contiguous stream.

* ``spmm_runs``  y[g, r*Lout + t0 + q] = bias[r] + sum_{p in row r} w[p] * x[g, off[p] + t0 + q]
  for q in [0, n), with w[p] = vals[p] (or vals[vidx[p]]). Serves the forward pass and, on the
  transposed structure, the input gradient. Parallel over (group, tile, row) triples: each writes
  its own output slice, so no thread synchronises with another inside the pass.
* ``sddmm_runs`` dw[p] = sum_g sum_{q<n} gy[g, r*Lout + g0 + q] * x[g, off[p] + q]: the weight gradient
  at the nonzeros only. Parallel over contiguous row blocks (a nonzero belongs to one row).

Both sweep several nonzeros at once (one load/store of the accumulator per four or eight FMAs) and tile the
run so the part of ``x`` a tile touches stays in L2. Inner ranges are unsigned: numba's
negative-index check on signed indices stops LLVM from vectorising. No torch import here.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .simd import tile8

JIT = dict(parallel=True, fastmath=True, cache=True, nogil=True)


@njit(inline="always")
def _value(vals, vidx, p):
    """The weight of nonzero ``p``: ``vals[p]``, or ``vals[vidx[p]]`` when the structure is a permutation of the
    values' order (the transposed structure of the input-gradient pass reads the weights in place, no gather)."""
    if vidx.shape[0] == 0:
        return vals[p]
    return vals[vidx[p]]


@njit(**JIT)
def spmm_runs(x, ptr, off, vals, vidx, bias, y, t0, n, tile):
    """Sparse rows times runs; see the module docstring. ``x`` (G, Lx), ``y`` (G, R*Lout); nonzero ``p`` has weight
    ``vals[vidx[p]]``, or ``vals[p]`` when ``vidx`` is empty. Eight nonzeros per sweep first (half the accumulator
    traffic of four; 2-14% faster on the 7x7 conv's runs), then four, then one."""
    G = x.shape[0]
    R = ptr.shape[0] - 1
    Lout = y.shape[1] // R if R else 0
    ntiles = (n + tile - 1) // tile
    for task in prange(G * ntiles * R):
        g = task // (ntiles * R)
        rest = task - g * ntiles * R
        bt = rest // R
        r = rest - bt * R
        q0 = t0 + bt * tile
        m = np.uint64(min(tile, n - bt * tile))
        xr = x[g]
        yr = y[g]
        yb = np.uint64(r * Lout + q0)
        bo = bias[r]
        for q in range(m):
            yr[yb + q] = bo
        p = ptr[r]
        end = ptr[r + 1]
        while p + 8 <= end:
            o0 = np.uint64(off[p] + q0)
            o1 = np.uint64(off[p + 1] + q0)
            o2 = np.uint64(off[p + 2] + q0)
            o3 = np.uint64(off[p + 3] + q0)
            o4 = np.uint64(off[p + 4] + q0)
            o5 = np.uint64(off[p + 5] + q0)
            o6 = np.uint64(off[p + 6] + q0)
            o7 = np.uint64(off[p + 7] + q0)
            w0 = _value(vals, vidx, p)
            w1 = _value(vals, vidx, p + 1)
            w2 = _value(vals, vidx, p + 2)
            w3 = _value(vals, vidx, p + 3)
            w4 = _value(vals, vidx, p + 4)
            w5 = _value(vals, vidx, p + 5)
            w6 = _value(vals, vidx, p + 6)
            w7 = _value(vals, vidx, p + 7)
            for q in range(m):
                yr[yb + q] += (((w0 * xr[o0 + q] + w1 * xr[o1 + q]) + (w2 * xr[o2 + q] + w3 * xr[o3 + q]))
                               + ((w4 * xr[o4 + q] + w5 * xr[o5 + q]) + (w6 * xr[o6 + q] + w7 * xr[o7 + q])))
            p += 8
        if p + 4 <= end:
            o0 = np.uint64(off[p] + q0)
            o1 = np.uint64(off[p + 1] + q0)
            o2 = np.uint64(off[p + 2] + q0)
            o3 = np.uint64(off[p + 3] + q0)
            w0 = _value(vals, vidx, p)
            w1 = _value(vals, vidx, p + 1)
            w2 = _value(vals, vidx, p + 2)
            w3 = _value(vals, vidx, p + 3)
            for q in range(m):
                yr[yb + q] += w0 * xr[o0 + q] + w1 * xr[o1 + q] + w2 * xr[o2 + q] + w3 * xr[o3 + q]
            p += 4
        while p < end:
            o0 = np.uint64(off[p] + q0)
            w0 = _value(vals, vidx, p)
            for q in range(m):
                yr[yb + q] += w0 * xr[o0 + q]
            p += 1


@njit(**JIT)
def sddmm_runs(x, gy, ptr, off, dw, g0, n, tile, parts):
    """Weight gradient at the nonzeros; see the module docstring (row r's run starts at
    ``r*Lout + g0`` in ``gy``). ``dw`` (nnz,) is overwritten."""
    G = x.shape[0]
    R = ptr.shape[0] - 1
    Lout = gy.shape[1] // R if R else 0
    ntiles = (n + tile - 1) // tile
    for part in prange(parts):
        r_lo = part * R // parts
        r_hi = (part + 1) * R // parts
        for p in range(ptr[r_lo], ptr[r_hi]):
            dw[p] = 0.0
        for g in range(G):
            xr = x[g]
            gr = gy[g]
            for bt in range(ntiles):
                q0 = bt * tile
                m = np.uint64(min(tile, n - q0))
                for r in range(r_lo, r_hi):
                    gb = np.uint64(r * Lout + g0 + q0)
                    p = ptr[r]
                    end = ptr[r + 1]
                    while p + 4 <= end:
                        o0 = np.uint64(off[p] + q0)
                        o1 = np.uint64(off[p + 1] + q0)
                        o2 = np.uint64(off[p + 2] + q0)
                        o3 = np.uint64(off[p + 3] + q0)
                        a0 = dw[p]  # carries the dtype and the sum over earlier tiles
                        a1 = dw[p + 1]
                        a2 = dw[p + 2]
                        a3 = dw[p + 3]
                        for q in range(m):
                            gv = gr[gb + q]
                            a0 += gv * xr[o0 + q]
                            a1 += gv * xr[o1 + q]
                            a2 += gv * xr[o2 + q]
                            a3 += gv * xr[o3 + q]
                        dw[p] = a0
                        dw[p + 1] = a1
                        dw[p + 2] = a2
                        dw[p + 3] = a3
                        p += 4
                    while p < end:
                        o0 = np.uint64(off[p] + q0)
                        a0 = dw[p]
                        for q in range(m):
                            a0 += gr[gb + q] * xr[o0 + q]
                        dw[p] = a0
                        p += 1


@njit(**JIT)
def spmm_sddmm_runs(src, ptr, off, vals, vidx, xs, perm, y, dw, dw_part, t0, n, tile, by_group):
    """Input and weight gradient in one pass over the transposed structure (SparseProp's Algorithm 1, race free).

    For every structure row r (an input channel) and nonzero p of it, over q in [0, n):
    ``y[g, r*Lout + t0 + q] = sum_p w[p] * src[g, off[p] + t0 + q]`` (as ``spmm_runs``) and, from the same loads of
    ``src``, ``dw[perm[p]] = sum_g sum_q src[g, off[p] + t0 + q] * xs[g, r*Lout + t0 + q]``. ``xs`` is the layer
    input in ``y``'s layout: wherever a product is not part of the weight gradient, one factor is a zero of the
    padded layout, exactly as in ``sddmm_runs``.

    Without ``by_group`` the tasks are the rows, each owning its nonzeros' gradient (``dw_part`` then has one row).
    With ``by_group`` the tasks are the P = ``dw_part.shape[0]`` parts of the groups, ``[k*G//P, (k+1)*G//P)``,
    each running every row over its own groups (so one group's ``src`` is reused from cache by all rows) and
    summing into row k of ``dw_part`` (P, nnz); the rows are
    added up afterwards. Nothing is written by two tasks, and the result does not depend on the thread count."""
    G = src.shape[0]
    R = ptr.shape[0] - 1
    P = dw_part.shape[0]
    Lout = y.shape[1] // R if R else 0
    ntiles = (n + tile - 1) // tile
    tasks = P if by_group else R
    for task_ in prange(tasks):
        task = np.int64(task_)  # prange's index may be unsigned: keep the arithmetic below in int64
        part, r_lo, r_hi = (task, np.int64(0), np.int64(R)) if by_group else (np.int64(0), task, task + 1)
        g_lo = part * G // P
        g_hi = (part + 1) * G // P
        acc = dw_part[part]
        for p in range(ptr[r_lo], ptr[r_hi]):
            acc[p] = 0.0
        for g in range(g_lo, g_hi):
            sr = src[g]
            xr = xs[g]
            yr = y[g]
            for bt in range(ntiles):
                q0 = t0 + bt * tile
                m = np.uint64(min(tile, n - bt * tile))
                for r in range(r_lo, r_hi):
                    _fused_row(sr, xr, yr, ptr, off, vals, vidx, acc, np.uint64(r * Lout + q0), q0, m, r)
    for p in prange(perm.shape[0]):
        total = dw_part[0, p]
        for k in range(1, P):
            total += dw_part[k, p]
        dw[perm[p]] = total


@njit(inline="always")
def _fused_row(sr, xr, yr, ptr, off, vals, vidx, acc, yb, q0, m, r):
    """One row's run of ``spmm_sddmm_runs``: y = sum of the row's weighted streams, acc[p] += stream . x."""
    for q in range(m):
        yr[yb + q] = 0.0
    p = ptr[r]
    end = ptr[r + 1]
    while p + 4 <= end:
        o0 = np.uint64(off[p] + q0)
        o1 = np.uint64(off[p + 1] + q0)
        o2 = np.uint64(off[p + 2] + q0)
        o3 = np.uint64(off[p + 3] + q0)
        w0 = _value(vals, vidx, p)
        w1 = _value(vals, vidx, p + 1)
        w2 = _value(vals, vidx, p + 2)
        w3 = _value(vals, vidx, p + 3)
        a0 = acc[p]
        a1 = acc[p + 1]
        a2 = acc[p + 2]
        a3 = acc[p + 3]
        for q in range(m):
            s0 = sr[o0 + q]
            s1 = sr[o1 + q]
            s2 = sr[o2 + q]
            s3 = sr[o3 + q]
            xv = xr[yb + q]
            yr[yb + q] += (w0 * s0 + w1 * s1) + (w2 * s2 + w3 * s3)
            a0 += xv * s0
            a1 += xv * s1
            a2 += xv * s2
            a3 += xv * s3
        acc[p] = a0
        acc[p + 1] = a1
        acc[p + 2] = a2
        acc[p + 3] = a3
        p += 4
    while p < end:
        o0 = np.uint64(off[p] + q0)
        w0 = _value(vals, vidx, p)
        a0 = acc[p]
        for q in range(m):
            s0 = sr[o0 + q]
            yr[yb + q] += w0 * s0
            a0 += xr[yb + q] * s0
        acc[p] = a0
        p += 1


# structure rows per task of spmm_sddmm_rows: 128 bytes of every output row, so two tasks share at most the cache line
# at their common block edge (alternating A/B, 2 threads: 16 gained less on 3072->768 B=902, 64 about the same)
_OUT_ROWS = 32


@njit(**JIT)
def spmm_sddmm_rows(src, ptr, off, vals, vidx, xs, perm, out, dw, dw_part, n, tile):
    """``spmm_sddmm_runs`` for one group (a linear layer's dX and dW), writing the input gradient transposed:
    ``out`` (n, R) row-major, ``out[q, r] = sum_p w[p] * src[0, off[p] + q]``, where the run kernel writes row r of
    (R, n). Each task takes ``_OUT_ROWS`` structure rows into a private buffer (their runs, as in the run kernel)
    and writes them into ``out`` with 8x8 register-tile transposes, so a leaf input's gradient needs no separate
    transpose pass through memory. ``xs`` (1, R*n): the layer input, batch-contiguous; ``dw_part`` (1, nnz)."""
    R = ptr.shape[0] - 1
    sr = src[0]
    xr = xs[0]
    acc = dw_part[0]
    d = out.ravel()
    ntiles = (n + tile - 1) // tile
    nb = n // 8
    for blk in prange((R + _OUT_ROWS - 1) // _OUT_ROWS):
        r0 = blk * _OUT_ROWS
        nr = min(_OUT_ROWS, R - r0)
        buf = np.empty(_OUT_ROWS * n, out.dtype)
        for p in range(ptr[r0], ptr[r0 + nr]):
            acc[p] = 0.0
        for i in range(nr):
            r = r0 + i
            for bt in range(ntiles):
                q0 = bt * tile
                _fused_row(sr, xr[r * n:], buf[i * n:], ptr, off, vals, vidx, acc, np.uint64(q0), q0,
                           np.uint64(min(tile, n - q0)), r)
        if nr == _OUT_ROWS:
            for jb in range(nb):
                for ib in range(_OUT_ROWS // 8):
                    tile8(buf, ib * 8 * n + jb * 8, n, d, jb * 8 * R + r0 + ib * 8, R)
            for q in range(nb * 8, n):
                for i in range(nr):
                    d[q * R + r0 + i] = buf[i * n + q]
        else:
            for q in range(n):
                for i in range(nr):
                    d[q * R + r0 + i] = buf[i * n + q]
    for p in prange(perm.shape[0]):
        dw[perm[p]] = acc[p]
