"""Triton implicit-GEMM kernels of the HRBP block convolution (forward, dX, dW); never materialise the gathered
input. Tensors are NCHW-contiguous; ``values`` is (t, R, K) with block column k = j*p + q (input channel
``chans[g, j]``, kernel cell ``cells[g, q]``). Accumulation is fp32 for fp32/bf16/fp16 inputs.

* ``fwd_kernel``  tile (rows of a group) x (output positions): y = values[g] @ cols[g] (+ bias).
* ``dx_kernel``   the backward matrix W' of the same block (HRBP §3.1: kernels rotated 180 degrees, transposed
  kernel-wise) is dense, so dX is an implicit GEMM (group channels) x (input positions) over (rows x cells);
  groups may share input channels, so tiles add into an fp32 buffer with atomics.
* ``dw_kernel``   tile (rows) x (block columns), reduction over output positions split across ``SPLIT``
  programs (atomics into fp32) so small layers still fill the GPU.

Tile sizes come from ``triton.autotune`` over the configurations below (the paper's brute-force tile search,
Appendix E); under ``TRITON_INTERPRET=1`` (CPU tests) a single small configuration is used.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs(names: tuple[str, str, str], sizes, split: bool = False):
    if INTERPRET:
        cfg = {names[0]: 16, names[1]: 16, names[2]: 16}
        if split:
            cfg["SPLIT"] = 2
        return [triton.Config(cfg, num_warps=4)]
    out = []
    for a, b, c, w, s in sizes:
        cfg = {names[0]: a, names[1]: b, names[2]: c}
        if split:
            cfg["SPLIT"] = s
        out.append(triton.Config(cfg, num_warps=w, num_stages=3))
    return out


_FWD_SIZES = [(32, 64, 32, 4, 0), (64, 64, 32, 4, 0), (32, 128, 32, 4, 0), (64, 128, 32, 8, 0),
              (128, 64, 32, 8, 0), (64, 256, 32, 8, 0), (16, 128, 64, 4, 0), (128, 128, 32, 8, 0)]
_DW_SIZES = [(32, 32, 64, 4, 8), (64, 64, 64, 4, 16), (32, 64, 128, 4, 32), (64, 32, 128, 4, 32),
             (64, 64, 128, 8, 64), (128, 64, 64, 8, 16)]


@triton.autotune(configs=_configs(("BM", "BN", "BK"), _FWD_SIZES), key=["R", "K", "NPOS", "C"])
@triton.jit
def fwd_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, rows_ptr, chans_ptr, cells_ptr,
               C, H, W, CO, OH, OW, R, K, NPOS, c, p, Kw, sh, sw, pt, pl, dh, dw,
               HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_gm = tl.program_id(0)
    pid_n = tl.program_id(1)
    num_m = tl.cdiv(R, BM)
    g = pid_gm // num_m
    offs_m = (pid_gm % num_m) * BM + tl.arange(0, BM)
    offs_n = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    m_ok = offs_m < R
    n_ok = offs_n < NPOS
    L = OH * OW
    b = offs_n // L
    rem = offs_n % L
    oh = rem // OW
    ow = rem % OW
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        k_ok = offs_k < K
        a = tl.load(w_ptr + g * R * K + offs_m[:, None] * K + offs_k[None, :],
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        ci = tl.load(chans_ptr + g * c + offs_k // p, mask=k_ok, other=0)
        cell = tl.load(cells_ptr + g * p + offs_k % p, mask=k_ok, other=0)
        kh = cell // Kw
        kw = cell % Kw
        ih = oh[None, :] * sh + kh[:, None] * dh - pt
        iw = ow[None, :] * sw + kw[:, None] * dw - pl
        ok = k_ok[:, None] & n_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xb = tl.load(x_ptr + ((b[None, :] * C + ci[:, None]) * H + ih) * W + iw, mask=ok, other=0.0)
        acc += tl.dot(a, xb, input_precision=PRECISION)
    rows = tl.load(rows_ptr + g * R + offs_m, mask=m_ok, other=0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=m_ok, other=0.0).to(tl.float32)[:, None]
    y_off = (b[None, :] * CO + rows[:, None]) * L + rem[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.autotune(configs=_configs(("BM", "BN", "BK"), _FWD_SIZES), key=["R", "K", "NPOS", "C"],
                 reset_to_zero=["dx_ptr"])
@triton.jit
def dx_kernel(gy_ptr, w_ptr, dx_ptr, rows_ptr, chans_ptr, cells_ptr,
              C, H, W, CO, OH, OW, R, K, NPOS, c, p, Kw, sh, sw, pt, pl, dh, dw,
              PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_gm = tl.program_id(0)
    pid_n = tl.program_id(1)
    num_m = tl.cdiv(c, BM)
    g = pid_gm // num_m
    offs_j = (pid_gm % num_m) * BM + tl.arange(0, BM)  # channel slots of the group
    offs_n = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)  # input positions (b, ih, iw)
    j_ok = offs_j < c
    n_ok = offs_n < NPOS
    HW = H * W
    b = offs_n // HW
    rem = offs_n % HW
    ih = rem // W
    iw = rem % W
    RP = R * p
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, RP, BK):
        offs_k = k0 + tl.arange(0, BK)  # (row r, cell q) = (k // p, k % p)
        k_ok = offs_k < RP
        r = offs_k // p
        q = offs_k % p
        a = tl.load(w_ptr + g * R * K + r[None, :] * K + offs_j[:, None] * p + q[None, :],
                    mask=j_ok[:, None] & k_ok[None, :], other=0.0)
        row = tl.load(rows_ptr + g * R + r, mask=k_ok, other=0)
        cell = tl.load(cells_ptr + g * p + q, mask=k_ok, other=0)
        th = ih[None, :] + pt - (cell // Kw)[:, None] * dh
        tw = iw[None, :] + pl - (cell % Kw)[:, None] * dw
        ths = tl.where(th >= 0, th, 0)
        tws = tl.where(tw >= 0, tw, 0)
        oh = ths // sh
        ow = tws // sw
        ok = (k_ok[:, None] & n_ok[None, :] & (th >= 0) & (tw >= 0) & (ths % sh == 0) & (tws % sw == 0)
              & (oh < OH) & (ow < OW))
        gb = tl.load(gy_ptr + ((b[None, :] * CO + row[:, None]) * OH + oh) * OW + ow, mask=ok, other=0.0)
        acc += tl.dot(a, gb, input_precision=PRECISION)
    ci = tl.load(chans_ptr + g * c + offs_j, mask=j_ok, other=0)
    dst = dx_ptr + (b[None, :] * C + ci[:, None]) * HW + rem[None, :]
    tl.atomic_add(dst, acc, mask=j_ok[:, None] & n_ok[None, :])


@triton.autotune(configs=_configs(("BM", "BK", "BN"), _DW_SIZES, split=True), key=["R", "K", "NPOS", "C"],
                 reset_to_zero=["dv_ptr"])
@triton.jit
def dw_kernel(x_ptr, gy_ptr, dv_ptr, rows_ptr, chans_ptr, cells_ptr,
              C, H, W, CO, OH, OW, R, K, NPOS, c, p, Kw, sh, sw, pt, pl, dh, dw,
              PRECISION: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
              SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    num_m = tl.cdiv(R, BM)
    num_k = tl.cdiv(K, BK)
    g = pid // (num_m * num_k)
    rest = pid % (num_m * num_k)
    offs_m = (rest // num_k) * BM + tl.arange(0, BM)
    offs_k = (rest % num_k) * BK + tl.arange(0, BK)
    m_ok = offs_m < R
    k_ok = offs_k < K
    rows = tl.load(rows_ptr + g * R + offs_m, mask=m_ok, other=0)
    ci = tl.load(chans_ptr + g * c + offs_k // p, mask=k_ok, other=0)
    cell = tl.load(cells_ptr + g * p + offs_k % p, mask=k_ok, other=0)
    kh = cell // Kw
    kw = cell % Kw
    L = OH * OW
    acc = tl.zeros((BM, BK), dtype=tl.float32)
    per = tl.cdiv(tl.cdiv(NPOS, SPLIT), BN) * BN
    start = pid_s * per
    for n0 in range(0, per, BN):
        offs_n = (start + n0 + tl.arange(0, BN)).to(tl.int64)
        n_ok = offs_n < NPOS
        b = offs_n // L
        rem = offs_n % L
        oh = rem // OW
        ow = rem % OW
        a = tl.load(gy_ptr + (b[None, :] * CO + rows[:, None]) * L + rem[None, :],
                    mask=m_ok[:, None] & n_ok[None, :], other=0.0)
        ih = oh[:, None] * sh + kh[None, :] * dh - pt
        iw = ow[:, None] * sw + kw[None, :] * dw - pl
        ok = n_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xb = tl.load(x_ptr + ((b[:, None] * C + ci[None, :]) * H + ih) * W + iw, mask=ok, other=0.0)
        acc += tl.dot(a, xb, input_precision=PRECISION)
    dst = dv_ptr + g * R * K + offs_m[:, None] * K + offs_k[None, :]
    tl.atomic_add(dst, acc, mask=m_ok[:, None] & k_ok[None, :])
