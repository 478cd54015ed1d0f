"""Layer-wise densities (uniform, ER, ERK, global) and layer selection."""
import math

import pytest
import torch
from torch import nn

from sparsetrain import SparseLinear
from sparsetrain.masks.distributions import layer_counts, layer_densities, topk_masks
from sparsetrain.masks.select import select_layers

SHAPES = {"conv": (4, 2, 3, 3), "fc": (10, 8)}  # 72 and 80 weights


def test_erk_hand_computed():
    # raw scales: conv (4+2+3+3)/72 = 1/6, fc (10+8)/80 = 0.225; eps = 0.5*152 / (12 + 18) = 76/30
    d = layer_densities(SHAPES, 0.5, "erk")
    eps = 76 / 30
    assert d["conv"] == pytest.approx(eps / 6)
    assert d["fc"] == pytest.approx(0.225 * eps)
    assert d["conv"] * 72 + d["fc"] * 80 == pytest.approx(76)


def test_er_ignores_kernel_dims():
    # ER: conv (2+4)/(2*4) = 0.75, fc 0.225; eps = 76 / (0.75*72 + 0.225*80) = 76/72
    d = layer_densities(SHAPES, 0.5, "er")
    assert d["conv"] == pytest.approx(0.75 * 76 / 72)
    assert d["fc"] == pytest.approx(0.225 * 76 / 72)


def test_erk_layers_over_one_become_dense_and_rest_resolved():
    shapes = {"tiny": (2, 2), "big": (100, 100)}
    d = layer_densities(shapes, 0.5, "erk")
    # tiny's raw scale 1 would need density 24.5: it is dense; big absorbs the rest: (5002 - 4) / 10000
    assert d["tiny"] == 1.0
    assert d["big"] == pytest.approx(4998 / 10000)
    counts = layer_counts(shapes, 0.5, "erk")
    assert counts == {"tiny": 4, "big": 4998}


@pytest.mark.parametrize("dist", ["uniform", "er", "erk"])
@pytest.mark.parametrize("density", [0.05, 0.1, 0.37, 1.0])
def test_counts_exact_globally_and_per_layer(dist, density):
    shapes = {"a": (16, 8, 3, 3), "b": (32, 16, 3, 3), "c": (7, 5, 1, 1), "d": (10, 64)}
    total = sum(math.prod(s) for s in shapes.values())
    counts = layer_counts(shapes, density, dist)
    assert sum(counts.values()) == round(density * total)
    dens = layer_densities(shapes, density, dist)
    for n, s in shapes.items():
        assert abs(counts[n] - dens[n] * math.prod(s)) <= 1.0 + 1e-9
        assert 0 <= counts[n] <= math.prod(s)
    scores = {n: torch.rand(s, generator=torch.Generator().manual_seed(0)) for n, s in shapes.items()}
    masks = topk_masks(scores, counts)
    assert {n: int(m.sum()) for n, m in masks.items()} == counts


def test_global_counts_follow_scores():
    shapes = {"a": (2, 3), "b": (4,)}
    scores = {"a": torch.tensor([[9.0, 1, 8], [2, 7, 3]]), "b": torch.tensor([6.0, 0.5, 5, 4])}
    counts = layer_counts(shapes, 0.5, "global", scores=scores)  # keep 5: 9, 8, 7, 6, 5
    assert counts == {"a": 3, "b": 2}
    masks = topk_masks(scores, counts)
    assert masks["a"].tolist() == [[True, False, True], [False, True, False]]
    assert masks["b"].tolist() == [True, False, True, False]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, "0.5", None, True])
def test_density_out_of_range_names_argument(bad):
    with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\]"):
        layer_counts(SHAPES, bad, "erk")


def test_unknown_distribution_and_global_without_scores():
    with pytest.raises(ValueError, match="distribution must be one of"):
        layer_densities(SHAPES, 0.5, "lognormal")
    with pytest.raises(ValueError, match="needs scores"):
        layer_counts(SHAPES, 0.5, "global")


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.Flatten(),
                         nn.Linear(8, 16), nn.Linear(16, 4))


def test_select_layers_first_conv_last_linear_dense():
    assert select_layers(_net()) == ["2", "4"]
    assert select_layers(_net(), dense_first_last=False) == ["0", "2", "4", "5"]
    assert select_layers(_net(), include=["2", "5"]) == ["2"]
    assert select_layers(_net(), exclude="4") == ["2"]
    net = _net()
    net[4] = SparseLinear.from_dense(net[4])
    assert select_layers(net) == ["2", "4"]


def test_select_layers_errors():
    with pytest.raises(ValueError, match="matches no module"):
        select_layers(_net(), include=["nope*"])
    with pytest.raises(TypeError, match="cannot be made sparse"):
        select_layers(_net(), include=["1"])
    with pytest.raises(ValueError, match="no layer left"):
        select_layers(_net(), include=["0"])
