"""Register-tiled multiply-add micro-kernels for numba, written as LLVM vector IR.

numba's loop vectoriser keeps a kernel's accumulator in memory: every sweep over a few weights loads and stores
the output run again, and every loaded input value feeds one output. These intrinsics keep a whole tile of
accumulators in vector registers for the entire reduction, so each loaded vector of one operand feeds four
outputs (block rows, or input channels of the gather-form input gradient) and nothing is stored until the end.
They serve the HRBP block convolution on batch-last data (``block_tiles.py``), where a block's rows share every
input stream and the vectorised dimension (the batch) is contiguous and a multiple of the vector length.

Every intrinsic works on 1-D C-contiguous arrays of one float dtype and ``LANES``-element vectors, with
element offsets that the caller keeps in bounds (unchecked, as in ``simd.tile8``). A tile narrower than its
width (the last rows or channels of a block) repeats its last row or channel: the repeated lanes compute the same
values and store them to the same place (the input-gradient tile adds zeros instead). No torch import here.

Tile sizes follow the target's register file (numba's target features, so ``NUMBA_CPU_FEATURES`` is honoured):
with AVX-512 (32 registers of 16 float32) a 4 x 4-vector tile; with AVX2 (16 registers of 8) a 4 x 2-vector
tile, since 4 x 4 spilled there (measured 1.2-1.8x slower than the bmm variants on VGG-19's 8x8 and 4x4 layers).

numba's on-disk cache checks only the source file of a jitted function, not the intrinsics it inlines: after
editing this file, touch ``block_tiles.py`` (or delete its ``__pycache__`` entries) so its kernels recompile.
(A reinstall rewrites every file, so users are not affected.)
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

AVX512 = "+avx512f" in (numba.config.CPU_FEATURES or llvm.get_host_cpu_features().flatten())
LANES = 16 if AVX512 else 8  # elements per vector: one register of float32
TILE = 4  # rows (forward) or input channels (dX) of the register tile, and rows of the dW tile
WIDE_NV = 4 if AVX512 else 2  # most vectors per row of the forward and dX tiles
DOT_COLS = 4 if AVX512 else 2  # columns of the dW tile (TILE x DOT_COLS vector accumulators)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _const(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _vector(context, dtype) -> tuple[ir.Type, ir.VectorType, int]:
    elem = context.get_data_type(dtype)
    return elem, ir.VectorType(elem, LANES), dtype.bitwidth // 8


def _splat(builder, vec: ir.VectorType, value):
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _data(context, builder, ty, arr):
    return context.make_array(ty)(context, builder, arr).data


def _vptr(builder, data, index, vec: ir.VectorType):
    return builder.bitcast(cgutils.gep(builder, data, index), vec.as_pointer())


def _at(builder, data, index):
    return builder.load(cgutils.gep(builder, data, index))


def _clamped(builder, i: int, n, base):
    """base + min(i, n - 1): the tile's i-th row or column, repeating the last valid one."""
    inside = builder.icmp_signed("<", _const(i), n)
    return builder.add(base, builder.select(inside, _const(i), builder.sub(n, _const(1))))


def _fma(builder, vec: ir.VectorType, bits: int):
    fnty = ir.FunctionType(vec, [vec, vec, vec])
    return cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{LANES}f{bits}")


def _mask(builder, masks, index):
    """Lane mask ``masks[index]`` (bit l = lane l) as a vector of LANES booleans."""
    bits = builder.trunc(_at(builder, masks, index), ir.IntType(LANES))
    return builder.bitcast(bits, ir.VectorType(ir.IntType(1), LANES))


def _vector_masks(builder, masks, row, nv: int, step, nvalid) -> list:
    """The lane masks of a tile's nv vectors: vector v takes masks[row + v*step] where v < nvalid, else none. Plane
    tiles (step 1) take the masks of successive runs of a plane; image tiles (step 0, one plane of at most LANES
    pixels per vector, a vector per image) share one, and a last group of fewer images masks the rest off."""
    off = ir.Constant(ir.VectorType(ir.IntType(1), LANES), [ir.Constant(ir.IntType(1), 0)] * LANES)
    out = []
    for v in range(nv):
        m = _mask(builder, masks, builder.add(row, builder.mul(_const(v), step)))
        out.append(builder.select(builder.icmp_signed("<", _const(v), nvalid), m, off))
    return out


