"""SparseConv2d (both kernel layouts) against dense nn.Conv2d autograd."""
import pytest
import torch
from helpers import compare, masked_
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsetrain import SparseConv2d

D = torch.float64
VARIANTS = ["batch-last", "over-width", "batch-last-unpadded", "over-width-unpadded"]


def make(cin, cout, k, sparsity=0.8, seed=0, variant="batch-last", dtype=D, empty_rows=0, **kw):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, dtype=dtype, **kw)
    mask = masked_(conv, sparsity, seed, empty_rows)
    return SparseConv2d.from_dense(conv, mask, variant=variant), conv


GEOMETRIES = [
    dict(k=3, padding=1),
    dict(k=3, padding=0),
    dict(k=3, stride=2, padding=1),
    dict(k=3, stride=3),
    dict(k=(3, 1), padding=(1, 0)),
    dict(k=(1, 5), padding=(0, 2), stride=(1, 2)),
    dict(k=3, dilation=2, padding=2),
    dict(k=3, padding="same"),
    dict(k=4, padding="same", dilation=(1, 2)),  # even kernel: PyTorch pads the extra cell at the end
    dict(k=3, padding="valid"),
    dict(k=1),
    dict(k=5, padding=2, bias=False),
    dict(k=3, padding=1, padding_mode="reflect"),
    dict(k=3, padding=1, padding_mode="circular", stride=2),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()))
def test_geometries(variant, geo):
    geo = dict(geo)
    k = geo.pop("k")
    s, d = make(6, 10, k, variant=variant, **geo)
    compare(s, d, torch.randn(3, 6, 11, 9, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch", [1, 5, 12, 17])
def test_batch_sizes_and_sum_loss(variant, batch):
    s, d = make(8, 12, 3, padding=1, variant=variant, seed=batch)
    compare(s, d, torch.randn(batch, 8, 7, 7, dtype=D), grad_fn=lambda y: y.sum())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95, 1.0])
