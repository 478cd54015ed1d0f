"""The fused input+weight gradient kernel ``spmm_sddmm_runs`` against a direct NumPy evaluation of its definition,
over random structures (empty rows, several tiles, one or more image parts, weights read in place or gathered)."""
import numpy as np
from hypothesis import given, settings, strategies as st

from sparsetrain.kernels.cpu import spmm_sddmm_runs


def reference(src, ptr, off, w, xs, perm, t0, n, lout):
    """y and dw from the docstring's formulas, one element at a time (w[p] is the weight of structure entry p)."""
    G, R = src.shape[0], ptr.shape[0] - 1
    y = np.zeros((G, R * lout))
    dw = np.zeros(perm.shape[0])
    for g in range(G):
        for r in range(R):
            for p in range(ptr[r], ptr[r + 1]):
                stream = src[g, off[p] + t0:off[p] + t0 + n].astype(np.float64)
                y[g, r * lout + t0:r * lout + t0 + n] += w[p] * stream
                dw[perm[p]] += stream @ xs[g, r * lout + t0:r * lout + t0 + n]
    return y, dw


@settings(max_examples=60, deadline=None)
@given(G=st.integers(1, 5), R=st.integers(1, 7), n=st.integers(1, 40), t0=st.integers(0, 3), tile=st.integers(1, 50),
       density=st.floats(0.0, 1.0), parts=st.integers(1, 3), by_group=st.booleans(), indexed=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_fused_gradients_match_reference(G, R, n, t0, tile, density, parts, by_group, indexed, dtype, seed):
    rng = np.random.default_rng(seed)
    parts = min(parts, G) if by_group else 1  # by rows: one task per row, one part
    lout = t0 + n + rng.integers(0, 3)  # y's plane may be longer than the run
    counts = (rng.random((R, 6)) < density).sum(1)  # 0..6 nonzeros per row, rows may be empty
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(ptr[-1])
    ls = 30 + t0 + n
    off = rng.integers(0, ls - t0 - n + 1, nnz).astype(np.int64)
    src = rng.standard_normal((G, ls)).astype(dtype)
    xs = rng.standard_normal((G, R * lout)).astype(dtype)
    values = rng.standard_normal(nnz).astype(dtype)
    perm = rng.permutation(nnz).astype(np.int64)
    # weights read through perm (in place) or already gathered into the structure's order (empty index)
    vals, vidx = (values, perm) if indexed else (values[perm].copy(), np.empty(0, np.int64))
    y = np.full((G, R * lout), 7.0, dtype)  # outside [t0, t0 + n) of each row the kernel must not write
    dw = np.full(nnz, np.nan, dtype)
    spmm_sddmm_runs(src, ptr, off, vals, vidx, xs, perm, y, dw, np.empty((parts, nnz), dtype), t0, n, tile, by_group)
    y_ref, dw_ref = reference(src, ptr, off, values[perm], xs, perm, t0, n, lout)
    inside = np.zeros(R * lout, bool)
    for r in range(R):
        inside[r * lout + t0:r * lout + t0 + n] = True
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y[:, inside], y_ref[:, inside], **tol)
    assert (y[:, ~inside] == 7.0).all()
    np.testing.assert_allclose(dw, dw_ref, **tol)
