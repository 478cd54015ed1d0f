"""SparseConv2d's ``-unpadded`` variants (kernels/cpu/same.py) against dense nn.Conv2d autograd.

These read the input in place and make the runs' row-crossing "zones" add nothing (saved and restored output,
zeroed and restored gradient), so the tests aim at what that could get wrong: planes one pixel wide or high,
wide kernels and dilation (zones wider than one element), several row tiles per plane, the batch-last layout,
an inf next to a zone, and the caller's gradient buffer, which must come back bit for bit."""
import pytest
import torch
from helpers import compare, masked_
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsetrain import SparseConv2d

D = torch.float64
UNPADDED = ["batch-last-unpadded", "over-width-unpadded"]


def make(cin, cout, k, sparsity=0.7, seed=0, variant="over-width-unpadded", dtype=D, empty_rows=0, **kw):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, padding="same", dtype=dtype, **kw)
    mask = masked_(conv, sparsity, seed, empty_rows)
    layer = SparseConv2d.from_dense(conv, mask, variant=variant)
    assert layer.geometry.keeps_plane and layer.variants()[-2:] == tuple(UNPADDED)
    return layer, conv


@pytest.mark.parametrize("variant", UNPADDED)
@pytest.mark.parametrize("k, dilation, hw, batch", [
    (3, 1, (7, 7), 3),
    (3, 1, (1, 9), 2),  # one row: no zones, every kernel row but the middle one out of range
    (3, 1, (9, 1), 2),  # one column: every shifted run is empty
    (5, 1, (6, 11), 1),  # zones two elements wide
    (3, 2, (8, 5), 4),
    ((1, 3), 1, (5, 6), 3),
    ((3, 1), 1, (5, 6), 3),
    (4, 1, (6, 7), 2),  # even kernel: the extra padding is at the end
    (1, 1, (4, 4), 2),
    (3, 1, (80, 70), 1),  # 5600 elements a plane: several row tiles per plane
])
def test_geometries(variant, k, dilation, hw, batch):
    s, d = make(5, 7, k, dilation=dilation, variant=variant, seed=batch)
    compare(s, d, torch.randn(batch, 5, *hw, dtype=D))


@pytest.mark.parametrize("variant", UNPADDED)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.97, 1.0])
def test_sparsity_extremes_and_empty_rows(variant, sparsity):
    s, d = make(6, 9, 3, sparsity, variant=variant, empty_rows=3)
    compare(s, d, torch.randn(3, 6, 7, 8, dtype=D))


