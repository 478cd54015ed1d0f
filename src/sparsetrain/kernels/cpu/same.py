"""Stride-1 'same' convolution (output plane = input plane) on the unpadded planes: no padded copies at all.

``runs.py`` reads a zero-padded copy of the input so that each nonzero is one contiguous stream over a whole
plane. When the output plane has the input's shape, the unpadded planes serve as well: with rows of ``wv``
elements in both, nonzero p (kernel cell shifted by ``sh`` rows and ``sw`` elements) adds

    y[g, r*plane + j] += vals[p] * x[g, base[p] + j]     for j in [ra*wv + lo, (rb-1)*wv + hi)

with ``base[p]`` = source channel * plane + sh*wv + sw, valid rows [ra, rb) and valid columns [lo, hi) =
[max(0, -sw), wv - max(0, sw)). That is one long contiguous run (it vectorises like ``runs.py``), except that
between two rows it crosses ``|sw|`` positions ("the zone") whose source is the zero padding but which read
the neighbouring row instead. Rather than cut the run into short rows (numba's vector loops then spend most
of their time in scalar remainders) the kernels keep the run long and make the zone add nothing:

* ``spmm_same``  saves the output zone before the runs of a column-shift class and writes it back after:
  exact, whatever the input holds (no subtraction, so an inf in a neighbouring row cannot leak elsewhere).
* ``spmm_sddmm_same`` (dX on the transposed structure and dW from the same loads) copies each tile of the input
  into a per-thread buffer and zeroes *that copy's* zone for the class, so the caller's input is only read
  (a zone product is then 0 times a neighbouring gradient value: exact for finite gradients).
* ``sddmm_same`` (dW at the nonzeros, optionally the bias gradient) zeroes the *gradient's* zone for the class
  and restores it bit for bit afterwards. Each gradient plane is read only by the thread owning its image (or
  its structure rows), so this is race free; the caller's gradient buffer is unchanged when the kernel returns.

Nonzeros of a row are expected sorted by kernel cell (column shift first), so consecutive ones usually share
the shift and are swept four or two at a time (one accumulator pass per four or two FMAs), else one at a
time; where their kernel rows differ, the rows not valid for all of them go one nonzero at a time. ``scratch`` holds one
zone buffer per thread (``numba.get_thread_id()``), at least ``tile_rows * wv`` long. No torch import here.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .runs import JIT, _value


@njit(inline="always")
def _group(sw, p, end):
    """How many of the nonzeros from p on share p's column shift, as a sweep width: 4, 2 or 1."""
    if p + 4 <= end and sw[p] == sw[p + 1] and sw[p] == sw[p + 2] and sw[p] == sw[p + 3]:
        return 4
    if p + 2 <= end and sw[p] == sw[p + 1]:
        return 2
    return 1


@njit(inline="always")
def _sweep(sw, p, end, wv):
    """(n, s, lo, hi) of the sweep starting at nonzero p: its width (``_group``), its column shift, and the output
    columns [lo, hi) of a plane row it covers without wrapping into the next row."""
    s = sw[p]
    return _group(sw, p, end), s, max(0, -s), wv - max(0, s)


@njit(inline="always")
def _save(buf, a, zs, nz, z, wv):
    """buf <- the ``nz`` zones of ``z`` elements of ``a`` (one every ``wv``, from ``zs``)."""
    if z == 1:  # the common case (3x3 kernels over width): a plain strided loop
        for i in range(nz):
            buf[i] = a[zs + i * wv]
        return
    for i in range(nz):
        for k in range(z):
            buf[i * z + k] = a[zs + i * wv + k]


@njit(inline="always")
def _restore(buf, a, zs, nz, z, wv):
    if z == 1:
        for i in range(nz):
            a[zs + i * wv] = buf[i]
        return
    for i in range(nz):
        for k in range(z):
            a[zs + i * wv + k] = buf[i * z + k]


@njit(inline="always")
def _zero(a, zs, nz, z, wv):
    if z == 1:
        for i in range(nz):
            a[zs + i * wv] = 0.0
        return
    for i in range(nz):
        for k in range(z):
            a[zs + i * wv + k] = 0.0


@njit(inline="always")
def _add1(yr, ys, xr, x0, w0, m):
    for k in range(m):
        yr[ys + k] += w0 * xr[x0 + k]


