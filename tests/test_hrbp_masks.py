"""HRBP regrouping and HRBP-random masks: block shapes, densities, determinism, a hand-checked example."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sparsetrain.formats import BlockLayout
from sparsetrain.masks import hrbp, hrbp_random, random_channel, random_mask


def _check_blocks(layout: BlockLayout, shape):
    layout.validate()
    t, r = layout.rows.shape
    co, ci = shape[0], shape[1]
    kk = shape[2] * shape[3] if len(shape) == 4 else 1
    assert t * r == co
    assert layout.mask.shape == tuple(shape)
    # blocks do not overlap and cover exactly the derived mask
    assert int(layout.mask.sum()) == layout.nnz == t * r * layout.channels.shape[1] * layout.cells.shape[1]
    m = layout.mask.reshape(co, ci, kk)
    for g in range(t):
        block = m[layout.rows[g]][:, layout.channels[g]][:, :, layout.cells[g]]
        assert bool(block.all())


def test_hand_checked_example_following_fig3():
    # 4 filters, 4 input channels, 2x2 kernels (cells 0..3), density 24/64 = 0.375, t = 2 groups, s = 3/4
    m = torch.zeros(4, 4, 4, dtype=torch.bool)
    for (o, c), cells in {(0, 0): [0, 1, 2], (0, 1): [0, 1], (0, 3): [3],
                          (1, 0): [0, 2], (1, 1): [0, 1, 2], (1, 2): [0],
                          (2, 2): [1, 2, 3], (2, 3): [1, 3], (2, 0): [3],
                          (3, 2): [1, 3], (3, 3): [1, 2, 3], (3, 1): [1]}.items():
        m[o, c, cells] = True
    layout = hrbp(m.view(4, 4, 2, 2), groups=2, block_density=3 / 4, min_rows=1)
    # kernel-wise mask keeps the 8 kernels with >= 2 nonzeros; rows {0,1} and {2,3} are identical in it
    assert layout.rows.tolist() == [[0, 1], [2, 3]]
    assert layout.channels.tolist() == [[0, 1], [2, 3]]
    # group 0 cell counts over its kernels: 4, 3, 3, 0 -> cells 0,1,2; group 1: 0, 4, 2, 4 -> cells 1,2,3
    assert layout.cells.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert layout.block_shape == (2, 6)
    assert layout.density == pytest.approx(0.375)
    _check_blocks(layout, (4, 4, 2, 2))


@settings(max_examples=25, deadline=None)
@given(co=st.sampled_from([8, 16, 24, 64, 100]), ci=st.sampled_from([3, 8, 16, 32]),
       k=st.sampled_from([(1, 1), (3, 3), (3, 1), (5, 5)]), sparsity=st.sampled_from([0.5, 0.8, 0.9, 0.95]),
       groups=st.sampled_from([1, 4, 8]), seed=st.integers(0, 10))
def test_hrbp_blocks_and_density(co, ci, k, sparsity, groups, seed):
    shape = (co, ci) + k
    mask = random_mask(shape, sparsity, torch.Generator().manual_seed(seed))
    layout = hrbp(mask, groups=groups)
    _check_blocks(layout, shape)
    t = layout.groups
    assert t <= groups and co % t == 0 and (co // t >= 8 or t == 1)
    kk = k[0] * k[1]
    p = layout.cells.shape[1]
    r = float(mask.float().mean())
    if layout.channels.shape[1] not in (1, ci):  # unclipped: nearest achievable density (documented rounding)
        assert abs(layout.density - r) <= p / (2 * ci * kk) + 1e-9
    assert layout.block_shape[1] == layout.channels.shape[1] * p
    # deterministic
    again = hrbp(mask.clone(), groups=groups)
    assert torch.equal(again.rows, layout.rows) and torch.equal(again.channels, layout.channels)
    assert torch.equal(again.cells, layout.cells)


def test_default_pattern_is_four_ninths_for_3x3_and_dense_cell_for_1x1():
    g = torch.Generator().manual_seed(0)
    assert hrbp(random_mask((64, 32, 3, 3), 0.9, g)).cells.shape[1] == 4
    lay = hrbp(random_mask((64, 32, 1, 1), 0.9, g))
    assert lay.cells.shape[1] == 1 and lay.channels.shape[1] == round(0.1 * 32)
    # density above 4/9 raises the pattern size instead of failing
    assert hrbp(random_mask((16, 16, 3, 3), 0.4, g)).cells.shape[1] == 6


def test_linear_and_depthwise_weights():
    g = torch.Generator().manual_seed(0)
    lin = hrbp(random_mask((64, 48), 0.9, g))
    _check_blocks(lin, (64, 48))
    assert lin.mask.shape == (64, 48)
    dw = hrbp(random_mask((32, 1, 3, 3), 0.8, g))
    _check_blocks(dw, (32, 1, 3, 3))
    assert dw.channels.shape[1] == 1 and dw.cells.shape[1] == round(0.2 * 9)


def test_uneven_channel_counts_use_a_divisor_of_co():
    g = torch.Generator().manual_seed(0)
    assert hrbp(random_mask((100, 16, 3, 3), 0.9, g)).groups == 5  # largest divisor of 100 <= 8 with >= 8 rows
    assert hrbp(random_mask((10, 16, 3, 3), 0.9, g)).groups == 1  # 10 // 8 = 1 group
    assert hrbp(random_mask((10, 16, 3, 3), 0.9, g), min_rows=1).groups == 5


def test_hrbp_of_a_block_mask_is_the_same_mask_and_from_mask_recovers_it():
    layout = hrbp_random((64, 32, 3, 3), 0.1, generator=torch.Generator().manual_seed(3))
    again = hrbp(layout.mask)
    assert torch.equal(again.mask, layout.mask)
    rec = BlockLayout.from_mask(layout.mask)
    assert torch.equal(rec.mask, layout.mask) and rec.block_shape[1] == layout.block_shape[1]


def test_from_mask_rejects_unstructured_masks():
    mask = random_mask((16, 8, 3, 3), 0.9, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="hrbp"):
        BlockLayout.from_mask(mask)


def test_hrbp_random_is_seeded_and_has_the_density():
    a = hrbp_random((128, 64, 3, 3), 0.1, generator=torch.Generator().manual_seed(1))
    b = hrbp_random((128, 64, 3, 3), 0.1, generator=torch.Generator().manual_seed(1))
    c = hrbp_random((128, 64, 3, 3), 0.1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    _check_blocks(a, (128, 64, 3, 3))
    assert a.groups == 8 and a.cells.shape[1] == 4 and a.channels.shape[1] == round(0.1 * 64 * 9 / 4)


def test_pack_to_dense_roundtrip():
    layout = hrbp_random((32, 16, 3, 3), 0.2, generator=torch.Generator().manual_seed(0))
    w = torch.randn(32, 16, 3, 3)
    packed = BlockLayout.pack(w, layout)
    assert packed.values.shape == (layout.groups,) + layout.block_shape
    torch.testing.assert_close(packed.to_dense(), w * layout.mask)
    again = BlockLayout.pack(w * layout.mask, layout.mask)  # recovered from the bool mask
    torch.testing.assert_close(again.to_dense(), w * layout.mask)


@pytest.mark.parametrize("kwargs, match", [
    (dict(groups=33), "groups must be in \\[1, C_O=32\\]"),
    (dict(groups=0), "groups"),
    (dict(block_density=0.5), "multiple of 1/\\(Kh\\*Kw\\) = 1/9"),
    (dict(block_density=1 / 9), "block_density s=0.1111 must be >= the mask density"),
    (dict(min_rows=0), "min_rows"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    mask = random_mask((32, 16, 3, 3), 0.8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        hrbp(mask, **kwargs)


def test_bad_mask_and_density():
    with pytest.raises(TypeError, match="mask"):
        hrbp(torch.ones(8, 8, 3, 3))
    with pytest.raises(ValueError, match="density is 0"):
        hrbp(torch.zeros(8, 8, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="density must be in \\(0, 1\\]"):
        hrbp_random((8, 8, 3, 3), 1.5)
    with pytest.raises(ValueError, match="density"):
        random_channel((8, 8, 3, 3), 0.0)


def test_random_channel_keeps_whole_filters():
    m = random_channel((64, 32, 3, 3), 0.25, torch.Generator().manual_seed(0))
    per_filter = m.flatten(1).all(1)
    assert int(per_filter.sum()) == 16 and torch.equal(m.flatten(1).any(1), per_filter)
