"""An 8x8 register transpose for the data-movement kernels, written as LLVM vector shuffles.

numba's loop vectoriser turns a transpose into scalar moves (two or more instructions per element): every
transpose in the sparse layers (a linear layer's activations, the batch-last copies of a conv, HRBP's
batch-last layout) ran at a sixth of a plain copy's speed. ``tile8`` loads eight rows of eight elements as
vectors, swaps the off-diagonal sub-blocks at scales 4, 2 and 1 (24 two-input shuffles, which LLVM lowers to
the target's unpack/permute instructions on SSE, AVX2 and AVX-512 alike) and stores eight vectors. No torch
import here.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8


def _masks(k: int) -> tuple[list[int], list[int]]:
    """Shuffle masks of one scale ``k``: row i (bit k clear) takes its partner's elements e ^ k where bit k of e is
    set; the partner row takes row i's elements e ^ k where bit k of e is clear (indices >= 8 name the 2nd vector)."""
    low = [e if not e & k else LANES + (e ^ k) for e in range(LANES)]
    high = [(e ^ k) if not e & k else LANES + e for e in range(LANES)]
    return low, high


@intrinsic
def tile8(typingctx, src, s0, s_stride, dst, d0, d_stride):
    """dst[d0 + j*d_stride + i] = src[s0 + i*s_stride + j] for i, j < 8 (1-D contiguous arrays of one float
    dtype; offsets in elements, unchecked: the caller keeps all 64 reads and writes in bounds)."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype
            and isinstance(src.dtype, types.Float) and src.ndim == 1 and dst.ndim == 1):
        return None
    sig = types.void(src, types.int64, types.int64, dst, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        a_src, o_src, st_src, a_dst, o_dst, st_dst = args
        elem = context.get_data_type(signature.args[0].dtype)
        vec = ir.VectorType(elem, LANES)
        src_data = context.make_array(signature.args[0])(context, builder, a_src).data
        dst_data = context.make_array(signature.args[3])(context, builder, a_dst).data
        i64 = ir.IntType(64)
        align = signature.args[0].dtype.bitwidth // 8  # element alignment only: rows start anywhere
        rows = []
        for i in range(LANES):
            idx = builder.add(o_src, builder.mul(st_src, ir.Constant(i64, i)))
            ptr = builder.bitcast(cgutils.gep(builder, src_data, idx), vec.as_pointer())
            rows.append(builder.load(ptr, align=align))
        for k in (4, 2, 1):
            low, high = (ir.Constant(ir.VectorType(ir.IntType(32), LANES), m) for m in _masks(k))
            nxt = list(rows)
            for i in range(LANES):
                if i & k:
                    continue
                nxt[i] = builder.shuffle_vector(rows[i], rows[i | k], low)
                nxt[i | k] = builder.shuffle_vector(rows[i], rows[i | k], high)
            rows = nxt
        for j in range(LANES):
            idx = builder.add(o_dst, builder.mul(st_dst, ir.Constant(i64, j)))
            ptr = builder.bitcast(cgutils.gep(builder, dst_data, idx), vec.as_pointer())
            builder.store(rows[j], ptr, align=align)
        return context.get_dummy_value()

    return sig, codegen