@njit(inline="always")
def _add_rows(yr, ybase, xr, xb, w, lo, hi, wv, ra, rb):
    """One nonzero's run over output rows [ra, rb) (the caller keeps the zones)."""
    if ra < rb:
        j0 = ra * wv + lo
        _add1(yr, np.uint64(ybase + j0), xr, np.uint64(xb + j0), w, np.uint64((rb - 1) * wv + hi - j0))


@njit(inline="always")
def _dot_rows(gr, gbase, xr, xb, lo, hi, wv, ra, rb, acc):
    """acc + one nonzero's products over output rows [ra, rb) (the caller zeroes the gradient's zones)."""
    if ra < rb:
        j0 = ra * wv + lo
        gs = np.uint64(gbase + j0)
        x0 = np.uint64(xb + j0)
        for k in range(np.uint64((rb - 1) * wv + hi - j0)):
            acc += gr[gs + k] * xr[x0 + k]
    return acc


@njit(inline="always")
def _common_rows(rlo, rhi, p, n, o0, o1):
    """The output rows of tile [o0, o1) valid for all of nonzeros p..p+n-1."""
    ra = o0
    rb = o1
    for q in range(p, p + n):
        ra = max(ra, rlo[q])
        rb = min(rb, rhi[q])
    return ra, rb


@njit(inline="always")
def _stream_band(a, n_planes, plane, wv, hgt, o0, o1, sums, slot):
    """Read rows [o0 - 1, o1 + 1) of each of ``a``'s planes once, in memory order, so the band is in cache before
    the runs read it plane by plane in the structure's order (which starts a new miss stream at every plane);
    with rows in ``sums``, adds each plane's rows [o0, o1) into ``sums[slot]``. Returns a value for the caller
    to keep, so the halo's reads are not optimised away."""
    keep = 0.0
    want = sums.shape[0] > 0
    h0 = max(0, o0 - 1)
    h1 = min(hgt, o1 + 1)
    for c in range(n_planes):
        b = c * plane
        total = 0.0
        for k in range(np.uint64(b + o0 * wv), np.uint64(b + o1 * wv)):
            total += a[k]
        for k in range(np.uint64(b + h0 * wv), np.uint64(b + o0 * wv)):
            keep += a[k]
        for k in range(np.uint64(b + o1 * wv), np.uint64(b + h1 * wv)):
            keep += a[k]
        if want:
            sums[slot, c] += total
        else:
            keep += total
    return keep


