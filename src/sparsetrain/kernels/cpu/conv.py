"""SparseProp conv2d kernels (paper Algorithm 2) over the compact ConvCSR format.

Two layouts, as in the paper:

* ``*_bl`` (batch-last): activations are (C, H, W, B). For unit width stride a whole output row
  ``(ow, b)`` is one contiguous run, so vectors stay full even on 7x7 maps. Parallel over output
  channels; the input gradient is accumulated in one private buffer per thread (summed by the
  caller), so no two threads write one address.
* ``*_ow`` (over output width): activations stay (B, C, H, W) and the vector runs along the width.
  Parallel over samples (forward: over (sample, output channel)); the weight gradient is
  accumulated in one private row per thread.

ConvCSR: nonzeros of output channel ``oc`` are ``och[oc] + ich[oc, ic] .. och[oc] + ich[oc, ic+1]``
for input channel ``ic``, with kernel coordinates ``kh``/``kw`` and values ``vals``.
Geometry is passed as ``geo = (stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups)``;
with groups, weight input channel ``ic`` of output channel ``oc`` reads activation channel
``(oc // (OC // groups)) * Cg + ic`` where ``Cg = ich.shape[1] - 1``.
All index arithmetic inside the innermost loops is unsigned so LLVM can vectorise it.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .runs import JIT


@njit(inline="always")
def _valid(k, dil, pad, stride, n_in, n_out):
    """Output range [lo, hi) whose input coordinate o*stride - pad + k*dil lies in [0, n_in)."""
    off = k * dil - pad
    # smallest o with o*stride + off >= 0
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    # largest o with o*stride + off <= n_in - 1
    top = n_in - 1 - off
    if top < 0:
        return 0, 0
    hi = min(n_out, top // stride + 1)
    if hi < lo:
        hi = lo
    return lo, hi


@njit(**JIT)
def conv_forward_bl(x, och, ich, kh, kw, vals, bias, y, geo):
    """Batch-last forward: x (C, H, W, B) -> y (OC, OH, OW, B)."""
    C, H, W, B = x.shape
    Cg = ich.shape[1] - 1
    OC, OH, OW, _ = y.shape
    sh, sw, ph, pw, dh, dw, groups = geo
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    plane = OH * OW * B
    for oc in prange(OC):
        ybase = oc * plane
        bo = bias[oc]
        for q in range(np.uint64(ybase), np.uint64(ybase + plane)):
            yf[q] = bo
        base = och[oc]
        c0 = (oc // (OC // groups)) * Cg
        for ic in range(Cg):
            s = base + ich[oc, ic]
            e = base + ich[oc, ic + 1]
            for p in range(s, e):
                w = vals[p]
                oh0, oh1 = _valid(kh[p], dh, ph, sh, H, OH)
                ow0, ow1 = _valid(kw[p], dw, pw, sw, W, OW)
                if ow1 <= ow0:
                    continue
                for oh in range(oh0, oh1):
                    ih = oh * sh - ph + kh[p] * dh
                    yrow = ybase + (oh * OW + ow0) * B
                    xrow = (((c0 + ic) * H + ih) * W) * B
                    if sw == 1:
                        ux = np.uint64(xrow + (ow0 - pw + kw[p] * dw) * B)
                        uy = np.uint64(yrow)
                        for q in range(np.uint64((ow1 - ow0) * B)):
                            yf[uy + q] += w * xf[ux + q]
                    else:
                        for ow in range(ow0, ow1):
                            ux = np.uint64(xrow + (ow * sw - pw + kw[p] * dw) * B)
                            uy = np.uint64(yrow + (ow - ow0) * B)
                            for q in range(np.uint64(B)):
                                yf[uy + q] += w * xf[ux + q]


@njit(**JIT)
def conv_backward_bl(x, dy, och, ich, kh, kw, vals, dx_part, dw_vals, geo):
    """Batch-last backward: dx_part (P, C*H*W*B) private input-gradient buffers; dW at nonzeros."""
    C, H, W, B = x.shape
    Cg = ich.shape[1] - 1
    OC, OH, OW, _ = dy.shape
    sh, sw, ph, pw, dh, dw_, groups = geo
    P = dx_part.shape[0]
    xf = x.reshape(-1)
    gf = dy.reshape(-1)
    plane = OH * OW * B
    for part in prange(P):
        dxf = dx_part[part]
        for q in range(np.uint64(dxf.shape[0])):
            dxf[q] = 0.0
        for oc in range(part * OC // P, (part + 1) * OC // P):
            gbase = oc * plane
            base = och[oc]
            c0 = (oc // (OC // groups)) * Cg
            for ic in range(Cg):
                s = base + ich[oc, ic]
                e = base + ich[oc, ic + 1]
                for p in range(s, e):
                    w = vals[p]
                    acc = w - w  # zero of the values' dtype
                    oh0, oh1 = _valid(kh[p], dh, ph, sh, H, OH)
                    ow0, ow1 = _valid(kw[p], dw_, pw, sw, W, OW)
                    if ow1 > ow0:
                        for oh in range(oh0, oh1):
                            ih = oh * sh - ph + kh[p] * dh
                            grow = gbase + (oh * OW + ow0) * B
                            xrow = (((c0 + ic) * H + ih) * W) * B
                            if sw == 1:
                                ux = np.uint64(xrow + (ow0 - pw + kw[p] * dw_) * B)
                                ug = np.uint64(grow)
                                for q in range(np.uint64((ow1 - ow0) * B)):
                                    g = gf[ug + q]
                                    acc += g * xf[ux + q]
                                    dxf[ux + q] += w * g
                            else:
                                for ow in range(ow0, ow1):
                                    ux = np.uint64(xrow + (ow * sw - pw + kw[p] * dw_) * B)
                                    ug = np.uint64(grow + (ow - ow0) * B)
                                    for q in range(np.uint64(B)):
                                        g = gf[ug + q]
                                        acc += g * xf[ux + q]
                                        dxf[ux + q] += w * g
                    dw_vals[p] = acc


@njit(**JIT)
def conv_forward_ow(x, och, ich, kh, kw, vals, bias, y, geo):
    """Batch-first forward vectorised over output width: x (B, C, H, W) -> y (B, OC, OH, OW)."""
    B, C, H, W = x.shape
    Cg = ich.shape[1] - 1
    _, OC, OH, OW = y.shape
    sh, sw, ph, pw, dh, dw, groups = geo
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    plane = OH * OW
    for t in prange(B * OC):
        b = t // OC
        oc = t - b * OC
        ybase = t * plane
        bo = bias[oc]
        for q in range(np.uint64(ybase), np.uint64(ybase + plane)):
            yf[q] = bo
        base = och[oc]
        c0 = (oc // (OC // groups)) * Cg
        for ic in range(Cg):
            s = base + ich[oc, ic]
            e = base + ich[oc, ic + 1]
            xplane = (b * C + c0 + ic) * H * W
            for p in range(s, e):
                w = vals[p]
                oh0, oh1 = _valid(kh[p], dh, ph, sh, H, OH)
                ow0, ow1 = _valid(kw[p], dw, pw, sw, W, OW)
                if ow1 <= ow0:
                    continue
                for oh in range(oh0, oh1):
                    ih = oh * sh - ph + kh[p] * dh
                    uy = np.uint64(ybase + oh * OW + ow0)
                    ux = np.uint64(xplane + ih * W + ow0 * sw - pw + kw[p] * dw)
                    n = np.uint64(ow1 - ow0)
                    if sw == 1:
                        for q in range(n):
                            yf[uy + q] += w * xf[ux + q]
                    else:
                        usw = np.uint64(sw)
                        for q in range(n):
                            yf[uy + q] += w * xf[ux + q * usw]


@njit(**JIT)
def conv_backward_ow(x, dy, och, ich, kh, kw, vals, dx, dw_part, geo):
    """Batch-first backward: dx (B, C, H, W) written per sample; dw_part (P, nnz) per thread."""
    B, C, H, W = x.shape
    Cg = ich.shape[1] - 1
    _, OC, OH, OW = dy.shape
    sh, sw, ph, pw, dh, dw_, groups = geo
    P = dw_part.shape[0]
    xf = x.reshape(-1)
    gf = dy.reshape(-1)
    dxf = dx.reshape(-1)
    for part in prange(P):
        dwp = dw_part[part]
        for q in range(dwp.shape[0]):
            dwp[q] = 0.0
        for b in range(part * B // P, (part + 1) * B // P):
            lo = np.uint64(b * C * H * W)
            for q in range(lo, lo + np.uint64(C * H * W)):
                dxf[q] = 0.0
            for oc in range(OC):
                gbase = (b * OC + oc) * OH * OW
                base = och[oc]
                c0 = (oc // (OC // groups)) * Cg
                for ic in range(Cg):
                    s = base + ich[oc, ic]
                    e = base + ich[oc, ic + 1]
                    xplane = (b * C + c0 + ic) * H * W
                    for p in range(s, e):
                        w = vals[p]
                        acc = dwp[p]
                        oh0, oh1 = _valid(kh[p], dh, ph, sh, H, OH)
                        ow0, ow1 = _valid(kw[p], dw_, pw, sw, W, OW)
                        if ow1 <= ow0:
                            continue
                        n = np.uint64(ow1 - ow0)
                        usw = np.uint64(sw)
                        for oh in range(oh0, oh1):
                            ih = oh * sh - ph + kh[p] * dh
                            ug = np.uint64(gbase + oh * OW + ow0)
                            ux = np.uint64(xplane + ih * W + ow0 * sw - pw + kw[p] * dw_)
                            if sw == 1:
                                for q in range(n):
                                    g = gf[ug + q]
                                    acc += g * xf[ux + q]
                                    dxf[ux + q] += w * g
                            else:
                                for q in range(n):
                                    g = gf[ug + q]
                                    acc += g * xf[ux + q * usw]
                                    dxf[ux + q * usw] += w * g
                        dwp[p] = acc
