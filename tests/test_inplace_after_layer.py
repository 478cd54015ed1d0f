"""An in-place op right after a packed layer (nn.ReLU(inplace=True), as torchvision models use) must work and give
the dense gradients, although the kernels return views of their own buffers."""
import pytest
import torch
from torch import nn

from sparsetrain import BlockSparseConv2d, BlockSparseLinear, SparseConv2d, SparseLinear, masks
from sparsetrain.ops.block_conv import BLOCK_VARIANTS

D = torch.float64


def _layers():
    g = torch.Generator().manual_seed(0)
    conv = dict(kernel_size=3, padding=1, dtype=D)
    yield "linear", SparseLinear.from_dense(nn.Linear(16, 8, dtype=D), masks.random_mask((8, 16), 0.5, g)), (4, 16)
    for variant in ("batch-last", "over-width"):
        for stride in (1, 2):
            c = nn.Conv2d(8, 8, stride=stride, **conv)
            yield (f"conv-{variant}-s{stride}", SparseConv2d.from_dense(c, masks.random_mask((8, 8, 3, 3), 0.5, g),
                                                                        variant=variant), (4, 8, 6, 6))
    for variant in BLOCK_VARIANTS:
        c = nn.Conv2d(8, 8, **conv)
        yield (f"block-{variant}", BlockSparseConv2d.from_dense(c, masks.hrbp_random((8, 8, 3, 3), 0.5, groups=1),
                                                                variant=variant), (9, 8, 6, 6))
    lin = nn.Linear(16, 8, dtype=D)
    yield "block-linear", BlockSparseLinear.from_dense(lin, masks.hrbp(masks.random_mask((8, 16), 0.5, g),
                                                                       groups=1)), (4, 16)


@pytest.mark.parametrize("name, layer, shape", list(_layers()), ids=lambda v: v if isinstance(v, str) else "")
def test_inplace_relu_after_packed_layer(name, layer, shape):
    dense = layer.to_dense()
    x = torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(1))
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys = nn.ReLU(inplace=True)(layer(xs))
    yd = nn.ReLU(inplace=True)(dense(xd))
    torch.testing.assert_close(ys, yd)
    (ys * torch.arange(ys.numel(), dtype=D).view(ys.shape)).sum().backward()
    (yd * torch.arange(yd.numel(), dtype=D).view(yd.shape)).sum().backward()
    torch.testing.assert_close(xs.grad, xd.grad)
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, dense.bias.grad)
