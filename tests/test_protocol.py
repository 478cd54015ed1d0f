"""The layer protocol: masks, dense gradients on request, optimizer state carried across repacks."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain import SparseConv2d, SparseLinear
from sparsetrain.nn import masked, protocol
from sparsetrain.nn.base import PackedSparseModule


def _layers(kind, seed=0):
    torch.manual_seed(seed)
    if kind == "masked-linear":
        return nn.Linear(12, 7).double()
    if kind == "sparse-linear":
        return SparseLinear.from_dense(nn.Linear(12, 7).double(), torch.ones(7, 12, dtype=torch.bool))
    if kind == "masked-conv":
        return nn.Conv2d(3, 5, 3, padding=1).double()
    return SparseConv2d.from_dense(nn.Conv2d(3, 5, 3, padding=1).double(), torch.ones(5, 3, 3, 3, dtype=torch.bool))


def _input(module):
    shape = (4, 12) if protocol.weight_shape(module)[1:] == (12,) else (2, 3, 6, 6)
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def _dense_state(module, v):
    return module.scatter_values(v) if isinstance(module, PackedSparseModule) else v


KINDS = ["masked-linear", "sparse-linear", "masked-conv", "sparse-conv"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_set_mask_carries_optimizer_state(kind, opt_name):
    layer = _layers(kind)
    gen = torch.Generator().manual_seed(1)
    shape = protocol.weight_shape(layer)
    old = torch.rand(shape, generator=gen) < 0.5
    protocol.set_mask(layer, old)
    opt = (torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(layer.parameters(), lr=0.01))
    x = _input(layer)
    for _ in range(2):
        opt.zero_grad()
        layer(x).square().sum().backward()
        opt.step()
    p_old = protocol.weight_parameter(layer)
    keys = [k for k, v in opt.state[p_old].items() if v.dim()]
    assert keys, "optimizer made per-element state"
    before = {k: _dense_state(layer, opt.state[p_old][k]).clone() for k in keys}
    w_before = protocol.dense_weight(layer).clone()
    assert torch.equal(w_before != 0, old), "pruned weights stayed zero through the optimizer steps"

    new = old.clone().flatten()
    on, off = new.nonzero().flatten(), (~new).nonzero().flatten()
    new[on[:3]] = False  # dropped
    new[off[:4]] = True  # grown
    new = new.view(shape)
    got = protocol.set_mask(layer, new, opt)
    assert torch.equal(got, new) and torch.equal(protocol.get_mask(layer), new)

    p_new = protocol.weight_parameter(layer)
    assert any(p is p_new for p in opt.param_groups[0]["params"])
    assert all(p is not p_old for p in opt.param_groups[0]["params"]) or p_new is p_old
    keep, grown = old & new, new & ~old
    w = protocol.dense_weight(layer)
    assert torch.equal(w[keep], w_before[keep])
    assert torch.all(w[grown] == 0) and torch.all(w[~new] == 0)
    for k in keys:
        after = _dense_state(layer, opt.state[p_new][k])
        assert torch.equal(after[keep], before[k][keep]), k
        assert torch.all(after[grown] == 0), k
    if opt_name == "adam":
        assert int(opt.state[p_new]["step"]) == 2
    # the optimizer keeps training the repacked layer
    opt.zero_grad()
    layer(x).square().sum().backward()
    opt.step()
    assert torch.equal(protocol.dense_weight(layer) != 0, new)


@pytest.mark.parametrize("kind", KINDS)
def test_dense_grad_on_request_only(kind):
    layer = _layers(kind)
    mask = torch.rand(protocol.weight_shape(layer), generator=torch.Generator().manual_seed(2)) < 0.3
    protocol.set_mask(layer, mask)
    x = _input(layer)
    w = protocol.dense_weight(layer).clone().requires_grad_(True)
    ref = F.linear(x, w, layer.bias) if x.dim() == 2 else F.conv2d(x, w, layer.bias, padding=1)
    ref.square().sum().backward()

    protocol.request_dense_grad(layer)
    layer(x).square().sum().backward()
    g = protocol.take_dense_grad(layer)
    torch.testing.assert_close(g, w.grad)
    assert bool((g[~mask] != 0).any()), "dense gradient is nonzero at pruned positions"
    # the parameter gradient is still the masked one
    pgrad = _dense_state(layer, protocol.weight_parameter(layer).grad)
    torch.testing.assert_close(pgrad, w.grad * mask)
    assert protocol.take_dense_grad(layer) is None
    layer(x).sum().backward()  # no request: no dense gradient kept
    assert protocol.take_dense_grad(layer) is None


def test_masked_adapter_survives_weight_decay_and_deepcopy():
    lin = nn.Linear(10, 6)
    mask = torch.rand(6, 10, generator=torch.Generator().manual_seed(0)) < 0.4
    masked.attach_mask(lin, mask)
    twin = copy.deepcopy(lin)
    for mod in (lin, twin):
        opt = torch.optim.AdamW(mod.parameters(), lr=0.1, weight_decay=0.5)
        for _ in range(3):
            opt.zero_grad()
            mod(torch.randn(5, 10)).sum().backward()
            opt.step()
        assert torch.equal(mod.weight != 0, mask)
    assert "weight_mask" in lin.state_dict()


def test_pack_layer_moves_parameters_and_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    mask = torch.rand(6, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    protocol.set_mask(model[0], mask)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    mom = opt.state[model[0].weight]["momentum_buffer"].clone()
    bias_mom = opt.state[model[0].bias]["momentum_buffer"].clone()
    w = model[0].weight.detach().clone()
    packed = SparseLinear.from_dense(model[0], mask)
    protocol.pack_layer(model, "0", packed, opt)
    assert model[0] is packed
    params = opt.param_groups[0]["params"]
    assert params[0] is packed.values and params[1] is packed.bias
    torch.testing.assert_close(opt.state[packed.values]["momentum_buffer"], mom[mask])
    torch.testing.assert_close(opt.state[packed.bias]["momentum_buffer"], bias_mom)
    torch.testing.assert_close(packed.dense_weight(), w)


def test_protocol_errors():
    with pytest.raises(TypeError, match="cannot be made sparse"):
        protocol.check_layer(nn.BatchNorm2d(3), "bn")
    with pytest.raises(ValueError, match="mask shape"):
        protocol.set_mask(nn.Linear(3, 2), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        masked.attach_mask(nn.Conv1d(2, 2, 3), torch.ones(2, 2, 3, dtype=torch.bool))
