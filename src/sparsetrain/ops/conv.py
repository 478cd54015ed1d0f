"""Autograd op for a ConvCSR-sparse conv2d on the SparseProp CPU kernels (two layouts)."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from ..kernels.cpu import (conv_backward_bl, conv_backward_ow, conv_forward_bl, conv_forward_ow, pad_batch_last,
                           pad_planes, sddmm_runs, sddmm_same, spmm_runs, spmm_same, spmm_sddmm_runs, spmm_sddmm_same,
                           unpad_batch_first)
from .common import (NO_INDEX, NP_DTYPES, batch_first, batch_last, check_conv_input, check_cpu_input, fused_parts,
                     np_empty, np_view, refuse_double_backward, strided_tensor, taken, unviewed, values_in_order,
                     zeros)
from .plan import Plan, cached, kernel_arrays, transpose_structure
from .threads import sync_threads

VARIANTS = ("batch-last", "over-width", "batch-last-unpadded", "over-width-unpadded")


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, explicit zero padding (top, bottom, left, right), dilation, groups and kernel size."""

    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    kernel: tuple[int, int]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        (sh, sw), (pt, pb, pl, pr), (dh, dw), (kh, kw) = self.stride, self.padding, self.dilation, self.kernel
        return ((h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)

    @property
    def keeps_plane(self) -> bool:
        """Stride 1 with the output plane of the input's shape ('same'): the unpadded kernels apply."""
        (sh, sw), (pt, pb, pl, pr), (dh, dw), (kh, kw) = self.stride, self.padding, self.dilation, self.kernel
        return (sh, sw) == (1, 1) and pt + pb == dh * (kh - 1) and pl + pr == dw * (kw - 1)

    def kernel_args(self) -> tuple[int, ...]:
        return (self.stride[0], self.stride[1], self.padding[0], self.padding[2],
                self.dilation[0], self.dilation[1], self.groups)


_RUN_TILE = 1024  # output-run elements per task: several tasks per plane keep both threads busy
_SAME_TILE = 4096  # 'same' runs: longer tiles, as each tile pays its zone and edge-row work once per shift


def _runs_plan(plan, chan, kh, kw, och, geo, C, hp, wp, v):
    """Offsets of every nonzero in the padded run layout and the by-channel (transposed) structure, as NumPy arrays
    (off, t_ptr, perm, offT) ready for the kernels, with the gradient plane's zero front ``smax`` and length ``lg``."""
    def build():
        lin = hp * wp * v
        spatial = kh.long() * (geo.dilation[0] * wp * v) + kw.long() * (geo.dilation[1] * v)
        off = chan * lin + spatial
        OC = och.numel() - 1
        oc = torch.repeat_interleave(torch.arange(OC), och[1:] - och[:-1])
        t_ptr, perm = transpose_structure(chan, C)
        smax = (geo.dilation[0] * (geo.kernel[0] - 1) * wp + geo.dilation[1] * (geo.kernel[1] - 1)) * v
        lg = smax + lin  # a gradient plane with smax zeros in front: every shifted read stays inside
        offT = (oc * lg + smax - spatial)[perm]
        return (*kernel_arrays(off, t_ptr, perm, offT), smax, lg)
    return cached(plan, ("conv", C, hp, wp, v), build)


def _zero_frame(t: torch.Tensor, hdim: int, wdim: int, pads: tuple[int, int, int, int]) -> None:
    """Zero only the padding frame of ``t`` (the interior is overwritten next): one pass, not two."""
    pt, pb, pl, pr = pads
    h, w = t.shape[hdim], t.shape[wdim]
    for dim, lo, hi, n in ((hdim, pt, pb, h), (wdim, pl, pr, w)):
        if lo:
            t.narrow(dim, 0, lo).zero_()
        if hi:
            t.narrow(dim, n - hi, hi).zero_()


def _gradient_workspace(plan, shape, dtype: torch.dtype) -> np.ndarray:
    """A zeroed buffer kept across steps: backward writes only its interior, so the zero front, tail
    and discarded columns stay zero and the buffer is never cleared again."""
    return cached(plan, ("gy", tuple(shape), dtype), lambda: np.zeros(shape, NP_DTYPES[dtype]))


def padded_runs_input(x: torch.Tensor, geo: ConvGeometry, variant: str) -> tuple[np.ndarray, int, int, int, int]:
    """The zero-padded input of the run layout as a NumPy array (G, C*hp*wp*v): (xp, G, v, hp, wp). Over-width:
    planes (B, C, hp, wp), G = B runs groups of element stride v = 1; batch-last: (C, hp, wp, B), G = 1, v = B.
    Call ``sync_threads`` first."""
    B, C, H, W = x.shape
    pt, pb, pl, pr = geo.padding
    hp, wp = H + pt + pb, W + pl + pr
    if variant == "batch-last":
        xp = np_empty((1, C * hp * wp * B), x.dtype)
        if x.is_contiguous() and B:
            pad_batch_last(np_view(x), xp[0], 0, hp * wp * B, hp, wp, pt, pl, zeros(0, x.dtype))
            return xp, 1, B, hp, wp
        t = torch.from_numpy(xp).view(C, hp, wp, B)
        _zero_frame(t, 1, 2, (pt, pb, pl, pr))
        t[:, pt:pt + H, pl:pl + W, :] = x.permute(1, 2, 3, 0)
        return xp, 1, B, hp, wp
    xp = np_empty((B, C * hp * wp), x.dtype)
    if x.is_contiguous():
        pad_planes(np_view(x), xp.reshape(-1), 0, hp * wp, hp, wp, pt, pl, True)
        return xp, B, 1, hp, wp
    t = torch.from_numpy(xp).view(B, C, hp, wp)
    _zero_frame(t, 2, 3, (pt, pb, pl, pr))
    t[:, :, pt:pt + H, pl:pl + W] = x
    return xp, B, 1, hp, wp


def runs_output(y: np.ndarray, variant: str, out_channels: int, OH: int, OW: int, wp: int, B: int) -> torch.Tensor:
    """The (B, C_O, OH, OW) tensor over a run-layout output ``y`` (its rows are ``wp`` wide; the tail is discarded)."""
    if variant == "batch-last":
        return strided_tensor(y, (B, out_channels, OH, OW), (1, OH * wp * B, wp * B, B))
    return strided_tensor(y, (B, out_channels, OH, OW), (out_channels * OH * wp, OH * wp, wp, 1))


def runs_gradient(dy: torch.Tensor, plan: Plan, variant: str, wp: int, smax: int, lg: int,
                  need_db: bool = False) -> tuple[np.ndarray, torch.Tensor | None]:
    """dy in the run layout, a NumPy array (G, C_O * lg): each output channel's plane has ``smax`` zeros in front so
    every shifted read of the input-gradient pass stays inside; the buffer is reused across steps (see
    _gradient_workspace). With ``need_db``, also the bias gradient, summed by the batch-last copy where it runs (else
    by torch)."""
    B, OC, OH, OW = dy.shape
    db = None
    if variant == "batch-last":
        gy = _gradient_workspace(plan, (1, OC * lg), dy.dtype)
        if dy.is_contiguous():
            sums = np_empty(OC, dy.dtype) if need_db else zeros(0, dy.dtype)
            db = torch.from_numpy(sums) if need_db else None  # before the copy, as the other returned tensors
            pad_batch_last(np_view(dy), gy[0], smax, lg, OH, wp, 0, 0, sums)
        else:
            t = torch.from_numpy(gy).view(OC, lg)
            t[:, smax:smax + OH * wp * B].view(OC, OH, wp, B)[:, :, :OW, :] = dy.permute(1, 2, 3, 0)
    else:
        gy = _gradient_workspace(plan, (B, OC * lg), dy.dtype)
        if dy.is_contiguous():  # the workspace's frame is zero already: the interior rows only
            pad_planes(np_view(dy), gy.reshape(-1), smax, lg, OH, wp, 0, 0, False)
        else:
            torch.from_numpy(gy).view(B, OC, lg)[:, :, smax:smax + OH * wp].view(B, OC, OH, wp)[..., :OW] = dy
    if need_db and db is None:
        db = dy.sum((0, 2, 3))
    return gy, db


def runs_input_gradient(gy: np.ndarray, t_ptr: np.ndarray, offT: np.ndarray, values: torch.Tensor, perm: np.ndarray,
                        variant: str, shape: tuple[int, int, int, int], hp: int, wp: int,
                        geo: ConvGeometry, leaf_input: bool = False, xp: np.ndarray | None = None,
                        threads: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dX of a stride-1 conv by the transposed structure (its nonzero ``p`` has weight ``values[perm[p]]``, see
    ``values_in_order``), parallel over input channels; with the padded input ``xp``, also dW (in ``values``'
    order) from the same reads of ``gy`` (``spmm_sddmm_runs``, tasks by ``fused_parts``). Returns (dx, dw).

    Batch-last dX is a strided view for the layer before, or copied out contiguous for a leaf (whose .grad must be
    contiguous: our copy, not AccumulateGrad's strided one)."""
    B, C, H, W = shape
    pt, pl = geo.padding[0], geo.padding[2]
    G, v = (1, B) if variant == "batch-last" else (B, 1)
    dxp = np_empty((G, C * hp * wp * v), values.dtype)
    t0 = (pt * wp + pl) * v  # only the interior of the padded plane is needed
    n = ((H - 1) * wp + W) * v
    # returned tensors are made before the kernels run: right after a pass over the activations the caches
    # are cold, and the same calls then cost 20-100 us instead of 2
    unpadded = np_empty((B, C, H, W), values.dtype) if variant == "batch-last" and leaf_input else None
    if unpadded is not None:
        dx = torch.from_numpy(unpadded)
    elif variant == "batch-last":
        dx = strided_tensor(dxp, (B, C, H, W), (1, hp * wp * B, wp * B, B), (pt * wp + pl) * B)
    else:
        dx = strided_tensor(dxp, (B, C, H, W), (C * hp * wp, hp * wp, wp, 1), pt * wp + pl)
    dw = None
    if xp is None:
        spmm_runs(gy, t_ptr, offT, *values_in_order(values, perm), zeros(C, values.dtype), dxp, t0, n, _RUN_TILE)
    else:  # dW's products outside the interior meet the padding's zeros, so the interior run gives all of it
        dw_np = np_empty(values.shape, values.dtype)
        dw = torch.from_numpy(dw_np)
        parts, by_group = fused_parts(G, threads)
        spmm_sddmm_runs(gy, t_ptr, offT, *values_in_order(values, perm), xp, perm, dxp, dw_np.reshape(-1),
                        np_empty((parts, values.numel()), values.dtype), t0, n, _RUN_TILE, by_group)
    if unpadded is not None:
        unpad_batch_first(dxp[0], 0, hp * wp * B, wp, pt, pl, unpadded)
    return dx, dw


def _forward_runs(x, values, och, runs, bias, geo, out_channels, variant):
    """Stride-1 forward on the zero-padded input (one contiguous run per nonzero)."""
    chan, kh, kw, plan = runs
    B, C, H, W = x.shape
    OH, OW = geo.out_size(H, W)
    sync_threads()
    xp, G, v, hp, wp = padded_runs_input(x, geo, variant)
    layout = _runs_plan(plan, chan, kh, kw, och, geo, C, hp, wp, v)
    n = ((OH - 1) * wp + OW) * v
    y = np_empty((G, out_channels * OH * wp * v), x.dtype)
    out, xpt = runs_output(y, variant, out_channels, OH, OW, wp, B), torch.from_numpy(xp)  # before the kernel
    b = np_view(bias) if bias is not None else zeros(out_channels, x.dtype)
    spmm_runs(xp, np_view(och), layout[0], np_view(values), NO_INDEX, b, y, 0, n, _RUN_TILE)
    return out, xp, xpt, layout


def _backward_runs(dy, xp, values, och, layout, geo, variant, shape, need_dx, need_dw, need_db, plan, leaf_input):
    """Stride-1 backward: dX by the transposed structure (parallel over input channels), dW by SDDMM; the bias
    gradient as ``runs_gradient`` gives it."""
    B, _, H, W = shape
    OC, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    off, t_ptr, perm, offT, smax, lg = layout
    threads = sync_threads()
    pt, pb, pl, pr = geo.padding
    hp, wp, v = H + pt + pb, W + pl + pr, (B if variant == "batch-last" else 1)
    gy, db = runs_gradient(dy, plan, variant, wp, smax, lg, need_db)
    dx = dw = None
    if need_dx:  # with dW in the same pass when both are wanted
        dx, dw = runs_input_gradient(gy, t_ptr, offT, values, perm, variant, shape, hp, wp, geo, leaf_input,
                                     xp if need_dw else None, threads)
    elif need_dw:
        dw_np = np_empty(values.shape, values.dtype)
        dw = torch.from_numpy(dw_np)
        n = ((OH - 1) * wp + OW) * v
        sddmm_runs(xp, gy, np_view(och), off, dw_np, smax, n, _RUN_TILE, max(1, min(threads, OC)))
    return dx, dw, db


def _same_plan(plan, chan, kh, kw, och, geo, C, H, W, v):
    """Source offsets, column shifts and valid rows of every nonzero for ``spmm_same``/``sddmm_same``
    (kernels/cpu/same.py), for the forward structure and the transposed one (by input channel) that computes dX.

    Both orders sort a row's nonzeros by kernel cell, so runs of four mostly share a shift and go together;
    ``perm``/``perm_t`` take the values into those orders and ``inv`` brings dW back."""
    def build():
        (dil_h, dil_w), (pt, pl) = geo.dilation, (geo.padding[0], geo.padding[2])
        OC = och.numel() - 1
        oc = torch.repeat_interleave(torch.arange(OC), och[1:] - och[:-1])
        kh_l, kw_l = kh.long(), kw.long()
        n_cells = geo.kernel[0] * geo.kernel[1]
        cell = kw_l * geo.kernel[0] + kh_l
        sh = kh_l * dil_h - pt  # input row = output row + sh
        sw = (kw_l * dil_w - pl) * v  # input element = output element + sw, within a row of W*v elements

        def shifts(perm, src, shift_h, shift_w):
            src, shift_h, shift_w = src[perm], shift_h[perm], shift_w[perm]
            base = src * (H * W * v) + shift_h * (W * v) + shift_w
            return kernel_arrays(base, shift_w, (-shift_h).clamp(min=0), (H - shift_h).clamp(max=H))
        perm = torch.sort(oc * n_cells + cell, stable=True).indices
        perm_t = torch.sort(chan * n_cells + cell, stable=True).indices
        t_ptr, _ = transpose_structure(chan, C)
        return (*kernel_arrays(perm, torch.argsort(perm)), shifts(perm, chan, sh, sw),
                *kernel_arrays(t_ptr, perm_t), shifts(perm_t, oc, -sh, -sw))
    return cached(plan, ("same", C, H, W, v), build)


def _same_tiles(H: int, wv: int, dtype: torch.dtype) -> tuple[int, np.ndarray]:
    """Output rows per task (about _SAME_TILE elements) and the kernels' per-thread zone buffers."""
    rows = max(1, min(H, _SAME_TILE // wv))
    return rows, np_empty((numba.config.NUMBA_NUM_THREADS, rows * wv), dtype)


def _forward_same(x, values, och, runs, bias, geo, out_channels, variant):
    """Stride-1 forward of a conv whose output plane has the input's shape, on the unpadded input."""
    chan, kh, kw, plan = runs
    B, C, H, W = x.shape
    if variant == "batch-last":
        xl, G, v = batch_last(x), 1, B
        strides = (1, H * W * B, W * B, B)
    else:
        xl, G, v = x.detach().contiguous(), B, 1
        strides = (out_channels * H * W, H * W, W, 1)
    y = np_empty((G, out_channels * H * W * v), x.dtype)
    out = strided_tensor(y, (B, out_channels, H, W), strides)  # before the kernel, whose pass leaves caches cold
    layout = _same_plan(plan, chan, kh, kw, och, geo, C, H, W, v)
    b = np_view(bias) if bias is not None else zeros(out_channels, x.dtype)
    rows, scratch = _same_tiles(H, W * v, x.dtype)
    threads = sync_threads()
    spmm_same(np_view(xl.view(G, -1)), np_view(och), *layout[2], np_view(taken(values, layout[0])), b, y, W * v, H,
              rows, scratch, threads)
    return out, xl, layout


def _backward_same(dy, xl, values, och, layout, variant, shape, need_dx, need_dw, need_db, leaf_input):
    """Backward of ``_forward_same``: dX by the transposed structure, with dW from the same pass when both are wanted
    (``spmm_sddmm_same``; with a part of the images per thread it also sums the bias gradient, else torch does).
    dW alone: SDDMM over the forward structure, parallel over images where there are enough (each thread then reads
    only its images' activations), with the bias gradient summed in the same pass."""
    B, C, H, W = shape
    OC = dy.shape[1]
    perm, inv, fwd, t_ptr, perm_t, bwd = layout
    threads = sync_threads()
    if variant == "batch-last":
        gl, G, v = batch_last(dy), 1, B
    else:
        gl, G, v = dy.contiguous(), B, 1
    g2 = np_view(gl.view(G, -1))
    rows, scratch = _same_tiles(H, W * v, dy.dtype)
    dx = dw = db = None
    if need_dx:
        dxl = np_empty((G, C * H * W * v), dy.dtype)
        # tensors made before the kernel, as in runs_input_gradient
        if variant == "batch-last":  # a leaf's .grad must be contiguous: transpose here, not by AccumulateGrad
            dx = torch.from_numpy(dxl).view(C, H, W, B) if leaf_input else strided_tensor(
                dxl, (B, C, H, W), (1, H * W * B, W * B, B))
        else:
            dx = strided_tensor(dxl, (B, C, H, W), (C * H * W, H * W, W, 1))
        if need_dw:  # both from one pass over the gradient planes (and the bias gradient, over images)
            parts, by_group = fused_parts(G, threads)
            dw_np = np_empty(values.shape, values.dtype)
            dw = torch.from_numpy(dw_np)
            db_part = np_empty((parts if need_db and by_group else 0, OC), values.dtype)
            spmm_sddmm_same(g2, t_ptr, *bwd, *values_in_order(values, perm_t), np_view(xl.view(G, -1)), perm_t,
                            dxl, dw_np.reshape(-1), np_empty((parts, values.numel()), values.dtype), db_part, W * v,
                            H, rows, scratch, np.empty_like(scratch), by_group)
            if db_part.shape[0]:
                db = torch.from_numpy(db_part.sum(0))
        else:
            spmm_same(g2, t_ptr, *bwd, np_view(taken(values, perm_t)), zeros(C, dy.dtype), dxl, W * v, H, rows,
                      scratch, threads)
        if variant == "batch-last" and leaf_input:
            dx = batch_first(dx)
    if need_dw and dw is None:
        by_image = G >= threads > 1
        parts = threads if by_image else max(1, min(threads, OC))
        slots = parts if by_image else 1
        dw_part = values.new_empty(slots, values.numel())
        db_part = values.new_empty(slots if need_db else 0, OC)
        sddmm_same(np_view(xl.view(G, -1)), g2, np_view(och), *fwd, dw_part.numpy(),
                   db_part.numpy(), W * v, H, rows, parts, by_image, scratch)
        dw = taken(dw_part.sum(0) if slots > 1 else dw_part[0], inv)
        if need_db:
            db = db_part.sum(0) if slots > 1 else db_part[0]
    if need_db and db is None:
        db = dy.sum((0, 2, 3))
    return dx, dw, db


class SparseConv2dFunction(torch.autograd.Function):
    """Conv2d with a ConvCSR weight; ``variant`` picks the batch-last or over-width kernels."""

    @staticmethod
    def forward(ctx, x, values, och, ich, kh, kw, bias, geo: ConvGeometry, out_channels: int, variant: str,
                runs: tuple | None, leaf_input: bool = False):
        check_conv_input(x, geo, "SparseConv2d")
        B, C, H, W = x.shape
        OH, OW = geo.out_size(H, W)
        unpadded = variant.endswith("-unpadded")
        variant = variant.removesuffix("-unpadded")  # the layout
        ctx.geo, ctx.variant, ctx.has_bias, ctx.shape = geo, variant, bias is not None, (B, C, H, W)
        ctx.runs = runs is not None and B > 0 and values.numel() > 0
        ctx.same = ctx.runs and unpadded and geo.keeps_plane
        if ctx.same:
            y, xl, layout = _forward_same(x, values, och, runs, bias, geo, out_channels, variant)
            ctx.save_for_backward(xl, values, och)
            ctx.layout, ctx.leaf_input = layout, leaf_input
            return y
        if ctx.runs:
            y, _, xpt, layout = _forward_runs(x, values, och, runs, bias, geo, out_channels, variant)
            ctx.save_for_backward(xpt, values, och)  # saved, so freed after backward
            ctx.layout, ctx.plan, ctx.leaf_input = layout, runs[3], leaf_input
            return y
        b = bias.detach() if bias is not None else torch.zeros(out_channels, dtype=x.dtype)
        idx = (np_view(och), np_view(ich), np_view(kh), np_view(kw), np_view(values), np_view(b))
        if variant == "batch-last":
            xl = x.permute(1, 2, 3, 0).contiguous()  # free when x is a batch-last view already
            yl = torch.empty(out_channels, OH, OW, B, dtype=x.dtype)
            if B:
                sync_threads()
                conv_forward_bl(np_view(xl), *idx, yl.numpy(), geo.kernel_args())
            y = yl.permute(3, 0, 1, 2)
        else:
            xl = x.contiguous()
            y = torch.empty(B, out_channels, OH, OW, dtype=x.dtype)
            if B:
                sync_threads()
                conv_forward_ow(np_view(xl), *idx, y.numpy(), geo.kernel_args())
        ctx.save_for_backward(xl, values, och, ich, kh, kw)
        return unviewed(y)

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward("SparseConv2d")
        if ctx.same:
            xl, values, och = ctx.saved_tensors
            dx, dw, db = _backward_same(dy, xl, values, och, ctx.layout, ctx.variant, ctx.shape,
                                        ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias, ctx.leaf_input)
            return dx, dw, None, None, None, None, db, None, None, None, None, None
        if ctx.runs:
            xp, values, och = ctx.saved_tensors
            dx, dw, db = _backward_runs(dy, xp.numpy(), values, och, ctx.layout, ctx.geo, ctx.variant, ctx.shape,
                                        ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias, ctx.plan,
                                        ctx.leaf_input)
            return (dx if ctx.needs_input_grad[0] else None), dw, None, None, None, None, db, None, None, None, None, None
        xl, values, och, ich, kh, kw = ctx.saved_tensors
        geo, nnz = ctx.geo, values.numel()
        idx = (np_view(och), np_view(ich), np_view(kh), np_view(kw), np_view(values))
        if ctx.variant == "batch-last":
            C, H, W, B = xl.shape
            gl = dy.permute(1, 2, 3, 0).contiguous()
            if B and nnz:
                n = sync_threads()
                parts = max(1, min(n, och.numel() - 1))
                dx_part = torch.empty(parts, xl.numel(), dtype=xl.dtype)
                dw = torch.empty_like(values)
                conv_backward_bl(np_view(xl), np_view(gl), *idx, dx_part.numpy(), dw.numpy(), geo.kernel_args())
                dxl = (dx_part[0] if parts == 1 else dx_part.sum(0)).view(C, H, W, B)
            else:
                dxl, dw = torch.zeros_like(xl), torch.zeros_like(values)
            dx = dxl.permute(3, 0, 1, 2)
            db = gl.sum((1, 2, 3)) if ctx.has_bias else None
        else:
            B = xl.shape[0]
            g = dy.contiguous()
            if B and nnz:
                n = sync_threads()
                parts = max(1, min(n, B))
                dx = torch.empty_like(xl)
                dw_part = torch.empty(parts, nnz, dtype=values.dtype)
                conv_backward_ow(np_view(xl), np_view(g), *idx, dx.numpy(), dw_part.numpy(), geo.kernel_args())
                dw = dw_part[0] if parts == 1 else dw_part.sum(0)
            else:
                dx, dw = torch.zeros_like(xl), torch.zeros_like(values)
            db = g.sum((0, 2, 3)) if ctx.has_bias else None
        return (dx if ctx.needs_input_grad[0] else None), dw, None, None, None, None, db, None, None, None, None, None


def sparse_conv2d(x: torch.Tensor, values: torch.Tensor, och: torch.Tensor, ich: torch.Tensor, kh: torch.Tensor,
                  kw: torch.Tensor, bias: torch.Tensor | None, geo: ConvGeometry, out_channels: int,
                  variant: str, chan: torch.Tensor | None = None, cache: dict | None = None) -> torch.Tensor:
    """Sparse conv2d of a 4-D (or unbatched 3-D) input with explicit zero padding in ``geo``.

    With ``chan`` (the activation channel of every nonzero) and stride 1, the run kernels are used: on a
    zero-padded copy of the input, or with an ``-unpadded`` variant and a geometry that keeps the plane
    (``geo.keeps_plane``) on the input itself (other geometries fall back to the padded runs). ``cache`` (a
    ``Plan`` owned by the caller) keeps their offsets between calls."""
    check_cpu_input(x, values, "SparseConv2d")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if x.dim() == 3:
        return sparse_conv2d(x.unsqueeze(0), values, och, ich, kh, kw, bias, geo, out_channels, variant,
                             chan, cache)[0]
    if x.dim() != 4:
        raise ValueError(f"SparseConv2d expects input of shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    expected = (ich.shape[1] - 1) * geo.groups
    if x.shape[1] != expected:
        raise ValueError(f"SparseConv2d expects {expected} input channels, got input of shape {tuple(x.shape)}")
    runs = (chan, kh, kw, cache) if chan is not None and geo.stride == (1, 1) else None
    return SparseConv2dFunction.apply(x, values, och, ich, kh, kw, bias, geo, out_channels, variant, runs,
                                      x.is_leaf and x.requires_grad)
