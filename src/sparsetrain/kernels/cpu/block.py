"""Fused gather/scatter kernels of the HRBP block convolution (numba; no torch import).

Block ``g`` sees an implicit-GEMM column matrix ``cols[g] (c*p, N)``, N = B*OH*OW, whose row ``j*p + q`` is input
channel ``chans[g, j]`` shifted by kernel cell ``q`` (zero outside the input). The op multiplies it by the block
values with one batched GEMM (torch.bmm) and these kernels move data in and out without an ``index_select``
pass and without materialising the full im2col matrix:

* ``gather_columns``  x (B, C, H, W) -> cols (t, c*p, N): parallel over the t*c*p rows, contiguous along OW.
* ``scatter_rows``    ybuf (t, R, N) -> y (B, C_O, OH*OW) + bias: each output channel written once.
* ``gather_rows``     dy (B, C_O, OH*OW) -> (t, R, N): the inverse, for the backward GEMMs.
* ``col2im_add``      dcols (t, c*p, N) -> dx (B, C, H, W): parallel over (image, input channel), each thread
  summing every block row that reads that channel, so no two threads write the same element.

The ``_bl`` variants do the same on batch-last activations (C, H, W, B) with columns ordered (oh, ow, b), so
every copy is a run of B elements: on small feature maps (8x8 and below) the over-width rows are too short to
vectorise, the batch runs are not. Chunks there are ranges of output rows.

Inner loops run over unsigned ranges: numba's wraparound check on signed indices blocks vectorisation.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

JIT = dict(parallel=True, fastmath=True, cache=True, nogil=True)


@njit(inline="always")
def _ow_range(OW, sw, off, W):
    """[lo, hi) of output columns whose input column ow*sw + off lies in [0, W)."""
    lo = 0
    if off < 0:
        lo = (-off + sw - 1) // sw
    hi = 0
    if W - off > 0:
        hi = (W - off + sw - 1) // sw
    if hi > OW:
        hi = OW
    if lo > hi:
        lo = hi
    return lo, hi


@njit(inline="always")
def _row_cell(item, cells, ck, Kw):
    """Block row ``item`` = g*ck + k (ck = c*p rows per block): its group g, row k and kernel cell (kh, kw)."""
    g = item // ck
    k = item - g * ck
    cell = cells[g, k % cells.shape[1]]
    kh = cell // Kw
    return g, k, kh, cell - kh * Kw


@njit(inline="always")
def _zero(dst, a, b):
    for q in range(np.uint64(a), np.uint64(b)):
        dst[q] = 0.0


@njit(inline="always")
def _same_span(OH, OW, H, kh, dh, pt, lo, hi):
    """For stride 1 with W == OW, input index = output index + shift inside one image plane, so the valid part
    of a cell's column is one contiguous span [start, end) (plus wrapped columns between rows, to be zeroed).
    Returns (first valid row, last valid row + 1, start, end); rows empty when start >= end."""
    oh_lo = max(0, pt - kh * dh)
    oh_hi = min(OH, H + pt - kh * dh)
    if oh_hi <= oh_lo or hi <= lo:
        return 0, 0, 0, 0
    return oh_lo, oh_hi, oh_lo * OW + lo, (oh_hi - 1) * OW + hi


@njit(**JIT)
def gather_columns(x, chans, cells, Kw, sh, sw, pt, pl, dh, dw, OH, OW, cols):
    """cols[g, j*p + q, (b*OH + oh)*OW + ow] = x[b, chans[g, j], oh*sh + kh*dh - pt, ow*sw + kw*dw - pl]."""
    B, _, H, W = x.shape
    t, c = chans.shape
    p = cells.shape[1]
    for task in prange(t * c * p):
        g, k, kh, kw = _row_cell(task, cells, c * p, Kw)
        ci = chans[g, k // p]
        off = kw * dw - pl
        lo, hi = _ow_range(OW, sw, off, W)
        dst = cols[g, k]
        if sh == 1 and sw == 1 and W == OW:  # 'same'-style geometry: one long copy per image and cell
            oh_lo, oh_hi, start, end = _same_span(OH, OW, H, kh, dh, pt, lo, hi)
            shift = (kh * dh - pt) * W + off
            for b in range(B):
                src = x[b, ci].reshape(H * W)
                base = b * OH * OW
                if end <= start:
                    _zero(dst, base, base + OH * OW)
                    continue
                _zero(dst, base, base + start)
                d0 = np.uint64(base + start)
                s0 = np.uint64(start + shift)
                for q in range(np.uint64(end - start)):
                    dst[d0 + q] = src[s0 + q]
                for oh in range(oh_lo, oh_hi - 1):  # columns that wrapped around between rows
                    _zero(dst, base + oh * OW + hi, base + (oh + 1) * OW + lo)
                _zero(dst, base + end, base + OH * OW)
            continue
        for b in range(B):
            src = x[b, ci]
            for oh in range(OH):
                base = np.uint64((b * OH + oh) * OW)
                ih = oh * sh + kh * dh - pt
                if ih < 0 or ih >= H:
                    for ow in range(np.uint64(OW)):
                        dst[base + ow] = 0.0
                    continue
                row = src[ih]
                for ow in range(np.uint64(lo)):
                    dst[base + ow] = 0.0
                if sw == 1:
                    s0 = np.uint64(lo + off)
                    for q in range(np.uint64(hi - lo)):
                        dst[base + np.uint64(lo) + q] = row[s0 + q]
                else:
                    for ow in range(lo, hi):
                        dst[base + np.uint64(ow)] = row[ow * sw + off]
                for ow in range(np.uint64(hi), np.uint64(OW)):
                    dst[base + ow] = 0.0


@njit(**JIT)
def scatter_rows(ybuf, rows, bias, y):
    """y[b, rows[g, r], :] = ybuf[g, r, b*L:(b+1)*L] + bias[rows[g, r]]  (L = OH*OW)."""
    t, R = rows.shape
    B, _, L = y.shape
    for task in prange(t * R * B):
        gr = task // B
        b = task - gr * B
        g = gr // R
        r = gr - g * R
        o = rows[g, r]
        src = ybuf[g, r]
        dst = y[b, o]
        bo = bias[o]
        base = np.uint64(b * L)
        for q in range(np.uint64(L)):
            dst[q] = src[base + q] + bo


@njit(**JIT)
def gather_rows(dy, rows, out):
    """out[g, r, b*L:(b+1)*L] = dy[b, rows[g, r], :]."""
    t, R = rows.shape
    B, _, L = dy.shape
    for task in prange(t * R * B):
        gr = task // B
        b = task - gr * B
        g = gr // R
        r = gr - g * R
        src = dy[b, rows[g, r]]
        dst = out[g, r]
        base = np.uint64(b * L)
        for q in range(np.uint64(L)):
            dst[base + q] = src[q]


@njit(**JIT)
def col2im_add(dcols, ch_ptr, ch_items, cells, Kw, sh, sw, pt, pl, dh, dw, OH, OW, dx):
    """dx[b, ci] = sum over block rows (g, k) reading channel ci of their shifted dcols plane.

    ``ch_items[ch_ptr[ci]:ch_ptr[ci+1]]`` lists those rows as g*(c*p) + k. Each task zeroes its own plane
    first, so ``dx`` may be uninitialised and channels no block reads come out zero."""
    B, C, H, W = dx.shape
    ck = dcols.shape[1]
    for task in prange(B * C):
        b = task // C
        ci = task - b * C
        out = dx[b, ci]
        for ih in range(H):
            plane_row = out[ih]
            for iw in range(np.uint64(W)):
                plane_row[iw] = 0.0
        for it in range(ch_ptr[ci], ch_ptr[ci + 1]):
            g, k, kh, kw = _row_cell(ch_items[it], cells, ck, Kw)
            off = kw * dw - pl
            lo, hi = _ow_range(OW, sw, off, W)
            src = dcols[g, k]
            if sh == 1 and sw == 1 and W == OW:  # one contiguous span per image and cell (see gather_columns)
                oh_lo, oh_hi, start, end = _same_span(OH, OW, H, kh, dh, pt, lo, hi)
                if end <= start:
                    continue
                base = b * OH * OW
                for oh in range(oh_lo, oh_hi - 1):  # wrapped columns must not land in the neighbour row:
                    _zero(src, base + oh * OW + hi, base + (oh + 1) * OW + lo)  # this (g, k, b) span is ours
                flat = out.reshape(H * W)
                d0 = np.uint64(start + (kh * dh - pt) * W + off)
                s0 = np.uint64(base + start)
                for q in range(np.uint64(end - start)):
                    flat[d0 + q] += src[s0 + q]
                continue
            for oh in range(OH):
                ih = oh * sh + kh * dh - pt
                if ih < 0 or ih >= H:
                    continue
                row = out[ih]
                base = np.uint64((b * OH + oh) * OW)
                if sw == 1:
                    s0 = np.uint64(lo + off)
                    for q in range(np.uint64(hi - lo)):
                        row[s0 + q] += src[base + np.uint64(lo) + q]
                else:
                    for ow in range(lo, hi):
                        row[ow * sw + off] += src[base + np.uint64(ow)]


# --- batch-last layout: activations (C, H, W, B), columns ordered (oh, ow, b); every copy is a run of B ---------

@njit(**JIT)
def gather_columns_bl(xT, chans, cells, Kw, sh, sw, pt, pl, dh, dw, OH, OW, oh0, oh1, cols):
    """cols[g, j*p + q, ((oh - oh0)*OW + ow)*B + b] = xT[chans[g, j], ih, iw, b] (zero outside the input)."""
    _, H, W, B = xT.shape
    t, c = chans.shape
    p = cells.shape[1]
    nb = np.uint64(B)
    for task in prange(t * c * p):
        g, k, kh, kw = _row_cell(task, cells, c * p, Kw)
        ci = chans[g, k // p]
        dst = cols[g, k]
        src = xT[ci]
        for oh in range(oh0, oh1):
            ih = oh * sh + kh * dh - pt
            for ow in range(OW):
                base = np.uint64(((oh - oh0) * OW + ow) * B)
                iw = ow * sw + kw * dw - pl
                if ih < 0 or ih >= H or iw < 0 or iw >= W:
                    for b in range(nb):
                        dst[base + b] = 0.0
                else:
                    run = src[ih, iw]
                    for b in range(nb):
                        dst[base + b] = run[b]


@njit(**JIT)
def scatter_rows_bl(ybuf, rows, bias, yT, start):
    """yT[rows[g, r], start:start+n] = ybuf[g, r, :n] + bias[rows[g, r]]  (yT is (C_O, L*B))."""
    t, R = rows.shape
    n = np.uint64(ybuf.shape[2])
    s = np.uint64(start)
    for task in prange(t * R):
        g = task // R
        r = task - g * R
        o = rows[g, r]
        src = ybuf[g, r]
        dst = yT[o]
        bo = bias[o]
        for q in range(n):
            dst[s + q] = src[q] + bo


@njit(**JIT)
def gather_rows_bl(gyT, rows, start, out):
    """out[g, r, :n] = gyT[rows[g, r], start:start+n]."""
    t, R = rows.shape
    n = np.uint64(out.shape[2])
    s = np.uint64(start)
    for task in prange(t * R):
        g = task // R
        r = task - g * R
        src = gyT[rows[g, r]]
        dst = out[g, r]
        for q in range(n):
            dst[q] = src[s + q]


@njit(**JIT)
def col2im_add_bl(dcols, ch_ptr, ch_items, cells, Kw, sh, sw, pt, pl, dh, dw, OH, OW, oh0, oh1, dxT):
    """dxT[ci, ih, iw, :] += dcols[g, k, ((oh - oh0)*OW + ow)*B : +B] for every block row (g, k) reading ci;
    parallel over input channels (race-free). ``dxT`` (C, H, W, B) accumulates across chunks: zero it first."""
    C, H, W, B = dxT.shape
    ck = dcols.shape[1]
    nb = np.uint64(B)
    for ci in prange(C):
        plane = dxT[ci]
        for it in range(ch_ptr[ci], ch_ptr[ci + 1]):
            g, k, kh, kw = _row_cell(ch_items[it], cells, ck, Kw)
            src = dcols[g, k]
            for oh in range(oh0, oh1):
                ih = oh * sh + kh * dh - pt
                if ih < 0 or ih >= H:
                    continue
                for ow in range(OW):
                    iw = ow * sw + kw * dw - pl
                    if iw < 0 or iw >= W:
                        continue
                    base = np.uint64(((oh - oh0) * OW + ow) * B)
                    run = plane[ih, iw]
                    for b in range(nb):
                        run[b] += src[base + b]