@pytest.mark.parametrize("variant", UNPADDED)
def test_channels_last_non_contiguous_groups_and_float32(variant):
    s, d = make(6, 8, 3, variant=variant)
    compare(s, d, torch.randn(3, 6, 7, 9, dtype=D).to(memory_format=torch.channels_last))
    compare(s, d, torch.randn(3, 6, 7, 18, dtype=D)[..., ::2])
    s, d = make(4, 8, 3, 0.5, groups=2, variant=variant)
    compare(s, d, torch.randn(2, 4, 6, 6, dtype=D))
    s, d = make(16, 24, 3, 0.9, variant=variant, dtype=torch.float32)
    compare(s, d, torch.randn(8, 16, 12, 12), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", UNPADDED)
def test_inf_beside_a_zone_reaches_only_its_true_neighbours(variant):
    """A run crossing a row boundary reads the next row's first element; it must leave no trace (no NaN, no inf)
    in output positions whose receptive field is only padding on that side."""
    s, d = make(3, 4, 3, 0.0, variant=variant)
    x = torch.randn(2, 3, 6, 6, dtype=D)
    x[:, :, 2, 0] = float("inf")
    with torch.no_grad():
        d.weight.abs_()  # positive weights: inf stays inf, never inf - inf
        s.values.abs_()
        ys, yd = s(x), d(x)
    assert torch.equal(torch.isfinite(ys), torch.isfinite(yd))
    torch.testing.assert_close(ys[torch.isfinite(yd)], yd[torch.isfinite(yd)], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variant", UNPADDED)
def test_gradient_buffer_is_returned_unchanged(variant):
    s, _ = make(4, 6, 3, 0.5, variant=variant)
    x = torch.randn(2, 4, 5, 7, dtype=D, requires_grad=True)
    y = s(x)
    g = torch.randn(y.shape, dtype=D)
    before = g.clone()
    y.backward(g)  # over-width hands ``g`` itself to the dW kernel, which zeroes and restores its zones
    assert torch.equal(g, before)


def test_default_variant_and_candidates():
    s, _ = make(4, 6, 3, variant=None)
    assert s.choose_variant(torch.zeros(2, 4, 56, 56)) == "over-width-unpadded"
    dense_enough, _ = make(8, 6, 3, 0.0, variant=None)  # 72 nonzeros per output channel: the padded copy pays off
    assert dense_enough.choose_variant(torch.zeros(2, 8, 56, 56)) == "over-width"
    assert s.choose_variant(torch.zeros(2, 4, 16, 16)) == "over-width"
    assert s.choose_variant(torch.zeros(64, 4, 8, 8)) == "batch-last-unpadded"
    assert s.choose_variant(torch.zeros(8, 4, 7, 7)) == "batch-last"
    strided = SparseConv2d(4, 6, 3, stride=2, padding=1, variant=None)
    assert strided.variants() == ("batch-last", "over-width")
    assert strided.choose_variant(torch.zeros(2, 4, 112, 112)) == "over-width"
    reflect = SparseConv2d(4, 6, 3, padding=1, padding_mode="reflect")
    assert "over-width-unpadded" not in reflect.variants()


@pytest.mark.parametrize("variant", UNPADDED)
def test_other_geometries_fall_back_to_the_padded_kernels(variant):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 5, 3, padding=0, dtype=D)
    s = SparseConv2d.from_dense(conv, masked_(conv, 0.5), variant=variant)
    compare(s, conv, torch.randn(2, 4, 7, 6, dtype=D))


@settings(max_examples=40, deadline=None)
@given(cin=st.integers(1, 8), cout=st.integers(1, 8), kh=st.integers(1, 5), kw=st.integers(1, 5),
       h=st.integers(1, 12), w=st.integers(1, 12), b=st.integers(1, 5), dil=st.integers(1, 2),
       sparsity=st.sampled_from([0.0, 0.3, 0.8, 0.95, 1.0]), variant=st.sampled_from(UNPADDED),
       seed=st.integers(0, 9999))
def test_random_same_geometries(cin, cout, kh, kw, h, w, b, dil, sparsity, variant, seed):
    s, d = make(cin, cout, (kh, kw), sparsity, seed, variant, dilation=dil)
    compare(s, d, torch.randn(b, cin, h, w, dtype=D, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_weight_and_bias_gradient_split_by_image_or_by_row(threads, batch):
    """dW and the bias gradient are split among threads by image (batch >= threads) or by output channel."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        s, d = make(5, 7, 3, 0.5, variant="over-width-unpadded", seed=batch)
        compare(s, d, torch.randn(batch, 5, 6, 9, dtype=D))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tile", [4096, 40])
def test_streamed_bands_and_fused_bias_gradient_over_row_tiles(monkeypatch, threads, tile):
    """With a part of the images per thread the kernels stream each (image, row tile) band in first and the fused
    backward sums the bias gradient tile by tile on the way: several tiles per plane, and more images than twice
    the threads, so those paths (not the row-split ones) run."""
    import sparsetrain.ops.conv as conv_op
    monkeypatch.setattr(conv_op, "_SAME_TILE", tile)  # 40 elements: 4 rows of 10 per tile, 3 tiles a plane
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        s, d = make(6, 5, 3, 0.6, variant="over-width-unpadded", seed=tile + threads)
        compare(s, d, torch.randn(5, 6, 11, 10, dtype=D, generator=torch.Generator().manual_seed(threads)))
    finally:
        torch.set_num_threads(before)
