"""BlockSparseConv2d / BlockSparseLinear against dense PyTorch autograd on the derived mask."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from sparsetrain import BlockSparseConv2d, BlockSparseLinear
from sparsetrain.kernels.cpu.microkernels import LANES, WIDE_NV
from sparsetrain.masks import hrbp, hrbp_random, random_mask

D = torch.float64


def compare_block(sparse, dense, x, rtol=1e-9, atol=1e-9, needs_x_grad=True):
    """Output, dX, dW (as block values) and bias gradient of ``sparse`` equal dense autograd on its mask."""
    layout = sparse.layout
    with torch.no_grad():
        dense.weight.mul_(layout.mask)
    xs = x.detach().clone().requires_grad_(needs_x_grad)
    xd = x.detach().clone().requires_grad_(needs_x_grad)
    ys, yd = sparse(xs), dense(xd)
    assert ys.shape == yd.shape
    torch.testing.assert_close(ys, yd, rtol=rtol, atol=atol)
    g = torch.randn(yd.shape, dtype=yd.dtype, generator=torch.Generator().manual_seed(1))
    (ys * g).sum().backward()
    (yd * g).sum().backward()
    if needs_x_grad:
        torch.testing.assert_close(xs.grad, xd.grad, rtol=rtol, atol=atol)
    torch.testing.assert_close(sparse.values.grad, layout.gather(dense.weight.grad), rtol=rtol, atol=atol)
    if dense.bias is not None:
        torch.testing.assert_close(sparse.bias.grad, dense.bias.grad, rtol=rtol, atol=atol)


def conv_pair(cin, cout, k, density=0.2, groups=4, seed=0, dtype=D, layout_fn="random", variant=None, **kw):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, dtype=dtype, **kw)
    gen = torch.Generator().manual_seed(seed)
    if layout_fn == "random":
        layout = hrbp_random(conv.weight.shape, density, groups=groups, min_rows=1, generator=gen)
    else:
        layout = hrbp(random_mask(conv.weight.shape, 1 - density, gen), groups=groups, min_rows=1)
    return BlockSparseConv2d.from_dense(conv, layout, variant=variant), conv


GEOMETRIES = [  # plane: the output plane has the input's shape (what the planes variant needs)
    dict(k=3, padding=1, plane=True),
    dict(k=3, padding=0),
    dict(k=3, stride=2, padding=1),
    dict(k=3, stride=3),
    dict(k=1, plane=True),
    dict(k=(3, 1), padding=(1, 0), plane=True),
    dict(k=3, dilation=2, padding=2, plane=True),
    dict(k=3, padding="same", plane=True),
    dict(k=5, padding=2, bias=False, plane=True),
    dict(k=3, padding=1, padding_mode="reflect"),  # padded by F.pad first: the kernels see padding 0
]


VARIANTS = ["over-width", "batch-last", "runs", "tiled", "planes"]
STRIDE1 = ("runs", "tiled", "planes")


@pytest.mark.parametrize("geo", GEOMETRIES, ids=str)
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("variant", VARIANTS)
def test_conv_geometries(geo, batch, variant):
    geo = dict(geo)
    fits = geo.pop("plane", False)
    k = geo.pop("k")
    if variant in STRIDE1 and geo.get("stride", 1) != 1:
        with pytest.raises(ValueError, match=f"variant '{variant}' needs stride 1"):
            conv_pair(12, 16, k, variant=variant, **geo)
        return
    if variant == "planes" and not fits:
        with pytest.raises(ValueError, match="variant 'planes' needs an output plane of the input's shape"):
            conv_pair(12, 16, k, variant=variant, **geo)
        return
    sparse, dense = conv_pair(12, 16, k, variant=variant, **geo)
    compare_block(sparse, dense, torch.randn(batch, 12, 9, 8, dtype=D))


@settings(max_examples=20, deadline=None)
@given(cin=st.integers(1, 20), cout=st.sampled_from([4, 6, 12, 24]), h=st.integers(3, 11), w=st.integers(3, 11),
       batch=st.sampled_from([1, 2, 3, 7, 16, 33]), stride=st.sampled_from([1, 2]), pad=st.sampled_from([0, 1]),
       density=st.sampled_from([0.05, 0.2, 0.4, 1.0]), groups=st.sampled_from([1, 2, 3]),
       mode=st.sampled_from(["random", "hrbp"]), variant=st.sampled_from(VARIANTS), seed=st.integers(0, 99))
def test_conv_property(cin, cout, h, w, batch, stride, pad, density, groups, mode, variant, seed):
    if mode == "hrbp" and density == 1.0:
        density = 0.9  # random_mask needs sparsity in [0, 1)
    if variant in STRIDE1 and stride != 1 or variant == "planes" and pad != 1:
        variant = None  # these need stride 1 (planes also padding 1); None picks a variant that can run it
    sparse, dense = conv_pair(cin, cout, 3, density, groups, seed, layout_fn=mode, variant=variant, stride=stride,
                              padding=pad)
    compare_block(sparse, dense, torch.randn(batch, cin, h, w, dtype=D))


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_chunked_and_noncontiguous_input(monkeypatch, variant):
    import sparsetrain.ops.block_conv as bc
    import sparsetrain.ops.block_runs as br
    monkeypatch.setattr(bc, "CHUNK_BYTES", 4096)  # several chunks, a ragged last one
    monkeypatch.setattr(br, "_RUN_TILE", 37)  # several run tiles per plane, a ragged last one
    sparse, dense = conv_pair(16, 32, 3, 0.1, 8, dtype=torch.float32, variant=variant, padding=1)
    x = torch.randn(7, 10, 10, 16).permute(0, 3, 1, 2)  # channels_last-like view
    compare_block(sparse, dense, x, rtol=1e-4, atol=1e-4)


def test_chained_batch_last_layers_and_default_variant():
    a, da = conv_pair(8, 16, 3, 0.3, 2, variant="batch-last", padding=1)
    b, db = conv_pair(16, 16, 3, 0.3, 2, seed=1, padding=1)
    x = torch.randn(9, 8, 6, 6, dtype=D)
    with torch.no_grad():
        da.weight.mul_(a.mask())
        db.weight.mul_(b.mask())
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yd = b(torch.relu(a(xs))), db(torch.relu(da(xd)))
    assert a(x).is_contiguous()  # batch-last inside, contiguous NCHW handed on (BatchNorm is slow on the view)
    torch.testing.assert_close(ys, yd)
    ys.square().sum().backward()
    yd.square().sum().backward()
    torch.testing.assert_close(xs.grad, xd.grad)
    from sparsetrain.ops.block_conv import choose_block_variant
    # batch 9: the batch-last tiles would be half padding; a 3x3 plane fills under 3/4 of a planes tile
    assert choose_block_variant(torch.randn(9, 16, 3, 3), b.geometry) == "batch-last"
    assert choose_block_variant(torch.randn(16, 16, 8, 8), b.geometry) == "planes"  # a whole register tile per plane
    assert choose_block_variant(torch.randn(1, 16, 7, 7), b.geometry) == "planes"  # 49 of 64 lanes
    assert choose_block_variant(torch.randn(32, 16, 32, 32), b.geometry) == "planes"
    if LANES * WIDE_NV == 64:  # AVX-512: a 4x4 plane fills a vector, one per image (image tiles), up to batch 64
        assert choose_block_variant(torch.randn(16, 16, 4, 4), b.geometry) == "planes"
        assert choose_block_variant(torch.randn(64, 16, 4, 4), b.geometry) == "planes"
        assert choose_block_variant(torch.randn(128, 16, 4, 4), b.geometry) == "tiled"
        assert choose_block_variant(torch.randn(16, 16, 2, 2), b.geometry) == "tiled"  # a quarter of a vector
    unpadded = conv_pair(16, 16, 3, 0.3, 2, seed=1)[0]  # padding 0: the output plane shrinks
    assert choose_block_variant(torch.randn(16, 16, 8, 8), unpadded.geometry) == "tiled"
    assert choose_block_variant(torch.randn(32, 16, 34, 34), unpadded.geometry) == "runs"
    strided = conv_pair(16, 16, 3, 0.3, 2, stride=2, padding=1)[0]
    assert choose_block_variant(torch.randn(8, 16, 16, 16), strided.geometry) == "batch-last"
    assert choose_block_variant(torch.randn(2, 16, 32, 32), strided.geometry) == "over-width"


def test_batch_last_gradients_are_contiguous():
    """The batch-last variant hands a leaf input a contiguous .grad (our transpose, not AccumulateGrad's strided copy),
    and the gradient between two batch-last layers is contiguous too. Values as dense autograd."""
    a, da = conv_pair(8, 16, 3, 0.3, 2, variant="batch-last", padding=1)
    b, db = conv_pair(16, 16, 3, 0.3, 2, seed=1, variant="batch-last", padding=1)
    with torch.no_grad():
        da.weight.mul_(a.mask())
        db.weight.mul_(b.mask())
    x = torch.randn(9, 8, 6, 6, dtype=D)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    seen = []
    hs = a(xs)
    hs.register_hook(seen.append)
    b(hs).square().sum().backward()
    db(da(xd)).square().sum().backward()
    assert xs.grad.is_contiguous()
    assert seen[0].is_contiguous()  # the gradient reaching a: b's dX, transposed back by b
    torch.testing.assert_close(xs.grad, xd.grad)
    torch.testing.assert_close(a.values.grad, a.layout.gather(da.weight.grad))


@pytest.mark.parametrize("rows,cin,k", [(3, 5, 3), (1, 2, 1), (5, 7, (1, 3))])
def test_runs_variant_odd_rows_and_column_tails(rows, cin, k):
    """Odd rows per block (the last row pairs with itself) and block widths that are not a multiple of four."""
    sparse, dense = conv_pair(cin, 2 * rows, k, 0.4, 2, variant="runs", padding="same")
    assert sparse.layout.block_shape[0] == rows
    compare_block(sparse, dense, torch.randn(3, cin, 7, 6, dtype=D))
    x = torch.randn(2, cin, 5, 5, dtype=D)  # no input gradient wanted (a first layer): dW and bias only
    compare_block(sparse, dense, x, needs_x_grad=False)


def test_full_density_is_dense_conv_and_empty_batch():
    sparse, dense = conv_pair(8, 8, 3, 1.0, 1, padding=1)
    assert sparse.density == 1.0
    compare_block(sparse, dense, torch.randn(2, 8, 6, 6, dtype=D))
    y = sparse(torch.randn(0, 8, 6, 6, dtype=D))
    assert y.shape == (0, 8, 6, 6)
    x = torch.randn(8, 6, 6, dtype=D)  # unbatched
    torch.testing.assert_close(sparse(x), sparse.to_dense()(x))


def test_unused_input_channels_get_zero_gradient():
    conv = nn.Conv2d(16, 8, 3, padding=1, dtype=D)
    layout = hrbp_random(conv.weight.shape, 0.05, groups=1, min_rows=1, generator=torch.Generator().manual_seed(0))
    sparse = BlockSparseConv2d.from_dense(conv, layout)
    x = torch.randn(2, 16, 5, 5, dtype=D, requires_grad=True)
    sparse(x).sum().backward()
    unused = torch.ones(16, dtype=torch.bool)
    unused[layout.channels.flatten()] = False
    assert bool(unused.any()) and bool((x.grad[:, unused] == 0).all())
    sparse.zero_grad()
    compare_block(sparse, conv, x.detach())


def test_conv_roundtrip_state_dict_and_set_mask():
    sparse, dense = conv_pair(16, 16, 3, 0.2, 4, padding=1)
    d = sparse.to_dense()
    torch.testing.assert_close(d.weight, dense.weight * sparse.mask())
    other, _ = conv_pair(16, 16, 3, 0.3, 2, seed=5, padding=1)
    other.load_state_dict(sparse.state_dict())
    torch.testing.assert_close(other.dense_weight(), sparse.dense_weight())
    x = torch.randn(3, 16, 6, 6, dtype=D)
    torch.testing.assert_close(other(x), sparse(x))
    new = hrbp_random((16, 16, 3, 3), 0.1, groups=2, min_rows=1, generator=torch.Generator().manual_seed(9))
    w = sparse.dense_weight().detach()
    sparse.set_mask(new)
    assert torch.equal(sparse.mask(), new.mask)
    torch.testing.assert_close(sparse.dense_weight(), w * new.mask)
    compare_block(sparse, sparse.to_dense(), torch.randn(2, 16, 6, 6, dtype=D))


def test_linear_matches_dense():
    torch.manual_seed(0)
    lin = nn.Linear(40, 32, dtype=D)
    layout = hrbp(random_mask((32, 40), 0.8, torch.Generator().manual_seed(0)), groups=4)
    sparse = BlockSparseLinear.from_dense(lin, layout)
    compare_block(sparse, lin, torch.randn(3, 5, 40, dtype=D))
    assert isinstance(sparse.to_dense(), nn.Linear)


def test_bad_arguments():
    conv = nn.Conv2d(8, 8, 3)
    with pytest.raises(ValueError, match="groups=1"):
        BlockSparseConv2d.from_dense(nn.Conv2d(8, 8, 3, groups=2), hrbp_random((8, 4, 3, 3), 0.5, groups=1))
    with pytest.raises(ValueError, match="does not match weight shape"):
        BlockSparseConv2d.from_dense(conv, hrbp_random((8, 4, 3, 3), 0.5, groups=1))
    with pytest.raises(ValueError, match="not block-structured"):
        BlockSparseConv2d.from_dense(conv, random_mask((8, 8, 3, 3), 0.9, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="variant must be one of"):
        BlockSparseConv2d.from_dense(conv, hrbp_random((8, 8, 3, 3), 0.5, groups=1), variant="bl")
    with pytest.raises(ValueError, match="backend must be one of"):
        BlockSparseConv2d.from_dense(conv, hrbp_random((8, 8, 3, 3), 0.5, groups=1), backend="sparse-cpu")
    sparse = BlockSparseConv2d.from_dense(conv, hrbp_random((8, 8, 3, 3), 0.5, groups=1))
    with pytest.raises(TypeError, match="dtype"):
        sparse(torch.randn(1, 8, 5, 5, dtype=D))
    with pytest.raises(ValueError, match="expects input of shape \\(N, 8, H, W\\)"):
        sparse(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="too small for kernel"):
        sparse(torch.randn(1, 8, 2, 2))
    lay = hrbp_random((8, 8, 3, 3), 0.5, groups=1)
    half = BlockSparseConv2d.from_dense(nn.Conv2d(8, 8, 3, dtype=torch.bfloat16), lay)
    with pytest.raises(TypeError, match="CPU kernels compute in torch.float32 or torch.float64"):
        half(torch.randn(1, 8, 5, 5, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="not supported by the block layers"):
        BlockSparseConv2d.from_dense(nn.Conv2d(8, 8, 3, dtype=torch.complex64), lay)


@pytest.mark.parametrize("batch", [16, 9, 40, 12])
def test_tiled_variant_chained_contiguous_and_padded_batches(batch):
    """Two tiled layers: the output and every gradient are contiguous NCHW tensors (BatchNorm and pooling are slow
    on batch-last views), also for a batch that is not a multiple of the vector (padded with zero images inside)
    and for the inner gradient between the layers. The output can be modified in place. Against dense autograd."""
    a, da = conv_pair(8, 16, 3, 0.3, 2, variant="tiled", padding=1)
    b, db = conv_pair(16, 12, 3, 0.3, 4, seed=1, variant="tiled", padding=(0, 1), dilation=(1, 2))
    with torch.no_grad():
        da.weight.mul_(a.mask())
        db.weight.mul_(b.mask())
    x = torch.randn(batch, 8, 7, 6, dtype=D)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    seen = []
    hs = a(xs)
    assert hs.is_contiguous() and hs.shape == (batch, 16, 7, 6)
    hs.register_hook(seen.append)
    ys, yd = b(torch.relu_(hs * 1.0)), db(torch.relu(da(xd)))
    torch.testing.assert_close(ys, yd)
    ys.square().sum().backward()
    yd.square().sum().backward()
    assert xs.grad.is_contiguous() and seen[0].is_contiguous()
    torch.testing.assert_close(xs.grad, xd.grad)
    torch.testing.assert_close(a.values.grad, a.layout.gather(da.weight.grad))
    torch.testing.assert_close(b.values.grad, b.layout.gather(db.weight.grad))
    torch.testing.assert_close(b.bias.grad, db.bias.grad)
    out = a(x)
    out.relu_()  # not an autograd view of an internal buffer
    torch.testing.assert_close(out, torch.relu(da(x)))


@pytest.mark.parametrize("dtype", [D, torch.float32])
@pytest.mark.parametrize("rows,cin,k,batch", [(3, 5, 3, 16), (1, 2, 1, 80), (5, 7, (1, 3), 144), (6, 3, (2, 2), 64)])
def test_tiled_variant_tile_tails(rows, cin, k, batch, dtype):
    """Block rows and widths that are not a multiple of the four-wide register tile, wide and one-vector lane tiles
    (batch 80 with AVX-512: one 64-lane tile and one 16-lane), with and without an input gradient, in both dtypes."""
    sparse, dense = conv_pair(cin, 2 * rows, k, 0.4, 2, dtype=dtype, variant="tiled", padding="same")
    assert sparse.layout.block_shape[0] == rows
    tol = {} if dtype == D else dict(rtol=1e-4, atol=1e-3)  # float32 dW: sums of ~6000 products
    compare_block(sparse, dense, torch.randn(batch, cin, 7, 6, dtype=dtype), **tol)
    compare_block(sparse, dense, torch.randn(batch, cin, 5, 5, dtype=dtype), needs_x_grad=False, **tol)


def test_tiled_batch_split_rule():
    """Sub-batches are one register tile wide (WIDE images) while every thread still gets one, cover the batch
    exactly, and are whole vectors."""
    from sparsetrain.kernels.cpu.block_tiles import WIDE
    from sparsetrain.kernels.cpu.microkernels import LANES
    from sparsetrain.ops.block_tiles import batch_split
    assert batch_split(2 * WIDE, 2) == (WIDE, WIDE)
    assert batch_split(2 * WIDE, 1) == (WIDE, WIDE)
    assert batch_split(LANES, 4) == (LANES,)
    for B in range(LANES, 12 * LANES, LANES):
        for threads in (1, 2, 3, 8):
            split = batch_split(B, threads)
            assert sum(split) == B and all(0 < L <= WIDE and L % LANES == 0 for L in split)
            assert len(split) >= min(threads, B // LANES)
            assert len(set(split[:-1])) <= 1  # equal sub-batches, then at most one narrower


def _split(kind, B):
    """A valid split of B lanes (a multiple of LANES) into sub-batches of at most WIDE lanes."""
    from sparsetrain.kernels.cpu.block_tiles import WIDE
    from sparsetrain.kernels.cpu.microkernels import LANES
    if kind == "vectors":
        return (LANES,) * (B // LANES)
    head = (LANES,) if kind == "narrow-first" and B > LANES else ()
    rest = B - sum(head)
    return head + (WIDE,) * (rest // WIDE) + ((rest % WIDE,) if rest % WIDE else ())


@pytest.mark.parametrize("kind", ["vectors", "narrow-first", "wide"])
@pytest.mark.parametrize("batch", [20, 48, 96])
def test_tiled_variant_any_sub_batches(monkeypatch, kind, batch):
    """Every split of the batch into sub-batches (one vector each, unequal, as wide as a tile; the thread count
    picks one) gives dense autograd's output and gradients, on a padded batch (20 images) too."""
    import sparsetrain.ops.block_tiles as bt
    monkeypatch.setattr(bt, "batch_split", lambda B, threads: _split(kind, B))
    sparse, dense = conv_pair(6, 12, 3, 0.4, 3, variant="tiled", padding=1)
    compare_block(sparse, dense, torch.randn(batch, 6, 5, 7, dtype=D))


def test_tiled_workspaces_are_safe_across_calls():
    """The tiled op's batch-last buffers are reused between calls: two graphs through one layer alive at once,
    backward in the other order, one of them twice (retain_graph), a smaller batch in between, all match dense."""
    sparse, dense = conv_pair(6, 16, 3, 0.4, 2, variant="tiled", padding=1)
    with torch.no_grad():
        dense.weight.mul_(sparse.mask())
    xs = [torch.randn(b, 6, 5, 4, dtype=D) for b in (32, 32, 16)]
    g = [torch.randn(b, 16, 5, 4, dtype=D) for b in (32, 32, 16)]
    ins = [x.clone().requires_grad_() for x in xs]
    outs = [sparse(x) for x in ins[:2]]
    for y, x in zip(outs, xs[:2]):
        torch.testing.assert_close(y, dense(x))
    outs[1].backward(g[1], retain_graph=True)
    sparse(ins[2]).backward(g[2])  # another input size between the two backward passes
    outs[0].backward(g[0])
    outs[1].backward(g[1])
    for i, (x, gy) in enumerate(zip(xs, g)):
        xd = x.clone().requires_grad_()
        dense(xd).backward(gy)
        torch.testing.assert_close(ins[i].grad, xd.grad * (2 if i == 1 else 1))
    dense.weight.grad = None
    for x, gy, k in zip(xs, g, (1, 2, 1)):
        (dense(x) * k).backward(gy)
    torch.testing.assert_close(sparse.values.grad, sparse.layout.gather(dense.weight.grad))


PLANES = [(1, 1), (2, 2), (4, 4), (3, 5), (7, 7), (8, 8), (9, 8), (16, 16), (17, 3), (2, 33)]
PLANE_GEOMETRIES = [dict(k=3, padding=1), dict(k=(3, 5), padding="same", dilation=(2, 1)), dict(k=4, padding="same"),
                    dict(k=1, bias=False)]


def nan_buffers(monkeypatch):
    """The planes op's output and gradient buffers start as NaN instead of whatever the allocator hands out (often
    zeros), so an element the kernels fail to write shows."""
    import numpy as np

    import sparsetrain.ops.block_planes as bp
    from sparsetrain.ops.common import NP_DTYPES
    monkeypatch.setattr(bp, "np_empty", lambda shape, dtype: np.full(shape, np.nan, NP_DTYPES[dtype]))


@pytest.mark.parametrize("hw", PLANES, ids=str)
@pytest.mark.parametrize("geo", PLANE_GEOMETRIES, ids=str)
def test_planes_variant_any_plane(monkeypatch, hw, geo):
    """The NCHW-plane kernels on planes smaller than a vector, with a ragged last vector and several register tiles,
    for asymmetric 'same' padding (even kernel), dilation and 1x1 kernels; batch 1 (the input gradient then splits a
    plane among tasks) and 3, with and without an input gradient. Heavily overlapping groups (density 0.4: most
    input channels belong to several groups, so later groups add to the first one's input gradient); the buffers
    start as NaN."""
    nan_buffers(monkeypatch)
    geo = dict(geo)
    sparse, dense = conv_pair(6, 10, geo.pop("k"), 0.4, 2, variant="planes", **geo)
    compare_block(sparse, dense, torch.randn(1, 6, *hw, dtype=D))
    compare_block(sparse, dense, torch.randn(3, 6, *hw, dtype=D), needs_x_grad=False)


@pytest.mark.parametrize("hw", [(8, 8), (4, 4)], ids=str)  # plane tiles; image tiles (one plane per vector)
def test_planes_variant_unused_channels_and_float32(monkeypatch, hw):
    """Input channels in no group get a zero gradient (the kernel writes them, the buffer is uninitialised: NaN here),
    in float32, with a frozen weight too; a batch of 5 leaves the last image tile one image."""
    nan_buffers(monkeypatch)
    conv = nn.Conv2d(16, 8, 3, padding=1)
    layout = hrbp_random(conv.weight.shape, 0.05, groups=2, min_rows=1, generator=torch.Generator().manual_seed(0))
    sparse = BlockSparseConv2d.from_dense(conv, layout, variant="planes")
    unused = torch.ones(16, dtype=torch.bool)
    unused[layout.channels.flatten()] = False
    assert bool(unused.any())
    x = torch.randn(5, 16, *hw, requires_grad=True)
    sparse(x).sum().backward()
    assert bool((x.grad[:, unused] == 0).all())
    sparse.zero_grad()
    compare_block(sparse, conv, x.detach(), rtol=1e-4, atol=1e-4)
    sparse.values.requires_grad_(False)
    xs = x.detach().clone().requires_grad_()
    sparse(xs).square().sum().backward()
    xd = x.detach().clone().requires_grad_()
    with torch.no_grad():
        conv.weight.mul_(layout.mask)
    conv(xd).square().sum().backward()
    torch.testing.assert_close(xs.grad, xd.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hw", [(6, 7), (3, 3)], ids=str)  # plane tiles; image tiles (the tile's last two masked)
def test_planes_variant_reads_nothing_outside_the_planes(hw):
    """The masked loads touch no memory past a plane: input and output gradient are views into buffers whose other
    images are NaN, and every result is finite and equals dense autograd."""
    sparse, dense = conv_pair(5, 8, 3, 0.4, 2, variant="planes", padding=1)
    with torch.no_grad():
        dense.weight.mul_(sparse.mask())
    nan = float("nan")
    xbuf, gbuf = torch.full((4, 5, *hw), nan, dtype=D), torch.full((4, 8, *hw), nan, dtype=D)
    xbuf[1:3], gbuf[1:3] = torch.randn(2, 5, *hw, dtype=D), torch.randn(2, 8, *hw, dtype=D)
    xs, gy = xbuf[1:3].requires_grad_(), gbuf[1:3]
    xd = xs.detach().clone().requires_grad_()
    ys, yd = sparse(xs), dense(xd)
    ys.backward(gy)
    yd.backward(gy)
    assert bool(torch.isfinite(ys).all() and torch.isfinite(xs.grad).all() and torch.isfinite(sparse.values.grad).all())
    torch.testing.assert_close(ys, yd)
    torch.testing.assert_close(xs.grad, xd.grad)
    torch.testing.assert_close(sparse.values.grad, sparse.layout.gather(dense.weight.grad))


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("images", [1, 3, 1 << 10])
def test_planes_variant_weight_gradient_chunks(monkeypatch, packed, images):
    """dW walks the batch in chunks of images, packed or read in place: one image per chunk, a ragged last chunk,
    the whole batch; block rows and channels that are not a multiple of the register tile."""
    import sparsetrain.ops.block_planes as bp
    monkeypatch.setattr(bp, "DW_PACKED_BELOW", 1 << 30 if packed else 0)
    monkeypatch.setattr(bp, "DW_PACK_ELEMS", images * 4 * 16)  # images of the 4x4 planes below per packed chunk
    monkeypatch.setattr(bp, "DW_VECTORS", images * -(-16 // LANES))
    sparse, dense = conv_pair(7, 12, 3, 0.3, 2, variant="planes", padding=1)
    rows, cols = sparse.layout.block_shape
    assert rows % 4 and (cols // sparse.cells.shape[1]) % 4  # partial row and channel tiles
    compare_block(sparse, dense, torch.randn(7, 7, 4, 4, dtype=D))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vector_sum_any_length_reads_nothing_outside(dtype):
    """The bias gradient's vector sum over runs of every length up to five vectors plus a tail, at odd offsets, in a
    buffer that is NaN outside the run (the masked tail reads nothing past it)."""
    import numpy as np
    from numba import njit

    from sparsetrain.kernels.cpu.microkernels import vector_sum

    @njit
    def total(a, lo, n):
        return vector_sum(a, lo, n)

    rng = np.random.default_rng(0)
    for n in range(5 * 4 * LANES + 3):
        for lo in (0, 1, 3):
            buf = np.full(lo + n + 2 * LANES, np.nan, dtype=np.float32 if dtype == torch.float32 else np.float64)
            buf[lo:lo + n] = rng.standard_normal(n)
            got = total(buf, lo, n)
            np.testing.assert_allclose(got, buf[lo:lo + n].astype(np.float64).sum(), rtol=1e-5, atol=1e-5)


def test_planes_variant_chained_contiguous():
    """Two planes layers: the output and every gradient are contiguous NCHW tensors, the output can be modified in
    place, and a channels_last input works; against dense autograd."""
    a, da = conv_pair(8, 16, 3, 0.3, 2, variant="planes", padding=1)
    b, db = conv_pair(16, 12, 3, 0.3, 4, seed=1, variant="planes", padding=(1, 2), dilation=(1, 2))
    with torch.no_grad():
        da.weight.mul_(a.mask())
        db.weight.mul_(b.mask())
    x = torch.randn(3, 8, 8, 9, dtype=D).to(memory_format=torch.channels_last)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    seen = []
    hs = a(xs)
    assert hs.is_contiguous()
    hs.register_hook(seen.append)
    ys, yd = b(torch.relu_(hs * 1.0)), db(torch.relu(da(xd)))
    torch.testing.assert_close(ys, yd)
    ys.square().sum().backward()
    yd.square().sum().backward()
    assert seen[0].is_contiguous()
    torch.testing.assert_close(xs.grad, xd.grad)
    torch.testing.assert_close(a.values.grad, a.layout.gather(da.weight.grad))
    torch.testing.assert_close(b.bias.grad, db.bias.grad)
    out = a(x)
    out.relu_()
    torch.testing.assert_close(out, torch.relu(da(x)))
