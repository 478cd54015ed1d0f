"""The data-movement helpers the ops lean on: blocked transposes (contiguous and strided sources), the batch-last
conversions and the parallel gather, against torch on many shapes (including sizes that are not multiples of 8)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sparsetrain.kernels.cpu import pad_batch_last, pad_planes, unpad_batch_first
from sparsetrain.ops.common import batch_first, batch_last, taken, transposed


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 70), dtype=st.sampled_from([torch.float32, torch.float64]),
       strided=st.booleans())
def test_transposed_matches_torch(rows, cols, dtype, strided):
    t = torch.randn(rows, 2 * cols if strided else cols, dtype=dtype)
    if strided:
        t = t[:, ::2]  # not contiguous: the strided kernel
    out = transposed(t)
    assert out.is_contiguous() and out.shape == (t.shape[1], t.shape[0])
    assert torch.equal(out, t.t())


@pytest.mark.parametrize("shape", [(902, 771), (77, 1031), (64, 64), (8, 4096), (4099, 9), (513, 520),
                                   (2048, 64), (16387, 61), (3000, 128), (2051, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transposed_register_tiles_all_orders(shape, dtype):
    """Wide sources take the row-strip order, tall ones the 64 x 64 blocks, tall and narrow ones (at least 2048
    rows, at most 128 columns) blocks of 128 rows; edges that are not whole tiles are scalar. Every element lands
    once (the destination starts as NaN)."""
    t = torch.randn(*shape, dtype=dtype)
    out = torch.full((shape[1], shape[0]), float("nan"), dtype=dtype)
    assert transposed(t, out) is out and torch.equal(out, t.t())


def test_transposed_large_and_into_a_workspace():
    t = torch.randn(902, 771)
    ws = torch.empty(771, 902)
    assert transposed(t, ws) is ws and torch.equal(ws, t.t())
    view = torch.randn(50, 30).t()
    assert transposed(view).data_ptr() == view.data_ptr()  # already a transposed view: no copy


@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (9, 5, 7, 3), (16, 8, 4, 4)])
def test_batch_last_and_back(shape):
    x = torch.randn(*shape)
    xt = batch_last(x)
    assert xt.is_contiguous() and torch.equal(xt, x.permute(1, 2, 3, 0))
    assert batch_last(xt.permute(3, 0, 1, 2)).data_ptr() == xt.data_ptr()  # a batch-last view is used as it is
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch_last(cl), xt)  # other layouts: torch's copy
    back = batch_first(xt)
    assert back.is_contiguous() and torch.equal(back, x)


def test_taken_gathers_in_order():
    v = torch.randn(4, 5, 6)
    perm = torch.randperm(v.numel())
    assert torch.equal(taken(v, perm), v.reshape(-1)[perm])
    assert taken(v, perm[:0]).numel() == 0


def _check_pad_and_unpad(b, c, h, w, pt, pb, pl, extra, dtype, gap=3):
    """Every element of each plane is written: the image batch-last at (pt, pl), zeros everywhere else (padding
    and extra tail columns), and nothing outside the planes (``gap`` elements between them; with no gap and no
    padding the copies take their unstaged path); the channel sums when asked for; unpadding reads the image back
    batch-first."""
    x = torch.randn(b, c, h, w, dtype=dtype)
    hp, wp, base = h + pt + pb, w + pl + extra, 5
    cstride = hp * wp * b + gap
    dst = torch.full((base + c * cstride,), float("nan"), dtype=dtype)
    sums = torch.full((c,), float("nan"), dtype=dtype)
    pad_batch_last(x.numpy(), dst.numpy(), base, cstride, hp, wp, pt, pl, sums.numpy())
    tol = 1e-12 if dtype == torch.float64 else 1e-6  # summed in float64: float32 sums within rounding
    torch.testing.assert_close(sums, x.double().sum((0, 2, 3)).to(dtype), rtol=tol, atol=tol)  # dy's bias gradient
    again = torch.full_like(dst, float("nan"))
    pad_batch_last(x.numpy(), again.numpy(), base, cstride, hp, wp, pt, pl, sums[:0].numpy())  # no sums wanted
    assert torch.equal(again.nan_to_num(7.0), dst.nan_to_num(7.0))
    want = torch.zeros(c, hp, wp, b, dtype=dtype)
    want[:, pt:pt + h, pl:pl + w, :] = x.permute(1, 2, 3, 0)
    planes = dst[base:].view(c, cstride)
    assert torch.equal(planes[:, :hp * wp * b].view(c, hp, wp, b), want)
    assert dst[:base].isnan().all() and planes[:, hp * wp * b:].isnan().all()  # untouched
    back = torch.full_like(x, float("nan"))
    unpad_batch_first(dst.numpy(), base, cstride, wp, pt, pl, back.numpy())
    assert torch.equal(back, x)


@settings(max_examples=80, deadline=None)
@given(b=st.integers(1, 20), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9), pt=st.integers(0, 2),
       pb=st.integers(0, 2), pl=st.integers(0, 2), extra=st.integers(0, 3), dtype=st.sampled_from([torch.float32,
                                                                                                 torch.float64]),
       gap=st.sampled_from([0, 3]))
def test_pad_batch_last_and_unpad_match_torch(b, c, h, w, pt, pb, pl, extra, dtype, gap):
    _check_pad_and_unpad(b, c, h, w, pt, pb, pl, extra, dtype, gap)


@pytest.mark.parametrize("b, c, h, w", [(16, 70, 1, 1), (9, 37, 2, 2), (64, 100, 2, 3), (8, 600, 2, 2),
                                        (24, 13, 4, 4), (16, 5, 8, 8), (3, 40, 7, 1)])
def test_batch_last_copies_of_many_small_planes(b, c, h, w):
    """Small planes are copied several channels per register-tile chunk: whole and partial last chunks, more chunks
    than parallel parts, a chunk of one channel, planes that are not a multiple of 8 pixels."""
    _check_pad_and_unpad(b, c, h, w, 1, 1, 1, 0, torch.float32)
    _check_pad_and_unpad(b, c, h, w, 0, 0, 0, 0, torch.float64)
    _check_pad_and_unpad(b, c, h, w, 0, 0, 0, 0, torch.float32, gap=0)  # unstaged: straight into the planes
    _check_pad_and_unpad(b, c, h, w, 0, 1, 0, 1, torch.float64, gap=0)  # a frame: staged


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 6), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9), pt=st.integers(0, 2),
       pb=st.integers(0, 2), pl=st.integers(0, 2), extra=st.integers(0, 3),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_pad_planes_matches_torch(b, c, h, w, pt, pb, pl, extra, dtype):
    """Over-width planes: with ``frame`` every element of each (hp, wp) plane is written (the image at (pt, pl),
    zeros elsewhere); without it only the image's positions are; nothing between or around the planes is touched."""
    x = torch.randn(b, c, h, w, dtype=dtype)
    hp, wp, base, gap = h + pt + pb, w + pl + extra, 4, 2
    pstride = hp * wp + gap
    want = torch.zeros(b * c, hp, wp, dtype=dtype)
    want[:, pt:pt + h, pl:pl + w] = x.reshape(b * c, h, w)
    for frame in (True, False):
        dst = torch.full((base + b * c * pstride,), float("nan"), dtype=dtype)
        pad_planes(x.numpy(), dst.numpy(), base, pstride, hp, wp, pt, pl, frame)
        planes = dst[base:].view(b * c, pstride)
        got = planes[:, :hp * wp].view(b * c, hp, wp)
        if frame:
            assert torch.equal(got, want)
        else:
            assert torch.equal(got[:, pt:pt + h, pl:pl + w], want[:, pt:pt + h, pl:pl + w])
            assert got.isnan().sum() == b * c * (hp * wp - h * w)  # the frame left as it was
        assert dst[:base].isnan().all() and planes[:, hp * wp:].isnan().all()