def test_sparsity_extremes(variant, sparsity):
    s, d = make(5, 7, 3, sparsity, padding=1, variant=variant)
    compare(s, d, torch.randn(4, 5, 6, 6, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_channels_with_no_nonzeros(variant):
    s, d = make(6, 9, 3, 0.7, padding=1, variant=variant, empty_rows=4)
    compare(s, d, torch.randn(2, 6, 8, 8, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("groups", [2, 4])
def test_groups_and_depthwise(variant, groups):
    s, d = make(4, 8, 3, 0.5, padding=1, groups=groups, variant=variant)
    compare(s, d, torch.randn(3, 4, 7, 6, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
def test_channels_last_and_non_contiguous_inputs(variant):
    s, d = make(6, 8, 3, padding=1, variant=variant)
    x = torch.randn(3, 6, 9, 9, dtype=D)
    compare(s, d, x.to(memory_format=torch.channels_last))
    compare(s, d, torch.randn(3, 6, 18, 9, dtype=D)[:, :, ::2])


@pytest.mark.parametrize("variant", VARIANTS)
def test_asymmetric_padding(variant):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, dtype=D)
    masked_(conv, 0.6)
    s = SparseConv2d.from_dense(conv, variant=variant)
    s = SparseConv2d(4, 6, 3, padding=(2, 0, 1, 3), mask=s.mask(), variant=variant, dtype=D)
    with torch.no_grad():
        s.values.copy_(conv.weight[s.mask()])
        s.bias.copy_(conv.bias)
    ref = nn.Sequential(nn.ZeroPad2d((2, 0, 1, 3)), conv)
    x = torch.randn(2, 4, 7, 8, dtype=D, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    torch.testing.assert_close(s(x), ref(x2))
    s(x).sum().backward()
    ref(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(s.values.grad, conv.weight.grad[s.mask()])
    dense = s.to_dense()
    torch.testing.assert_close(dense(x), s(x))


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_batch_and_unbatched_input(variant):
    s, d = make(3, 4, 3, padding=1, variant=variant)
    compare(s, d, torch.randn(0, 3, 5, 5, dtype=D))
    compare(s, d, torch.randn(3, 5, 5, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
def test_more_than_32767_nonzeros_in_one_output_channel(variant):
    s, d = make(4000, 2, 3, 0.0, padding=1, variant=variant)  # 36,000 nonzeros per output channel
    assert s.nnz == 2 * 4000 * 9
    compare(s, d, torch.randn(1, 4000, 3, 3, dtype=D), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_close_to_dense(variant):
    s, d = make(32, 48, 3, 0.9, padding=1, variant=variant, dtype=torch.float32)
    compare(s, d, torch.randn(8, 32, 10, 10), rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(cin=st.integers(1, 9), cout=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
       h=st.integers(4, 12), w=st.integers(4, 12), b=st.integers(1, 6), stride=st.integers(1, 3),
       pad=st.integers(0, 2), dil=st.integers(1, 2), sparsity=st.floats(0.0, 0.99),
       variant=st.sampled_from(VARIANTS), seed=st.integers(0, 9999))
def test_random_geometries(cin, cout, kh, kw, h, w, b, stride, pad, dil, sparsity, variant, seed):
    if h + 2 * pad < dil * (kh - 1) + 1 or w + 2 * pad < dil * (kw - 1) + 1:
        return
    s, d = make(cin, cout, (kh, kw), sparsity, seed, variant, stride=stride, padding=pad, dilation=dil)
    compare(s, d, torch.randn(b, cin, h, w, dtype=D, generator=torch.Generator().manual_seed(seed)))


def test_heuristic_variant_and_dense_backend():
    s, d = make(4, 6, 3, padding=1, variant=None)
    assert s.choose_variant(torch.zeros(1, 4, 7, 7)) == "batch-last"
    assert s.choose_variant(torch.zeros(1, 4, 32, 32)) == "over-width"
    compare(s, d, torch.randn(2, 4, 32, 32, dtype=D))
    s.backend = "dense"
    compare(s, d, torch.randn(2, 4, 7, 7, dtype=D))


def test_input_too_small_and_wrong_channels_are_clear_errors():
    s, _ = make(4, 6, 5)
    with pytest.raises(ValueError, match="too small"):
        s(torch.randn(1, 4, 3, 3, dtype=D))
    with pytest.raises(ValueError, match="input channels"):
        s(torch.randn(1, 5, 8, 8, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
def test_repeated_steps_and_changing_batch_reuse_workspaces_correctly(variant):
    s, d = make(5, 6, 3, 0.6, padding=1, variant=variant)
    for batch in (3, 3, 2, 3):  # same shape twice (cached buffers reused), then a new shape, then back
        s.zero_grad()
        d.zero_grad()
        compare(s, d, torch.randn(batch, 5, 6, 7, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("gradient_layout", ["contiguous", "permuted"])
def test_inner_layer_with_any_output_gradient_layout(variant, gradient_layout):
    """As a middle layer (dX goes on to the op before, not into a leaf's .grad) and with an output gradient that is
    contiguous or a permuted view (the batch-last copy kernels need contiguous tensors; views take torch's copy)."""
    s, d = make(5, 6, 3, 0.6, padding=1, variant=variant)
    with torch.no_grad():
        d.weight.mul_(s.mask())
    g = torch.randn(3, 7, 8, 6, dtype=D)  # (B, H, W, C_O)
    grads = []
    for layer in (s, d):
        x = torch.randn(3, 5, 7, 8, dtype=D, generator=torch.Generator().manual_seed(2), requires_grad=True)
        y = layer(x * 2)
        seen = []
        y.register_hook(lambda gy: seen.append(gy.is_contiguous()))
        if gradient_layout == "permuted":
            (y.permute(0, 2, 3, 1) * g).sum().backward()  # dY reaches the layer as a permuted view
        else:
            (y * g.permute(0, 3, 1, 2).contiguous()).sum().backward()
        assert seen == [gradient_layout == "contiguous"]  # the layout the layer's backward really received
        grads.append((y, x.grad))
    (ys, gxs), (yd, gxd) = grads
    torch.testing.assert_close(ys, yd, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gxs, gxd, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.values.grad, d.weight.grad[s.mask()], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.bias.grad, d.bias.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("wanted", ["input", "weight"])
@pytest.mark.parametrize("batch", [1, 6])
def test_only_one_gradient_wanted(variant, wanted, batch):
    """Frozen weights (dX only) or an input without grad (dW only): the single-gradient paths, next to the fused
    one that computes both."""
    s, d = make(6, 5, 3, 0.6, variant=variant, padding=1)
    with torch.no_grad():
        d.weight.mul_(s.mask())
    x = torch.randn(batch, 6, 7, 9, dtype=D)
    xs, xd = x.clone().requires_grad_(wanted == "input"), x.clone().requires_grad_(wanted == "input")
    s.values.requires_grad_(wanted == "weight")
    d.weight.requires_grad_(wanted == "weight")
    g = torch.randn(batch, 5, 7, 9, dtype=D)
    s(xs).backward(g)
    d(xd).backward(g)
    if wanted == "input":
        torch.testing.assert_close(xs.grad, xd.grad)
        assert s.values.grad is None
    else:
        torch.testing.assert_close(s.values.grad, d.weight.grad[s.mask()])
        assert xs.grad is None
    torch.testing.assert_close(s.bias.grad, d.bias.grad)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_backward_task_splits(variant):
    """One thread (one part over all images), two threads (a part per thread, or the input channels as tasks when
    the batch is smaller than the thread count): the same gradients as dense."""
    before = torch.get_num_threads()
    try:
        for threads, batch in ((1, 5), (2, 5), (2, 1)):
            torch.set_num_threads(threads)
            s, d = make(5, 7, 3, 0.7, variant=variant, padding=1)
            compare(s, d, torch.randn(batch, 5, 6, 8, dtype=D))
    finally:
        torch.set_num_threads(before)
