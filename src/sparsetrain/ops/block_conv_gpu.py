"""Autograd op for the HRBP block convolution with the Triton implicit-GEMM kernels (CUDA, or the CPU under
``TRITON_INTERPRET=1`` for tests). fp32 follows ``torch.backends.cudnn.allow_tf32`` (as cuDNN convs do);
bf16/fp16 compute in fp32 accumulators. dX and dW accumulate with fp32 atomics (not bit-reproducible)."""
from __future__ import annotations

import torch

from .common import check_conv_input, refuse_double_backward
from .conv import ConvGeometry

GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernels():
    try:
        from ..kernels.gpu import block_conv
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("the block-gpu backend needs Triton (pip install triton); "
                           "use backend='dense' or a CPU input") from e
    return block_conv


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32" if dtype == torch.float32 else "ieee"


def _common(x, values, geo: ConvGeometry, out_channels: int, oh: int, ow: int) -> dict:
    """Shape and geometry arguments shared by the three kernels."""
    _, C, H, W = x.shape
    _, R, K = values.shape
    (sh, sw), (pt, _, pl, _), (dh, dw), (_, kw) = geo.stride, geo.padding, geo.dilation, geo.kernel
    return dict(C=C, H=H, W=W, CO=out_channels, OH=oh, OW=ow, R=R, K=K, sh=sh, sw=sw, pt=pt, pl=pl, dh=dh, dw=dw,
                Kw=kw)


class BlockConv2dTriton(torch.autograd.Function):
    """y = block_conv(x) with Triton kernels; see ``kernels/gpu/block_conv.py``."""

    @staticmethod
    def forward(ctx, x, values, bias, rows, channels, cells, geo: ConvGeometry, out_channels: int):
        k = _kernels()
        x = x.contiguous()
        B, C, H, W = x.shape
        OH, OW = geo.out_size(H, W)
        t, R, K = values.shape
        c, p = channels.shape[1], cells.shape[1]
        y = x.new_empty(B, out_channels, OH, OW)
        npos = B * OH * OW
        args = _common(x, values, geo, out_channels, OH, OW)
        prec = _precision(x.dtype)
        if npos:
            def grid(meta):
                return (t * triton_cdiv(R, meta["BM"]), triton_cdiv(npos, meta["BN"]))
            k.fwd_kernel[grid](x, values.contiguous(), bias if bias is not None else values, y, rows, channels, cells,
                               NPOS=npos, c=c, p=p, HAS_BIAS=bias is not None, PRECISION=prec, **args)
        ctx.save_for_backward(x, values, rows, channels, cells)
        ctx.geo, ctx.out_channels, ctx.has_bias = geo, out_channels, bias is not None
        return y

    @staticmethod
    def backward(ctx, gy):
        refuse_double_backward("BlockSparseConv2d")
        k = _kernels()
        x, values, rows, channels, cells = ctx.saved_tensors
        gy = gy.contiguous()
        B, C, H, W = x.shape
        OH, OW = gy.shape[2], gy.shape[3]
        t, R, K = values.shape
        c, p = channels.shape[1], cells.shape[1]
        args = _common(x, values, ctx.geo, ctx.out_channels, OH, OW)
        prec = _precision(x.dtype)
        dx = dv = None
        if ctx.needs_input_grad[0]:
            acc = torch.zeros(B, C, H, W, device=x.device, dtype=torch.float32)
            npos = B * H * W
            if npos:
                def grid_x(meta):
                    return (t * triton_cdiv(c, meta["BM"]), triton_cdiv(npos, meta["BN"]))
                k.dx_kernel[grid_x](gy, values.contiguous(), acc, rows, channels, cells, NPOS=npos, c=c, p=p,
                                    PRECISION=prec, **args)
            dx = acc.to(x.dtype)
        if ctx.needs_input_grad[1]:
            acc = torch.zeros(t, R, K, device=x.device, dtype=torch.float32)
            npos = B * OH * OW
            if npos:
                def grid_w(meta):
                    return (t * triton_cdiv(R, meta["BM"]) * triton_cdiv(K, meta["BK"]), meta["SPLIT"])
                k.dw_kernel[grid_w](x, gy, acc, rows, channels, cells, NPOS=npos, c=c, p=p, PRECISION=prec, **args)
            dv = acc.to(values.dtype)
        db = gy.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dv, db, None, None, None, None, None


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division for launch grids (``triton.cdiv`` without importing Triton here)."""
    return (a + b - 1) // b


def block_conv2d_gpu(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor,
                     channels: torch.Tensor, cells: torch.Tensor, geo: ConvGeometry, out_channels: int) -> torch.Tensor:
    """HRBP block conv2d with the Triton kernels; input (B, C, H, W) on CUDA (or CPU under TRITON_INTERPRET=1)."""
    if x.dtype != values.dtype:
        raise TypeError(f"BlockSparseConv2d: input dtype {x.dtype} does not match weight dtype {values.dtype}")
    if x.dtype not in GPU_DTYPES:
        raise TypeError(f"the block-gpu kernels support {GPU_DTYPES}, got {x.dtype}; use backend='dense'")
    check_conv_input(x, geo, "BlockSparseConv2d")
    return BlockConv2dTriton.apply(x, values, bias, rows, channels, cells, geo, out_channels)