def _masked_load(builder, vec: ir.VectorType, bits: int, ptr, mask, align: int):
    """Load the lanes of ``mask`` (the others read as zero and touch no memory)."""
    fnty = ir.FunctionType(vec, [vec.as_pointer(), _I32, mask.type, vec])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{LANES}f{bits}.p0")
    zero = ir.Constant(vec, [ir.Constant(vec.element, 0.0)] * LANES)
    return builder.call(fn, [ptr, ir.Constant(_I32, align), mask, zero])


def _masked_store(builder, vec: ir.VectorType, bits: int, value, ptr, mask, align: int) -> None:
    fnty = ir.FunctionType(ir.VoidType(), [vec, vec.as_pointer(), _I32, mask.type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f{bits}.p0")
    builder.call(fn, [value, ptr, ir.Constant(_I32, align), mask])


def _lanes(index: list) -> ir.Constant:
    """A shufflevector lane selection."""
    return ir.Constant(ir.VectorType(_I32, LANES), index)


def _tree_sum(builder, vecs: list):
    """LANES vectors -> one vector whose lane i is the sum of all lanes of ``vecs[i]``: log2(LANES) levels of
    pairwise half-swaps and adds (2*LANES - 2 shuffles, LANES - 1 adds, where LANES horizontal sums take about
    4*LANES*log2(LANES) operations), then one shuffle into order."""
    assert len(vecs) == LANES
    items = [(v, [i]) for i, v in enumerate(vecs)]  # (vector, accumulators in its lane groups, in order)
    w = LANES
    while len(items) > 1:
        h = w // 2
        nxt = []
        for (a, ia), (b, ib) in zip(items[::2], items[1::2]):
            lo, hi = [], []
            for g in range(len(ia)):  # a's group g -> new group 2g, b's -> 2g + 1
                lo += [g * w + t for t in range(h)] + [LANES + g * w + t for t in range(h)]
                hi += [g * w + h + t for t in range(h)] + [LANES + g * w + h + t for t in range(h)]
            c = builder.fadd(builder.shuffle_vector(a, b, _lanes(lo)), builder.shuffle_vector(a, b, _lanes(hi)))
            nxt.append((c, [x for pair in zip(ia, ib) for x in pair]))
        items, w = nxt, h
    total, order = items[0]
    where = {acc: lane for lane, acc in enumerate(order)}
    undef = ir.Constant(total.type, ir.Undefined)
    return builder.shuffle_vector(total, undef, _lanes([where[i] for i in range(LANES)]))


def _loop(builder, start, stop, step, carried: list, body) -> list:
    """A counted loop ``for i in range(start, stop, step)`` (``step`` a positive int or i64 value) whose ``carried``
    values live in registers (phi nodes);
    ``body(i, values)`` emits one iteration and returns the next values. Returns the values after the loop."""
    fn = builder.function
    pre = builder.block
    head, inner, done = (fn.append_basic_block(name) for name in ("mk.head", "mk.body", "mk.done"))
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(_I64)
    i.add_incoming(start, pre)
    phis = []
    for value in carried:
        phi = builder.phi(value.type)
        phi.add_incoming(value, pre)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, stop), inner, done)
    builder.position_at_end(inner)
    nxt = body(i, phis)
    i.add_incoming(builder.add(i, _const(step) if isinstance(step, int) else step), builder.block)
    for phi, value in zip(phis, nxt):
        phi.add_incoming(value, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return phis


def _make_rows_tile(nv: int, masked: bool = False):
    """Forward tile, TILE rows x nv*LANES lanes: for i < TILE (rows r = r0 + min(i, nr - 1)),
    y[ids[r]*ystride + ybase + l] = bias[ids[r]] + sum_{k<K} w[wbase + r*K + k] * x[xoff[k] + xbase + l].
    ``masked``: the NCHW-plane form (``block_planes.py``), with five more arguments (masks, qm, mbase, lrow, p): the
    K = c*p columns are (channel j, cell q) at k = j*p + q, vector v of cell q loads only the lanes of
    masks[qm[q] + mbase + v] (the others are zero) and the tile stores only those of masks[lrow + mbase + v]. The
    reduction runs cell by cell, so each cell's masks are loaded once for all its channels. Four more (xvstride,
    yvstride, mstep, nvalid) place the tile's vectors: vector v reads x at + v*xvstride, writes y at + v*yvstride
    and takes mask row + v*mstep, and vectors v >= nvalid are masked off entirely (see ``_vector_masks``)."""
    def codegen(context, builder, signature, args):
        a_w, v_wb, v_k, v_nr, a_x, a_xo, v_xb, a_y, a_ids, v_r0, v_ys, v_yb, a_b = args[:13]
        elem, vec, align = _vector(context, signature.args[0].dtype)
        bits = signature.args[0].dtype.bitwidth
        fma = _fma(builder, vec, bits)
        wd, xd, xo, yd, idd, bd = (_data(context, builder, signature.args[i], a) for i, a in
                                   ((0, a_w), (4, a_x), (5, a_xo), (7, a_y), (8, a_ids), (12, a_b)))
        rows = [_clamped(builder, i, v_nr, v_r0) for i in range(TILE)]
        wrow = [builder.add(v_wb, builder.mul(r, v_k)) for r in rows]
        ids_ = [_at(builder, idd, r) for r in rows]
        zero = ir.Constant(vec, [ir.Constant(elem, 0.0)] * LANES)

        if masked:  # vector v: the v-th LANES pixels of one plane, or (image tiles) the v-th image's plane
            v_xs, v_yvs, v_ms, v_nval = args[18:22]
            xstep = [builder.mul(_const(v), v_xs) for v in range(nv)]
            ystep = [builder.mul(_const(v), v_yvs) for v in range(nv)]
        else:
            xstep = ystep = [_const(v * LANES) for v in range(nv)]

        def column(k, acc, masks=None):
            o = builder.add(_at(builder, xo, k), v_xb)
            ptrs = [_vptr(builder, xd, builder.add(o, xstep[v]), vec) for v in range(nv)]
            if masks is None:
                xv = [builder.load(ptr, align=align) for ptr in ptrs]
            else:
                xv = [_masked_load(builder, vec, bits, ptr, m, align) for ptr, m in zip(ptrs, masks)]
            out = []
            for i in range(TILE):
                wv = _splat(builder, vec, _at(builder, wd, builder.add(wrow[i], k)))
                out += [builder.call(fma, [wv, xv[v], acc[i * nv + v]]) for v in range(nv)]
            return out

        if masked:
            md, qmd = (_data(context, builder, signature.args[i], args[i]) for i in (13, 14))
            v_mb, v_lr, v_p = args[15], args[16], args[17]

            def cell(q, acc):
                masks = _vector_masks(builder, md, builder.add(_at(builder, qmd, q), v_mb), nv, v_ms, v_nval)
                return _loop(builder, q, v_k, v_p, acc, lambda k, acc: column(k, acc, masks))

            acc = _loop(builder, _const(0), v_p, 1, [zero] * (TILE * nv), cell)
        else:
            acc = _loop(builder, _const(0), v_k, 1, [zero] * (TILE * nv), column)
        lane = _vector_masks(builder, md, builder.add(v_lr, v_mb), nv, v_ms, v_nval) if masked else None
        for i in range(TILE):
            bv = _splat(builder, vec, _at(builder, bd, ids_[i]))
            base = builder.add(builder.mul(ids_[i], v_ys), v_yb)
            for v in range(nv):
                ptr = _vptr(builder, yd, builder.add(base, ystep[v]), vec)
                value = builder.fadd(acc[i * nv + v], bv)
                if masked:
                    _masked_store(builder, vec, bits, value, ptr, lane[v], align)
                else:
                    builder.store(value, ptr, align=align)
        return context.get_dummy_value()

    if masked:
        @intrinsic
        def rows_tile_masked(typingctx, w, wbase, K, nr, x, xoff, xbase, y, ids, r0, ystride, ybase, bias, masks,
                             qm, mbase, lrow, p, xvstride, yvstride, mstep, nvalid):
            return types.void(w, types.int64, types.int64, types.int64, x, xoff, types.int64, y, ids, types.int64,
                              types.int64, types.int64, bias, masks, qm, types.int64, types.int64,
                              types.int64, *(types.int64,) * 4), codegen
        return rows_tile_masked

    @intrinsic
    def rows_tile(typingctx, w, wbase, K, nr, x, xoff, xbase, y, ids, r0, ystride, ybase, bias):
        return types.void(w, types.int64, types.int64, types.int64, x, xoff, types.int64, y, ids, types.int64,
                          types.int64, types.int64, bias), codegen
    return rows_tile


def _make_gather_tile(nv: int, nch: int = TILE, masked: bool = False):
    """Input-gradient tile in gather form, nch input channels x nv*LANES lanes of one input pixel: for j < nj
    (block channel c = j0 + j), dx[xoff[c] + xbase + l] += sum_{n<nq} sum_{r<R} w[wbase + r*K + c*p + qv[n]] *
    gy[goff[r] + qoff[n] + gbase + l]. ``qv``/``qoff``: the kernel cells whose output pixel exists, and that
    pixel's offset. A repeated channel (j >= nj) adds zeros, after the real one's store. ``masked``: the NCHW-plane
    form, with (masks, qm, mbase, lrow, first): vector v of cell n reads only the lanes of masks[qm[n] + mbase + v] of
    the gradient, only the lanes of masks[lrow + mbase + v] of dx are written, and a channel c with first[c] != 0 (the
    first of its writers) overwrites dx instead of adding to it; a repeated channel writes nothing. Four more
    (gvstride, dvstride, mstep, nvalid) place the vectors as in the forward tile."""
    def codegen(context, builder, signature, args):
        (a_w, v_wb, v_k, v_r, v_p, v_j0, v_nj, a_qv, a_qo, v_nq, a_g, a_go, v_gb, a_dx, a_xo, v_xb) = args[:16]
        elem, vec, align = _vector(context, signature.args[0].dtype)
        bits = signature.args[0].dtype.bitwidth
        fma = _fma(builder, vec, bits)
        wd, qvd, qod, gd, go, dd, xo = (_data(context, builder, signature.args[i], a) for i, a in
                                        ((0, a_w), (7, a_qv), (8, a_qo), (10, a_g), (11, a_go), (13, a_dx),
                                         (14, a_xo)))
        if masked:
            md, qmd = (_data(context, builder, signature.args[i], args[i]) for i in (16, 17))
            v_mb, v_lr = args[18], args[19]
            v_gvs, v_dvs, v_ms, v_nval = args[21:25]
            gstep = [builder.mul(_const(v), v_gvs) for v in range(nv)]
            dstep = [builder.mul(_const(v), v_dvs) for v in range(nv)]
        else:
            gstep = dstep = [_const(v * LANES) for v in range(nv)]
        chans = [_clamped(builder, j, v_nj, v_j0) for j in range(nch)]
        live = [builder.icmp_signed("<", _const(j), v_nj) for j in range(nch)]
        wcol = [builder.add(v_wb, builder.mul(c, v_p)) for c in chans]
        zero_e = ir.Constant(elem, 0.0)
        zero = ir.Constant(vec, [zero_e] * LANES)

        def cell(n, acc):
            q = _at(builder, qvd, n)
            gq = builder.add(_at(builder, qod, n), v_gb)
            wq = [builder.add(b, q) for b in wcol]
            if masked:  # the cell's lane masks hold for all of its rows
                cmask = _vector_masks(builder, md, builder.add(_at(builder, qmd, n), v_mb), nv, v_ms, v_nval)

            def load(o, v):
                ptr = _vptr(builder, gd, builder.add(o, gstep[v]), vec)
                if masked:
                    return _masked_load(builder, vec, bits, ptr, cmask[v], align)
                return builder.load(ptr, align=align)

            def row(r, acc):
                o = builder.add(_at(builder, go, r), gq)
                gv = [load(o, v) for v in range(nv)]
                wr = builder.mul(r, v_k)
                out = []
                for j in range(nch):
                    wj = builder.select(live[j], _at(builder, wd, builder.add(wq[j], wr)), zero_e)
                    wv = _splat(builder, vec, wj)
                    out += [builder.call(fma, [wv, gv[v], acc[j * nv + v]]) for v in range(nv)]
                return out

            return _loop(builder, _const(0), v_r, 1, acc, row)

        acc = _loop(builder, _const(0), v_nq, 1, [zero] * (nch * nv), cell)
        if masked:
            lane = _vector_masks(builder, md, builder.add(v_lr, v_mb), nv, v_ms, v_nval)
            fd = _data(context, builder, signature.args[20], args[20])
            none = ir.Constant(lane[0].type, [ir.Constant(ir.IntType(1), 0)] * LANES)
        for j in range(nch):
            base = builder.add(_at(builder, xo, chans[j]), v_xb)
            if masked:  # a repeated channel stores nothing; the first group of a channel stores without reading
                first = builder.icmp_signed("!=", _at(builder, fd, chans[j]), _const(0))
                keep = builder.and_(live[j], builder.not_(first))
            for v in range(nv):
                ptr = _vptr(builder, dd, builder.add(base, dstep[v]), vec)
                if masked:
                    old = _masked_load(builder, vec, bits, ptr, builder.select(keep, lane[v], none), align)
                    _masked_store(builder, vec, bits, builder.fadd(old, acc[j * nv + v]), ptr,
                                  builder.select(live[j], lane[v], none), align)
                else:
                    builder.store(builder.fadd(builder.load(ptr, align=align), acc[j * nv + v]), ptr, align=align)
        return context.get_dummy_value()

    base_sig = (types.int64,) * 6
    if masked:
        @intrinsic
        def gather_tile_masked(typingctx, w, wbase, K, R, p, j0, nj, qv, qoff, nq, gy, goff, gbase, dx, xoff, xbase,
                               masks, qm, mbase, lrow, first, gvstride, dvstride, mstep, nvalid):
            return types.void(w, *base_sig, qv, qoff, types.int64, gy, goff, types.int64, dx, xoff, types.int64, masks,
                              qm, types.int64, types.int64, first, *(types.int64,) * 4), codegen
        return gather_tile_masked

    @intrinsic
    def gather_tile(typingctx, w, wbase, K, R, p, j0, nj, qv, qoff, nq, gy, goff, gbase, dx, xoff, xbase):
        return types.void(w, *base_sig, qv, qoff, types.int64, gy, goff, types.int64, dx, xoff,
                          types.int64), codegen
    return gather_tile


def _make_dot_tile(ncols: int, masked: bool = False):
    """Weight-gradient tile, TILE x ncols dot products over ``nrows`` rows of ``rowlen`` contiguous elements
    (a multiple of LANES): for rows r = r0 + min(i, nr - 1) and columns k = k0 + min(j, nk - 1), j < ncols,
    dw[dwbase + r*K + k] += sum_{h<nrows, q<rowlen} gy[goff[r] + h*gstride + q] * x[xoff[k] + h*xstride + q]
    (a repeated row or column adds its sum once: the duplicates' sums are added to a copy that is stored last).
    ``masked``: the NCHW-plane form, with (masks, kstride, xmrow, lrow): the columns are k = k0 + min(j, nk - 1) *
    kstride (one cell's channels), vector v = q / LANES reads only the lanes of masks[xmrow + v] of every column and
    those of masks[lrow + v] of the gradient; the reduction runs vector by vector over the rows, so each vector's
    masks are loaded once. Its TILE x ncols == LANES sums are added as one vector to dw[dwbase + i*ncols + j] (a
    tile-major buffer, ``K`` unused; repeated rows and columns get their own lanes), through a reduction tree
    instead of LANES horizontal sums: short reductions (a few images) then cost little."""
    assert not masked or TILE * ncols == LANES  # the masked form's sums fill exactly one vector

    def codegen(context, builder, signature, args):
        a_g, a_go, v_r0, v_nr, a_x, a_xo, v_k0, v_nk, v_rows, v_len, v_gs, v_xs, a_dw, v_db, v_k = args[:15]
        elem, vec, align = _vector(context, signature.args[0].dtype)
        bits = signature.args[0].dtype.bitwidth
        fma = _fma(builder, vec, bits)
        gd, go, xd, xo, dd = (_data(context, builder, signature.args[i], a) for i, a in
                              ((0, a_g), (1, a_go), (4, a_x), (5, a_xo), (12, a_dw)))
        rows = [_clamped(builder, i, v_nr, v_r0) for i in range(TILE)]
        if masked:
            md = _data(context, builder, signature.args[15], args[15])
            v_ks, v_xm, v_lr = args[16], args[17], args[18]
            cols = [builder.add(v_k0, builder.mul(_clamped(builder, j, v_nk, _const(0)), v_ks)) for j in range(ncols)]
        else:
            cols = [_clamped(builder, j, v_nk, v_k0) for j in range(ncols)]
        gbase = [_at(builder, go, r) for r in rows]
        xbase = [_at(builder, xo, k) for k in cols]
        zero = ir.Constant(vec, [ir.Constant(elem, 0.0)] * LANES)

        def products(gv, xv, acc):
            return [builder.call(fma, [gv[i], xv[j], acc[i * ncols + j]]) for i in range(TILE) for j in range(ncols)]

        def row(h, acc):
            gb = [builder.add(b, builder.mul(h, v_gs)) for b in gbase]
            xb = [builder.add(b, builder.mul(h, v_xs)) for b in xbase]

            def lanes(q, acc):
                gv = [builder.load(_vptr(builder, gd, builder.add(b, q), vec), align=align) for b in gb]
                xv = [builder.load(_vptr(builder, xd, builder.add(b, q), vec), align=align) for b in xb]
                return products(gv, xv, acc)

            return _loop(builder, _const(0), v_len, LANES, acc, lanes)

        def vector(q, acc):
            v = builder.sdiv(q, _const(LANES))
            gm, xm = _mask(builder, md, builder.add(v_lr, v)), _mask(builder, md, builder.add(v_xm, v))
            gq = [builder.add(b, q) for b in gbase]
            xq = [builder.add(b, q) for b in xbase]

            def masked_row(h, acc):
                gh, xh = builder.mul(h, v_gs), builder.mul(h, v_xs)
                gv = [_masked_load(builder, vec, bits, _vptr(builder, gd, builder.add(b, gh), vec), gm, align)
                      for b in gq]
                xv = [_masked_load(builder, vec, bits, _vptr(builder, xd, builder.add(b, xh), vec), xm, align)
                      for b in xq]
                return products(gv, xv, acc)

            return _loop(builder, _const(0), v_rows, 1, acc, masked_row)

        if masked:
            acc = _loop(builder, _const(0), v_len, LANES, [zero] * (TILE * ncols), vector)
        else:
            acc = _loop(builder, _const(0), v_rows, 1, [zero] * (TILE * ncols), row)
        if masked:
            ptr = _vptr(builder, dd, v_db, vec)
            builder.store(builder.fadd(builder.load(ptr, align=align), _tree_sum(builder, acc)), ptr, align=align)
            return context.get_dummy_value()
        reduce_ = cgutils.get_or_insert_function(builder.module, ir.FunctionType(elem, [elem, vec]),
                                                 f"llvm.vector.reduce.fadd.v{LANES}f{bits}")
        # all loads before any store: a repeated (clamped) entry then reads the same old value and stores the
        # same new one, instead of adding its sum twice
        ptrs, sums = [], []
        for i in range(TILE):
            wrow = builder.add(v_db, builder.mul(rows[i], v_k))
            for j in range(ncols):
                ptr = cgutils.gep(builder, dd, builder.add(wrow, cols[j]))
                total = builder.call(reduce_, [ir.Constant(elem, 0.0), acc[i * ncols + j]],
                                     fastmath=("reassoc", "nsz"))
                ptrs.append(ptr)
                sums.append(builder.fadd(builder.load(ptr), total))
        for ptr, value in zip(ptrs, sums):
            builder.store(value, ptr)
        return context.get_dummy_value()

    base_sig = (types.int64,) * 6
    if masked:
        @intrinsic
        def dot_tile_masked(typingctx, gy, goff, r0, nr, x, xoff, k0, nk, nrows, rowlen, gstride, xstride, dw, dwbase,
                            K, masks, kstride, xmrow, lrow):
            return types.void(gy, goff, types.int64, types.int64, x, xoff, *base_sig, dw, types.int64, types.int64,
                              masks, types.int64, types.int64, types.int64), codegen
        return dot_tile_masked

    @intrinsic
    def dot_tile(typingctx, gy, goff, r0, nr, x, xoff, k0, nk, nrows, rowlen, gstride, xstride, dw, dwbase, K):
        return types.void(gy, goff, types.int64, types.int64, x, xoff, *base_sig, dw, types.int64,
                          types.int64), codegen
    return dot_tile


@intrinsic
def vector_sum(typingctx, a, lo, n):
    """a[lo:lo + n].sum() in a's dtype: LANES-wide partial sums, four vectors in flight, the tail lane-masked. (A
    numba loop over the slice, fastmath or not, ran at about scalar speed inside the dW kernel: 2 elements/ns.)"""
    def codegen(context, builder, signature, args):
        arr, v_lo, v_n = args
        elem, vec, align = _vector(context, signature.args[0].dtype)
        bits = signature.args[0].dtype.bitwidth
        d = _data(context, builder, signature.args[0], arr)
        zero = ir.Constant(vec, [ir.Constant(elem, 0.0)] * LANES)
        step = 4 * LANES
        nfull = builder.mul(builder.sdiv(v_n, _const(step)), _const(step))

        def body(i, acc):
            at = builder.add(v_lo, i)
            return [builder.fadd(acc[u], builder.load(_vptr(builder, d, builder.add(at, _const(u * LANES)), vec),
                                                      align=align)) for u in range(4)]

        acc = _loop(builder, _const(0), nfull, step, [zero] * 4, body)
        total = builder.fadd(builder.fadd(acc[0], acc[1]), builder.fadd(acc[2], acc[3]))
        lane = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))

        def tail(i, acc):
            left = _splat(builder, ir.VectorType(_I64, LANES), builder.sub(v_n, i))
            part = _masked_load(builder, vec, bits, _vptr(builder, d, builder.add(v_lo, i), vec),
                                builder.icmp_signed("<", lane, left), align)
            return [builder.fadd(acc[0], part)]

        total, = _loop(builder, nfull, v_n, LANES, [total], tail)
        reduce_ = cgutils.get_or_insert_function(builder.module, ir.FunctionType(elem, [elem, vec]),
                                                 f"llvm.vector.reduce.fadd.v{LANES}f{bits}")
        return builder.call(reduce_, [ir.Constant(elem, 0.0), total], fastmath=("reassoc", "nsz"))

    return a.dtype(a, types.int64, types.int64), codegen


# TILE rows (channels) x nv vectors, one per width of a sub-batch (block_tiles.py); nv = 3, 4 unused with AVX2
rows_tile_1, rows_tile_2, rows_tile_3, rows_tile_4 = (_make_rows_tile(nv) for nv in (1, 2, 3, 4))
gather_tile_1, gather_tile_2, gather_tile_3, gather_tile_4 = (_make_gather_tile(nv) for nv in (1, 2, 3, 4))
# two channels: a group's last channels when fewer than three are left
gather_pair_1, gather_pair_2, gather_pair_3, gather_pair_4 = (_make_gather_tile(nv, 2) for nv in (1, 2, 3, 4))
dot_tile = _make_dot_tile(DOT_COLS)
# the NCHW-plane forms (block_planes.py), always WIDE_NV vectors (masks switch off what lies past the plane):
# lane-masked loads and stores, so shifted reads of an unpadded plane need no padded copy
rows_plane = _make_rows_tile(WIDE_NV, masked=True)
gather_plane, gather_plane_pair = (_make_gather_tile(WIDE_NV, nch, masked=True) for nch in (TILE, 2))
dot_plane = _make_dot_tile(DOT_COLS, masked=True)
