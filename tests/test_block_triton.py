"""The Triton block-conv kernels under TRITON_INTERPRET=1 on the CPU, against dense conv autograd (fp32)."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of the kernels

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sparsetrain.masks import hrbp, hrbp_random, random_mask  # noqa: E402
from sparsetrain.ops.block_conv_gpu import block_conv2d_gpu  # noqa: E402
from sparsetrain.ops.conv import ConvGeometry  # noqa: E402

CASES = [  # (batch, cin, cout, h, w, k, stride, pad, dilation, groups, density)
    (1, 5, 8, 6, 7, 3, 1, 1, 1, 2, 0.3),
    (3, 8, 16, 7, 5, 3, 2, 1, 1, 4, 0.2),
    (2, 6, 12, 8, 8, 3, 1, 0, 2, 3, 0.4),
    (2, 16, 8, 5, 5, 1, 1, 0, 1, 1, 0.25),
    (3, 4, 4, 5, 6, 3, 3, 2, 1, 1, 1.0),
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_triton_kernels_match_dense(case, bias):
    B, ci, co, h, w, k, s, pad, dil, groups, density = case
    gen = torch.Generator().manual_seed(sum(case[:6]))
    if density == 1.0:
        layout = hrbp_random((co, ci, k, k), 1.0, groups=groups, min_rows=1, generator=gen)
    else:
        layout = hrbp(random_mask((co, ci, k, k), 1 - density, gen), groups=groups, min_rows=1)
    weight = torch.randn(co, ci, k, k, generator=gen) * layout.mask
    values = layout.gather(weight).requires_grad_()
    b = torch.randn(co, generator=gen).requires_grad_() if bias else None
    x = torch.randn(B, ci, h, w, generator=gen)
    geo = ConvGeometry((s, s), (pad, pad, pad, pad), (dil, dil), 1, (k, k))
    xs = x.clone().requires_grad_()
    y = block_conv2d_gpu(xs, values, b, layout.rows, layout.channels, layout.cells, geo, co)
    wd = weight.clone().requires_grad_()
    bd = b.detach().clone().requires_grad_() if bias else None
    xd = x.clone().requires_grad_()
    yd = F.conv2d(xd, wd, bd, s, pad, dil)
    torch.testing.assert_close(y, yd, rtol=1e-4, atol=1e-4)
    g = torch.randn(yd.shape, generator=gen)
    (y * g).sum().backward()
    (yd * g).sum().backward()
    torch.testing.assert_close(xs.grad, xd.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(values.grad, layout.gather(wd.grad), rtol=1e-4, atol=1e-4)
    if bias:
        torch.testing.assert_close(b.grad, bd.grad, rtol=1e-4, atol=1e-4)


def test_triton_path_refuses_float64():
    layout = hrbp_random((8, 4, 3, 3), 0.5, groups=1)
    geo = ConvGeometry((1, 1), (1, 1, 1, 1), (1, 1), 1, (3, 3))
    v = torch.randn((1,) + layout.block_shape, dtype=torch.float64)
    with pytest.raises(TypeError, match="block-gpu kernels support"):
        block_conv2d_gpu(torch.randn(1, 4, 5, 5, dtype=torch.float64), v, None, layout.rows, layout.channels,
                         layout.cells, geo, 8)
