"""sparsify / densify on whole models, the auto backend and its decision table."""
import copy

import pytest
import torch
from torch import nn

from sparsetrain import SparseConv2d, SparseLinear, decision_table, densify, masks, sparsify


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 5))


def random_masks(m, sparsity=0.9):
    gen = torch.Generator().manual_seed(0)
    return {n: masks.random_mask(mod.weight.shape, sparsity, gen) for n, mod in m.named_modules()
            if isinstance(mod, (nn.Linear, nn.Conv2d))}


def test_auto_times_every_candidate_and_keeps_outputs():
    m = model()
    mk = random_masks(m)
    ref = copy.deepcopy(m)
    with torch.no_grad():
        for n, mod in ref.named_modules():
            if n in mk and n != "0":  # layer 0 is excluded below and stays unmasked
                mod.weight.mul_(mk[n])
    x = torch.randn(4, 3, 6, 6)
    sparsify(m, mk, example_input=x, backend="auto", exclude=["0"])
    assert isinstance(m[0], nn.Conv2d)  # excluded by name
    assert isinstance(m[2], SparseConv2d) and isinstance(m[5], SparseLinear) and isinstance(m[7], SparseLinear)
    table = decision_table(m)
    assert [d.layer for d in table] == ["2", "5", "7"]
    for d in table:
        assert d.times_ms and all(t > 0 for t in d.times_ms.values())
        assert d.choice.startswith(min(d.times_ms, key=d.times_ms.get).split("/")[0])
    assert set(table[0].times_ms) == {"dense"} | {f"sparse-cpu/{v}" for v in m[2].variants()}
    assert "choice" in str(table)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-4, atol=1e-5)


def test_min_sparsity_and_default_masks_from_zeros():
    m = model()
    with torch.no_grad():
        m[5].weight.mul_(masks.random_mask(m[5].weight.shape, 0.95))
    sparsify(m, backend="sparse-cpu", min_sparsity=0.9)
    assert isinstance(m[5], SparseLinear) and isinstance(m[2], nn.Conv2d)


def test_densify_round_trip():
    m = model()
    x = torch.randn(2, 3, 6, 6)
    sparsify(m, random_masks(m), backend="sparse-cpu")
    y = m(x)
    densify(m)
    assert not any(isinstance(mod, (SparseLinear, SparseConv2d)) for mod in m.modules())
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-6)


def test_sparse_model_trains():
    m = model()
    sparsify(m, random_masks(m, 0.8), backend="sparse-cpu")
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    x, y = torch.randn(32, 3, 6, 6), torch.randint(0, 5, (32,))
    losses = []
    for _ in range(40):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_arguments_name_the_argument():
    m = model()
    with pytest.raises(ValueError, match="min_sparsity must be a number in"):
        sparsify(m, min_sparsity=1.5, backend="dense")
    with pytest.raises(ValueError, match="backend must be one of"):
        sparsify(m, backend="fastest")
    with pytest.raises(ValueError, match="example_input"):
        sparsify(m, backend="auto")
    with pytest.raises(KeyError, match="masks has keys"):
        sparsify(m, {"nope": torch.ones(1, dtype=torch.bool)}, backend="dense")
    with pytest.raises(TypeError, match=r"masks\['5'\] must have dtype torch.bool"):
        sparsify(m, {"5": torch.ones(32, 576)}, backend="dense")
    for min_sparsity in (0.0, 0.8):  # at 0.8 a dense wrong-shaped mask used to skip the layer without a word
        with pytest.raises(ValueError, match=r"masks\['5'\] has shape \(3, 3\), but the layer's weight has shape"):
            sparsify(m, {"5": torch.ones(3, 3, dtype=torch.bool)}, backend="dense", min_sparsity=min_sparsity)


def test_exclude_pattern_matching_no_layer_warns():
    with pytest.warns(UserWarning, match=r"exclude patterns \['fc\*'\] match no nn.Linear/nn.Conv2d"):
        sparsify(model(), backend="dense", exclude=["0", "fc*"])
