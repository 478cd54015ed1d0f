"""Second-order gradients: every sparse CPU op refuses ``create_graph=True`` by name instead of returning gradients
that silently carry no graph (a gradient penalty would lose the layer's weight-gradient terms)."""
import pytest
import torch
from helpers import masked_
from torch import nn

from sparsetrain import BlockSparseConv2d, SparseConv2d, SparseLinear
from sparsetrain.masks import hrbp_random
from sparsetrain.ops.block_conv import BLOCK_VARIANTS


def _conv():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    masked_(conv, 0.7)
    return conv


def layers():
    lin = nn.Linear(12, 6)
    masked_(lin, 0.7)
    yield "SparseLinear", SparseLinear.from_dense(lin), (5, 12)
    for v in SparseConv2d.from_dense(_conv()).variants():
        yield "SparseConv2d", SparseConv2d.from_dense(_conv(), variant=v), (3, 8, 6, 6)
    conv = _conv()
    lay = hrbp_random(conv.weight.shape, 0.25, groups=2, generator=torch.Generator().manual_seed(0))
    for v in BLOCK_VARIANTS:
        yield "BlockSparseConv2d", BlockSparseConv2d.from_dense(conv, lay, variant=v), (3, 8, 6, 6)


@pytest.mark.parametrize("name,layer,shape", list(layers()))
def test_create_graph_is_refused_by_name_and_first_order_still_works(name, layer, shape):
    x = torch.randn(*shape, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"{name}: second-order gradients .* not supported"):
        torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    (gx,) = torch.autograd.grad(layer(x).square().sum(), x)  # the same call without a graph: fine
    ref = layer.to_dense()
    (want,) = torch.autograd.grad(ref(x).square().sum(), x)
    torch.testing.assert_close(gx, want, rtol=1e-4, atol=1e-5)
