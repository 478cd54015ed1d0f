"""sparsify with HRBP block layouts: the block backend, auto timing it, densify back."""
import copy

import pytest
import torch
from torch import nn

from sparsetrain import BlockSparseConv2d, SparseConv2d, decision_table, densify, masks, sparsify


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 36, 5))


def layouts(m):
    gen = torch.Generator().manual_seed(0)
    return {"2": masks.hrbp_random(m[2].weight.shape, 0.1, generator=gen, min_rows=4),
            "4": masks.hrbp_random(m[4].weight.shape, 0.1, generator=gen, min_rows=4).mask}  # layout or bool mask


def _masked_reference(m, lay):
    ref = copy.deepcopy(m)
    with torch.no_grad():
        for n, v in lay.items():
            mk = v if isinstance(v, torch.Tensor) else v.mask
            ref.get_submodule(n).weight.mul_(mk)
    return ref


@pytest.mark.parametrize("backend", ["block-cpu", "block-gpu", "auto"])
def test_block_backend_keeps_outputs_and_gradients(backend):
    m = model()
    lay = layouts(m)
    ref = _masked_reference(m, lay)
    x = torch.randn(2, 3, 6, 6)
    sparsify(m, lay, example_input=x, backend=backend, min_sparsity=0.5, exclude=["0", "7"])
    table = decision_table(m)
    assert [d.layer for d in table] == ["2", "4"]
    if backend != "auto":  # block-gpu on a CPU input runs the same CPU block kernels
        assert all(isinstance(m[i], BlockSparseConv2d) and m[i].backend == backend for i in (2, 4))
    else:
        assert all({"block-cpu/over-width", "block-cpu/batch-last", "block-cpu/runs", "dense"} <= set(d.times_ms)
                   for d in table)
        for d in table:
            assert d.choice == min(d.times_ms, key=d.times_ms.get) or d.choice.startswith("sparse-cpu")
        assert "block-cpu" in str(table)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-4, atol=1e-5)
    m(x).sum().backward()
    ref(x).sum().backward()
    for i in (2, 4):
        layer = m[i]
        torch.testing.assert_close(_grad_dense(layer), ref[i].weight.grad * layer.mask(), rtol=1e-4, atol=1e-5)
    plain = densify(m)
    assert not any(isinstance(mod, (BlockSparseConv2d, SparseConv2d)) for mod in plain.modules())
    torch.testing.assert_close(plain(x), ref(x), rtol=1e-4, atol=1e-5)


def _grad_dense(layer):
    return layer._format().to_dense(layer.values.grad)


def test_block_backend_refuses_unstructured_masks():
    m = model()
    mk = {"2": masks.random_mask(m[2].weight.shape, 0.9, torch.Generator().manual_seed(0))}
    with pytest.raises(ValueError, match="layer '2' is not block-structured"):
        sparsify(m, mk, backend="block-cpu", exclude=["0", "4", "7"])


def test_auto_without_block_structure_has_no_block_candidate():
    m = model()
    mk = {"2": masks.random_mask(m[2].weight.shape, 0.9, torch.Generator().manual_seed(0))}
    sparsify(m, mk, example_input=torch.randn(2, 3, 6, 6), exclude=["0", "4", "7"])
    assert not any(k.startswith("block-cpu") for k in decision_table(m)[0].times_ms)
