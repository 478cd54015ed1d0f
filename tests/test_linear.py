"""SparseLinear against dense nn.Linear autograd: output, dX, dW at the nonzeros, bias gradient."""
import pytest
import torch
from helpers import compare, masked_
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsetrain import SparseLinear

D = torch.float64


def make(k, m, sparsity, bias=True, seed=0, empty_rows=0, dtype=D):
    torch.manual_seed(seed)
    lin = nn.Linear(k, m, bias=bias, dtype=dtype)
    mask = masked_(lin, sparsity, seed, empty_rows)
    return SparseLinear.from_dense(lin, mask), lin


@pytest.mark.parametrize("batch", [1, 5, 12, 17, 64])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_batches_and_sparsities(batch, sparsity):
    s, d = make(33, 47, sparsity, seed=batch)
    compare(s, d, torch.randn(batch, 33, dtype=D))


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 70), m=st.integers(1, 70), b=st.integers(1, 40), sparsity=st.floats(0.0, 0.999),
       bias=st.booleans(), seed=st.integers(0, 10_000))
def test_random_shapes(k, m, b, sparsity, bias, seed):
    s, d = make(k, m, sparsity, bias, seed)
    compare(s, d, torch.randn(b, k, dtype=D, generator=torch.Generator().manual_seed(seed)))


def test_full_sparsity_gives_bias_only():
    s, d = make(20, 10, 1.0)
    assert s.nnz == 0
    y = compare(s, d, torch.randn(4, 20, dtype=D))
    torch.testing.assert_close(y, d.bias.detach().expand(4, 10))


def test_rows_with_no_nonzeros():
    s, d = make(30, 25, 0.7, empty_rows=11)
    compare(s, d, torch.randn(9, 30, dtype=D))


def test_loss_sum_and_leading_dims():
    s, d = make(16, 12, 0.8)
    compare(s, d, torch.randn(3, 4, 5, 16, dtype=D), grad_fn=lambda y: y.sum())


def test_one_dimensional_input():
    s, d = make(16, 12, 0.8)
    compare(s, d, torch.randn(16, dtype=D))


def test_non_contiguous_inputs():
    s, d = make(24, 18, 0.85)
    base = torch.randn(24, 40, dtype=D)
    compare(s, d, base.t())  # a transposed view
    compare(s, d, torch.randn(10, 48, dtype=D)[:, ::2])  # strided columns


def test_chained_layers_pass_transposed_views():
    s1, d1 = make(20, 30, 0.8, seed=1)
    s2, d2 = make(30, 10, 0.8, seed=2)
    x = torch.randn(7, 20, dtype=D)
    ys = s2(torch.relu(s1(x)))
    yd = d2(torch.relu(d1(x)))
    torch.testing.assert_close(ys, yd)
    ys.sum().backward()
    yd.sum().backward()
    torch.testing.assert_close(s1.values.grad, d1.weight.grad[s1.mask()])


def test_leaf_input_gradient_is_contiguous_and_inner_gradient_stays_transposed():
    """A leaf input gets a contiguous .grad (no strided copy by AccumulateGrad); between layers the input gradient
    flows on as the transposed view, and both agree with dense autograd."""
    s1, d1 = make(20, 30, 0.8, seed=3)
    s2, d2 = make(30, 10, 0.8, seed=4)
    x = torch.randn(9, 20, dtype=D)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    seen = []
    hs = s1(xs)
    hs.register_hook(seen.append)
    (s2(hs) ** 2).sum().backward()
    (d2(d1(xd)) ** 2).sum().backward()
    assert xs.grad.is_contiguous()
    assert seen[0].t().is_contiguous()  # the gradient reaching s1: the transposed kernel output, not copied
    torch.testing.assert_close(xs.grad, xd.grad)
    torch.testing.assert_close(s1.values.grad, d1.weight.grad[s1.mask()])


@pytest.mark.parametrize("k,b,dtype", [(32, 8, D), (64, 19, D), (70, 4100, D), (97, 1, D), (5, 33, D),
                                       (96, 23, torch.float32)])
def test_leaf_gradient_written_row_major_by_the_fused_pass(k, b, dtype):
    """A leaf input's gradient comes straight from the fused dX+dW pass, written row-major: whole 32-feature blocks
    through register-tile transposes, a partial last block, batch edges, more than one 4096-column run tile."""
    s, d = make(k, 23, 0.6, seed=k + b, dtype=dtype)
    tol = {} if dtype == D else dict(rtol=1e-5, atol=1e-5)
    compare(s, d, torch.randn(b, k, dtype=dtype), **tol)


def test_empty_batch():
    s, d = make(8, 6, 0.5)
    compare(s, d, torch.randn(0, 8, dtype=D))


def test_input_without_grad_still_trains_weights():
    s, d = make(8, 6, 0.5)
    compare(s, d, torch.randn(5, 8, dtype=D), needs_x_grad=False)


def test_float32_close_to_float64_reference():
    s, d = make(300, 200, 0.9, dtype=torch.float32)
    compare(s, d, torch.randn(64, 300), rtol=1e-4, atol=1e-5)


def test_dtype_mismatch_is_refused_not_downcast():
    s, _ = make(8, 6, 0.5, dtype=torch.float32)
    with pytest.raises(TypeError, match="dtype"):
        s(torch.randn(3, 8, dtype=torch.float64))


def test_wrong_in_features_names_the_size():
    s, _ = make(8, 6, 0.5)
    with pytest.raises(ValueError, match="last dimension 8"):
        s(torch.randn(3, 9, dtype=D))


def test_dense_backend_matches():
    s, d = make(20, 10, 0.8)
    s.backend = "dense"
    compare(s, d, torch.randn(6, 20, dtype=D))


def test_sgd_step_matches_masked_dense_step():
    s, d = make(12, 8, 0.75)
    mask = s.mask()
    x = torch.randn(4, 12, dtype=D)
    for mod in (s, d):
        opt = torch.optim.SGD(mod.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            opt.zero_grad()
            mod(x).pow(2).sum().backward()
            if mod is d:
                d.weight.grad.mul_(mask)  # what a masked dense trainer does
            opt.step()
    torch.testing.assert_close(s.to_dense().weight, d.weight)
    assert len(s.values) == int(mask.sum())


def test_kernels_follow_torch_thread_count():
    """Every change of torch's thread count reaches numba, back and forth (sync_threads remembers the last one), and
    in another Python thread too (numba's count is per thread)."""
    import threading

    import numba
    before = torch.get_num_threads()
    two = min(2, numba.config.NUMBA_NUM_THREADS)
    s, d = make(16, 8, 0.5)
    try:
        for n in (1, two, 1):
            torch.set_num_threads(n)
            s.zero_grad(set_to_none=True)
            d.zero_grad(set_to_none=True)
            compare(s, d, torch.randn(4, 16, dtype=D))
            assert numba.get_num_threads() == n
        seen = []

        def worker():
            s(torch.randn(3, 16, dtype=D))
            seen.append((numba.get_num_threads(), min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen[0][0] == seen[0][1]
    finally:
        torch.set_num_threads(before)
