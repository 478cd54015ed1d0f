"""Pruning criteria against tiny hand-checked networks."""
import pytest
import torch
from torch import nn

from sparsetrain.masks import criteria

W = [[1.0, -2.0], [3.0, 0.5]]
X = torch.tensor([[1.0, 2.0]], dtype=torch.float64)


def _lin(weight=W):
    net = nn.Sequential(nn.Linear(2, len(weight), bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(weight))
    return net


def test_snip_scores_by_hand():
    # L = sum(out * y), dL/dW = y^T x = [[1, 2], [-1, -2]]; |g * W| = [[1, 4], [3, 1]]
    y = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    s = criteria.snip(_lin(), ["0"], [(X, y)], loss_fn=lambda out, t: (out * t).sum())
    assert s["0"].tolist() == [[1.0, 4.0], [3.0, 1.0]]
    # two batches: gradients add before |g * w|
    s2 = criteria.snip(_lin(), ["0"], [(X, y), (X, -2 * y)], n_batches=2, loss_fn=lambda out, t: (out * t).sum())
    assert s2["0"].tolist() == [[1.0, 4.0], [3.0, 1.0]]  # g - 2g = -g
    s1 = criteria.snip(_lin(), ["0"], [(X, y), (X, -2 * y)], n_batches=1, loss_fn=lambda out, t: (out * t).sum())
    assert torch.equal(s1["0"], s["0"])


def test_grasp_scores_by_hand():
    # L = 0.5 |W x|^2: g = (W x) x^T = [[-3, -6], [4, 8]], H g = (x.x) g = 5 g, score = W * Hg
    s = criteria.grasp(_lin(), ["0"], [(X, None)], loss_fn=lambda out, t: 0.5 * out.square().sum(), temperature=1.0)
    assert s["0"].tolist() == [[-15.0, 60.0], [60.0, 20.0]]


def test_synflow_scores_by_hand_and_model_untouched():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        net[1].weight.copy_(torch.tensor([[-4.0, 1.0]]))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []

    def select(scores, density):
        seen.append((density, {n: s.clone() for n, s in scores.items()}))
        return {n: s > s.flatten().kthvalue(max(1, s.numel() // 2)).values for n, s in scores.items()}

    criteria.synflow(net, ["0", "1"], (2,), 0.25, select, rounds=1)
    # R = 1^T |W2| |W1| 1: score1[i, j] = |W1[i, j]| |W2[i]|, score2[i] = |W2[i]| sum_j |W1[i, j]|
    d, s = seen[0]
    assert d == pytest.approx(0.25)
    assert s["0"].tolist() == [[4.0, 8.0], [3.0, 0.5]]
    assert s["1"].tolist() == [[12.0, 3.5]]
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_synflow_iterates_with_exponential_densities_and_never_revives():
    net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    densities, masks_seen = [], []

    def select(scores, density):
        densities.append(density)
        out = {}
        for n, s in scores.items():
            k = max(1, round(density * s.numel()))
            m = torch.zeros(s.numel(), dtype=torch.bool)
            m[s.flatten().topk(k).indices] = True
            out[n] = m.view(s.shape)
        masks_seen.append(out)
        return out

    final = criteria.synflow(net, ["0", "2"], (6,), 0.2, select, rounds=4)
    assert densities == pytest.approx([0.2 ** (k / 4) for k in range(1, 5)])
    for prev, cur in zip(masks_seen, masks_seen[1:]):
        for n in cur:
            assert not bool((cur[n] & ~prev[n]).any())
    assert int(final["0"].sum()) == 6 and int(final["2"].sum()) == 3


def test_magnitude_and_random():
    s = criteria.magnitude({"a": torch.tensor([-3.0, 2.0])})
    assert s["a"].tolist() == [3.0, 2.0]
    a = criteria.random_scores({"a": (3, 4)}, torch.Generator().manual_seed(0))
    b = criteria.random_scores({"a": (3, 4)}, torch.Generator().manual_seed(0))
    assert torch.equal(a["a"], b["a"])


def test_criteria_errors():
    with pytest.raises(ValueError, match="n_batches"):
        criteria.snip(_lin(), ["0"], [(X, None)], n_batches=0)
    with pytest.raises(ValueError, match="no \\(inputs, targets\\)"):
        criteria.snip(_lin(), ["0"], [])
    with pytest.raises(ValueError, match="rounds"):
        criteria.synflow(_lin(), ["0"], (2,), 0.5, lambda s, d: s, rounds=0)
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        criteria.snip(nn.Sequential(nn.BatchNorm1d(2)), ["0"], [(X, None)])