@njit(**JIT)
def spmm_same(x, ptr, base, sw, rlo, rhi, vals, bias, y, wv, hgt, tile_rows, scratch, threads):
    """y = bias + sparse rows times the shifted planes of ``x``; see the module docstring. ``x`` (G, C*plane),
    ``y`` (G, R*plane), plane = hgt*wv. Parallel over (image, row tile) items, and structure rows when there are
    fewer items than twice ``threads``."""
    G = x.shape[0]
    R = ptr.shape[0] - 1
    plane = hgt * wv
    ntiles = (hgt + tile_rows - 1) // tile_rows
    items = G * ntiles
    # tasks: (image, row tile) items, each over all rows after streaming its band of x in; only with fewer items
    # than twice the threads are the rows split too (a small input, which is in cache anyway: no stream)
    chunks = max(1, min(R, (2 * threads + items - 1) // items))
    for task in prange(items * chunks):
        item = task // chunks
        ck = task - item * chunks
        g = item // ntiles
        bt = item - g * ntiles
        o0 = bt * tile_rows
        o1 = min(hgt, o0 + tile_rows)
        xr = x[g]
        yr = y[g]
        buf = scratch[numba.get_thread_id()]
        if chunks == 1:
            buf[0] = _stream_band(xr, x.shape[1] // plane, plane, wv, hgt, o0, o1, y[:0], 0)  # no sums
        for r in range(ck * R // chunks, (ck + 1) * R // chunks):
            ybase = r * plane
            bo = bias[r]
            for k in range(np.uint64(ybase + o0 * wv), np.uint64(ybase + o1 * wv)):
                yr[k] = bo
            p = ptr[r]
            end = ptr[r + 1]
            nzt = o1 - o0 - 1  # zones between the tile's rows
            z = zs = s = 0
            while p < end:
                if z and sw[p] != s:  # the shift class ends: its zones get their saved values back
                    _restore(buf, yr, zs, nzt, z, wv)
                    z = 0
                n, s, lo, hi = _sweep(sw, p, end, wv)
                if lo < hi:
                    if not z:  # a new shift class: save its zones once for all its runs
                        z = wv - hi + lo
                        zs = ybase + o0 * wv + hi
                        _save(buf, yr, zs, nzt, z, wv)
                    ra, rb = _common_rows(rlo, rhi, p, n, o0, o1)
                    if n > 1 and ra < rb:
                        j0 = ra * wv + lo
                        m = np.uint64((rb - 1) * wv + hi - j0)
                        ys = np.uint64(ybase + j0)
                        x0 = np.uint64(base[p] + j0)
                        x1 = np.uint64(base[p + 1] + j0)
                        w0 = vals[p]
                        w1 = vals[p + 1]
                        if n == 4:
                            x2 = np.uint64(base[p + 2] + j0)
                            x3 = np.uint64(base[p + 3] + j0)
                            w2 = vals[p + 2]
                            w3 = vals[p + 3]
                            for k in range(m):
                                yr[ys + k] += w0 * xr[x0 + k] + w1 * xr[x1 + k] + w2 * xr[x2 + k] + w3 * xr[x3 + k]
                        else:
                            for k in range(m):
                                yr[ys + k] += w0 * xr[x0 + k] + w1 * xr[x1 + k]
                    else:
                        ra = rb = o0  # nothing in common: every nonzero below takes all its rows
                    for q in range(p, p + n):  # rows valid for q but not for the whole sweep (kernel rows differ)
                        _add_rows(yr, ybase, xr, base[q], vals[q], lo, hi, wv, max(rlo[q], o0), min(ra, rhi[q]))
                        _add_rows(yr, ybase, xr, base[q], vals[q], lo, hi, wv, max(rb, rlo[q], o0), min(rhi[q], o1))
                p += n
            if z:
                _restore(buf, yr, zs, nzt, z, wv)


@njit(**JIT)
def sddmm_same(x, gy, ptr, base, sw, rlo, rhi, dw_part, db_part, wv, hgt, tile_rows, parts, by_image, scratch):
    """Weight gradient at the nonzeros over the runs of ``spmm_same``, and the bias gradient (the plane sums of
    ``gy``) when ``db_part`` has rows. With ``by_image`` the images are split among ``parts`` parts, each
    summing into its own row of ``dw_part`` (nnz,) and ``db_part`` (R,) (the caller adds the rows up; every part
    then reads only its images); otherwise the structure rows are split and all write row 0, each its own
    entries. ``gy`` is restored exactly before returning."""
    G = x.shape[0]
    R = ptr.shape[0] - 1
    plane = hgt * wv
    ntiles = (hgt + tile_rows - 1) // tile_rows
    want_db = db_part.shape[0] > 0
    for part_ in prange(parts):
        part = np.int64(part_)  # prange's index may be unsigned: keep the arithmetic below in int64
        buf = scratch[numba.get_thread_id()]
        if by_image:
            g_lo, g_hi, r_lo, r_hi, slot = part * G // parts, (part + 1) * G // parts, 0, R, part
        else:
            g_lo, g_hi, r_lo, r_hi, slot = 0, G, part * R // parts, (part + 1) * R // parts, np.int64(0)
        dws = dw_part[slot]
        for p in range(ptr[r_lo], ptr[r_hi]):
            dws[p] = 0.0
        if want_db:
            for r in range(r_lo, r_hi):
                db_part[slot, r] = 0.0
        for g in range(g_lo, g_hi):
            xr = x[g]
            gr = gy[g]
            for bt in range(ntiles):
                o0 = bt * tile_rows
                o1 = min(hgt, o0 + tile_rows)
                for r in range(r_lo, r_hi):
                    gbase = r * plane
                    if want_db:  # before any zone is zeroed: the whole tile of the plane
                        acc = db_part[slot, r]
                        for k in range(np.uint64(gbase + o0 * wv), np.uint64(gbase + o1 * wv)):
                            acc += gr[k]
                        db_part[slot, r] = acc
                    p = ptr[r]
                    end = ptr[r + 1]
                    nzt = o1 - o0 - 1
                    z = zs = s = 0
                    while p < end:
                        if z and sw[p] != s:
                            _restore(buf, gr, zs, nzt, z, wv)
                            z = 0
                        n, s, lo, hi = _sweep(sw, p, end, wv)
                        if lo < hi:
                            if not z:  # a new shift class: its zones of the gradient read as zero meanwhile
                                z = wv - hi + lo
                                zs = gbase + o0 * wv + hi
                                _save(buf, gr, zs, nzt, z, wv)
                                _zero(gr, zs, nzt, z, wv)
                            ra, rb = _common_rows(rlo, rhi, p, n, o0, o1)
                            if n > 1 and ra < rb:
                                j0 = ra * wv + lo
                                m = np.uint64((rb - 1) * wv + hi - j0)
                                gs = np.uint64(gbase + j0)
                                x0 = np.uint64(base[p] + j0)
                                x1 = np.uint64(base[p + 1] + j0)
                                a0 = dws[p]  # carries the dtype and the sum over earlier images and tiles
                                a1 = dws[p + 1]
                                if n == 4:
                                    x2 = np.uint64(base[p + 2] + j0)
                                    x3 = np.uint64(base[p + 3] + j0)
                                    a2 = dws[p + 2]
                                    a3 = dws[p + 3]
                                    for k in range(m):
                                        gv = gr[gs + k]
                                        a0 += gv * xr[x0 + k]
                                        a1 += gv * xr[x1 + k]
                                        a2 += gv * xr[x2 + k]
                                        a3 += gv * xr[x3 + k]
                                    dws[p + 2] = a2
                                    dws[p + 3] = a3
                                else:
                                    for k in range(m):
                                        gv = gr[gs + k]
                                        a0 += gv * xr[x0 + k]
                                        a1 += gv * xr[x1 + k]
                                dws[p] = a0
                                dws[p + 1] = a1
                            else:
                                ra = rb = o0
                            for q in range(p, p + n):
                                acc = _dot_rows(gr, gbase, xr, base[q], lo, hi, wv, max(rlo[q], o0), min(ra, rhi[q]),
                                                dws[q])
                                dws[q] = _dot_rows(gr, gbase, xr, base[q], lo, hi, wv, max(rb, rlo[q], o0),
                                                  min(rhi[q], o1), acc)
                        p += n
                    if z:
                        _restore(buf, gr, zs, nzt, z, wv)


@njit(inline="always")
def _add_dot_rows(yr, ybase, sr, sb, xt, xoff, w, lo, hi, wv, ra, rb, acc):
    """One nonzero over output rows [ra, rb): its weighted stream into ``yr`` and acc + stream . ``xt``."""
    if ra < rb:
        j0 = ra * wv + lo
        ys = np.uint64(ybase + j0)
        s0 = np.uint64(sb + j0)
        x0 = np.uint64(j0 - xoff)
        for k in range(np.uint64((rb - 1) * wv + hi - j0)):
            s = sr[s0 + k]
            yr[ys + k] += w * s
            acc += xt[x0 + k] * s
    return acc


@njit(**JIT)
def spmm_sddmm_same(src, ptr, base, sw, rlo, rhi, vals, vidx, xs, perm, y, dw, dw_part, db_part, wv, hgt, tile_rows,
                    scratch, xscratch, by_group):
    """``spmm_same`` (without bias) on the transposed structure and, from the same loads of ``src``, the weight
    gradient: ``dw[perm[p]] = sum over p's valid positions j of src[g, base[p] + j] * xs[g, r*plane + j]``.

    ``xs`` is the layer input in ``y``'s layout. Each task copies its tile of ``xs`` into its thread's row of
    ``xscratch`` and zeroes there the zones of the shift class being swept, so the long runs add nothing to dW
    outside the valid positions while ``xs`` itself is only read (``y``'s zones are kept as in ``spmm_same``).
    Tasks as in ``spmm_sddmm_runs``: the rows, or with ``by_group`` the P = ``dw_part.shape[0]`` parts of the
    images, each over every row; the parts are added into ``dw`` afterwards, so the result does not depend on the
    threads. With ``by_group`` each part streams every row tile of its images' ``src`` in (``_stream_band``) before
    its rows read it, and with rows in ``db_part`` (P, planes of ``src``) sums it into ``db_part[k]`` on the way
    (the bias gradient): the gradient is then read from memory once, not a second time by a separate sum."""
    G = src.shape[0]
    R = ptr.shape[0] - 1
    P = dw_part.shape[0]
    plane = hgt * wv
    ntiles = (hgt + tile_rows - 1) // tile_rows
    tasks = P if by_group else R
    n_src = src.shape[1] // plane
    for task_ in prange(tasks):
        task = np.int64(task_)
        part, r_lo, r_hi = (task, np.int64(0), np.int64(R)) if by_group else (np.int64(0), task, task + 1)
        acc = dw_part[part]
        for p in range(ptr[r_lo], ptr[r_hi]):
            acc[p] = 0.0
        if by_group:
            for o in range(db_part.shape[1] if db_part.shape[0] else 0):
                db_part[part, o] = 0.0
        buf = scratch[numba.get_thread_id()]
        xt = xscratch[numba.get_thread_id()]
        for g in range(part * G // P, (part + 1) * G // P):
            sr = src[g]
            xr = xs[g]
            yr = y[g]
            for bt in range(ntiles):
                o0 = bt * tile_rows
                o1 = min(hgt, o0 + tile_rows)
                nzt = o1 - o0 - 1
                if by_group:  # this part's own image: stream its gradient band in (summing the bias gradient)
                    buf[0] = _stream_band(sr, n_src, plane, wv, hgt, o0, o1, db_part, part)
                for r in range(r_lo, r_hi):
                    ybase = r * plane
                    xoff = o0 * wv  # xt[j - xoff] = xs[g, ybase + j] for the tile's plane positions j
                    for k in range(np.uint64(o1 * wv - xoff)):
                        yr[np.uint64(ybase + xoff) + k] = 0.0
                        xt[k] = xr[np.uint64(ybase + xoff) + k]
                    p = ptr[r]
                    end = ptr[r + 1]
                    z = zs = s = 0
                    while p < end:
                        if z and sw[p] != s:  # the class ends: y's zones back, xt's zones back to the input
                            _restore(buf, yr, ybase + xoff + zs, nzt, z, wv)
                            for i in range(nzt):
                                for c in range(z):
                                    xt[zs + i * wv + c] = xr[ybase + xoff + zs + i * wv + c]
                            z = 0
                        n, s, lo, hi = _sweep(sw, p, end, wv)
                        if lo < hi:
                            if not z:  # a new shift class: keep y's zones, and let xt's read as zero
                                z = wv - hi + lo
                                zs = hi  # zone offset from the tile's first position
                                _save(buf, yr, ybase + xoff + zs, nzt, z, wv)
                                _zero(xt, zs, nzt, z, wv)
                            ra, rb = _common_rows(rlo, rhi, p, n, o0, o1)
                            if n > 1 and ra < rb:
                                j0 = ra * wv + lo
                                m = np.uint64((rb - 1) * wv + hi - j0)
                                ys = np.uint64(ybase + j0)
                                x0 = np.uint64(j0 - xoff)
                                s0 = np.uint64(base[p] + j0)
                                s1 = np.uint64(base[p + 1] + j0)
                                w0 = _value(vals, vidx, p)
                                w1 = _value(vals, vidx, p + 1)
                                a0 = acc[p]
                                a1 = acc[p + 1]
                                if n == 4:
                                    s2 = np.uint64(base[p + 2] + j0)
                                    s3 = np.uint64(base[p + 3] + j0)
                                    w2 = _value(vals, vidx, p + 2)
                                    w3 = _value(vals, vidx, p + 3)
                                    a2 = acc[p + 2]
                                    a3 = acc[p + 3]
                                    for k in range(m):
                                        v0 = sr[s0 + k]
                                        v1 = sr[s1 + k]
                                        v2 = sr[s2 + k]
                                        v3 = sr[s3 + k]
                                        xv = xt[x0 + k]
                                        yr[ys + k] += (w0 * v0 + w1 * v1) + (w2 * v2 + w3 * v3)
                                        a0 += xv * v0
                                        a1 += xv * v1
                                        a2 += xv * v2
                                        a3 += xv * v3
                                    acc[p + 2] = a2
                                    acc[p + 3] = a3
                                else:
                                    for k in range(m):
                                        v0 = sr[s0 + k]
                                        v1 = sr[s1 + k]
                                        xv = xt[x0 + k]
                                        yr[ys + k] += w0 * v0 + w1 * v1
                                        a0 += xv * v0
                                        a1 += xv * v1
                                acc[p] = a0
                                acc[p + 1] = a1
                            else:
                                ra = rb = o0  # nothing in common: every nonzero below takes all its rows
                            for q in range(p, p + n):  # rows valid for q but not for the whole sweep
                                w = _value(vals, vidx, q)
                                a = _add_dot_rows(yr, ybase, sr, base[q], xt, xoff, w, lo, hi, wv,
                                                  max(rlo[q], o0), min(ra, rhi[q]), acc[q])
                                acc[q] = _add_dot_rows(yr, ybase, sr, base[q], xt, xoff, w, lo, hi, wv,
                                                       max(rb, rlo[q], o0), min(rhi[q], o1), a)
                        p += n
                    if z:
                        _restore(buf, yr, ybase + xoff + zs, nzt, z, wv)
    for p in prange(perm.shape[0]):
        total = dw_part[0, p]
        for k in range(1, P):
            total += dw_part[k, p]
        dw[perm[p]] = total