@pytest.mark.parametrize("limit", [0, 10**9], ids=["gathered", "indexed"])
@pytest.mark.parametrize("layer", ["linear", "conv-batch-last", "conv-over-width", "block-runs"])
def test_input_gradient_reads_weights_indexed_or_gathered(monkeypatch, limit, layer):
    """The transposed-structure dX passes read the weights through the permutation (few weights) or gather them
    first (many): both give dense autograd's dX, dW and bias gradient."""
    from helpers import compare, masked_
    from torch import nn

    import sparsetrain.ops.common as common
    from sparsetrain import BlockSparseConv2d, SparseConv2d, SparseLinear
    from sparsetrain.masks import hrbp_random

    monkeypatch.setattr(common, "INDEX_LIMIT", limit)
    torch.manual_seed(0)
    if layer == "linear":
        dense = nn.Linear(40, 30, dtype=torch.float64)
        s = SparseLinear.from_dense(dense, masked_(dense, 0.7))
        compare(s, dense, torch.randn(9, 40, dtype=torch.float64))
    elif layer == "block-runs":
        dense = nn.Conv2d(16, 16, 3, padding=1, dtype=torch.float64)
        s = BlockSparseConv2d.from_dense(dense, hrbp_random(dense.weight.shape, 0.3, groups=4), variant="runs")
        x = torch.randn(3, 16, 17, 17, dtype=torch.float64, requires_grad=True)
        with torch.no_grad():
            dense.weight.mul_(s.layout.mask)
        xd = x.detach().clone().requires_grad_()
        s(x).square().sum().backward()
        dense(xd).square().sum().backward()
        torch.testing.assert_close(x.grad, xd.grad)
        torch.testing.assert_close(s.bias.grad, dense.bias.grad)
    else:
        dense = nn.Conv2d(6, 8, 3, padding=1, dtype=torch.float64)
        s = SparseConv2d.from_dense(dense, masked_(dense, 0.6), variant=layer.removeprefix("conv-"))
        compare(s, dense, torch.randn(5, 6, 7, 9, dtype=torch.float64))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_register_tile_transposes_one_8x8_block_in_place(dtype):
    """``simd.tile8`` at arbitrary offsets and strides: the 64 destination elements hold the transposed block
    and nothing else is written (the vectors are unaligned loads and stores)."""
    import numpy as np
    from numba import njit

    from sparsetrain.kernels.cpu.simd import tile8

    @njit
    def run(src, s0, ss, dst, d0, ds):
        tile8(src, s0, ss, dst, d0, ds)

    src = np.arange(300, dtype=dtype)
    dst = np.full(400, -1.0, dtype=dtype)
    run(src, 3, 21, dst, 5, 11)
    block = np.array([[src[3 + i * 21 + j] for j in range(8)] for i in range(8)])
    written = np.zeros(400, dtype=bool)
    for j in range(8):
        assert np.array_equal(dst[5 + j * 11:5 + j * 11 + 8], block[:, j])
        written[5 + j * 11:5 + j * 11 + 8] = True
    assert (dst[~written] == -1.0).all()
