"""Baseline masks (vanilla regrouping, N:M, transposable N:M) and the backward-preservation check (HRBP Fig. 2)."""
import pytest
import torch

from sparsetrain.masks import (hrbp, hrbp_random, nm_mask, preserved_in_backward, random_mask, regroup,
                               transposable_nm_mask)


def test_hrbp_blocks_survive_the_backward_and_vanilla_blocks_fragment():
    mask = random_mask((64, 32, 3, 3), 0.9, torch.Generator().manual_seed(0))
    assert all(preserved_in_backward(hrbp(mask)))
    assert all(preserved_in_backward(hrbp(mask).mask))  # as a plain mask too
    assert all(preserved_in_backward(hrbp_random((64, 32, 3, 3), 0.05, generator=torch.Generator().manual_seed(1))))
    vanilla = regroup(mask)
    flags = preserved_in_backward(vanilla)
    assert len(flags) == 8 and not any(flags)
    assert abs(float(vanilla.mask.float().mean()) - float(mask.float().mean())) < 0.01


def test_fig2_style_hand_example():
    # one 2x2-kernel block over 2 filters: columns (channel 0, cell 0) and (channel 1, cell 3)
    # in W' = rows are channels, columns o*4 + (3 - cell): {ch0: cols 3, 7}, {ch1: cols 0, 4} -> not one block
    assert preserved_in_backward([([0, 1], [0, 7])], weight_shape=(2, 2, 2, 2)) == [False]
    # same cell in both channels -> W' rows {0, 1} x columns {3, 7}: a dense block
    assert preserved_in_backward([([0, 1], [0, 4])], weight_shape=(2, 2, 2, 2)) == [True]
    # 1x1 kernels: W' is W^T, every block survives
    assert preserved_in_backward([([0, 2], [1, 3])], weight_shape=(4, 4, 1, 1)) == [True]


def test_preserved_in_backward_rejects_unknown_input():
    with pytest.raises(TypeError, match="BlockLayout"):
        preserved_in_backward([([0], [0])])


def test_nm_mask_keeps_n_largest_per_group():
    w = torch.randn(8, 16, 3, 3)
    m = nm_mask(w, 2, 4)
    groups = m.permute(0, 2, 3, 1).reshape(-1, 4)
    assert bool((groups.sum(1) == 2).all())
    aw = w.abs().permute(0, 2, 3, 1).reshape(-1, 4)
    kept_min = torch.where(groups, aw, torch.full_like(aw, float("inf"))).min(1).values
    dropped_max = torch.where(~groups, aw, torch.full_like(aw, -1.0)).max(1).values
    assert bool((kept_min >= dropped_max).all())
    lin = nm_mask(torch.randn(4, 8), 1, 2)
    assert bool((lin.view(4, 4, 2).sum(-1) == 1).all())


def test_transposable_nm_limits_m():
    with pytest.raises(ValueError, match="m must be <= 4"):
        transposable_nm_mask(torch.randn(8, 8), 2, 8)


def test_transposable_nm_rows_and_columns_and_optimality():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 8, 3, 3, generator=gen)
    m = transposable_nm_mask(w, 2, 4)
    for q in range(9):
        tiles = m.flatten(2)[:, :, q].reshape(2, 4, 2, 4).permute(0, 2, 1, 3)
        assert bool((tiles.sum(-1) == 2).all()) and bool((tiles.sum(-2) == 2).all())
    # exhaustive search: no other valid tile pattern keeps more magnitude than the chosen one
    w2 = torch.randn(4, 4, generator=gen)
    m2 = transposable_nm_mask(w2, 2, 4)
    best = float((w2.abs() * m2).sum())
    from sparsetrain.masks.nm import _patterns
    pats = _patterns(2, 4)
    assert pats.shape[0] == 90
    assert best >= float((pats @ w2.abs().flatten()).max()) - 1e-6


@pytest.mark.parametrize("fn", [nm_mask, transposable_nm_mask])
def test_nm_bad_arguments(fn):
    with pytest.raises(ValueError, match="n must be <= m"):
        fn(torch.randn(8, 8), 3, 2)
    with pytest.raises(ValueError, match="divisible by m=4"):
        fn(torch.randn(8, 6), 2, 4)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        fn(torch.randn(8, 8), 0, 4)
