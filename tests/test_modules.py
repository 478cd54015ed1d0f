"""Module behaviour: conversion both ways, state_dict round trips, devices/dtypes, bad arguments."""
import copy
import io

import pytest
import torch
from helpers import masked_
from torch import nn

from sparsetrain import SparseConv2d, SparseLinear
from sparsetrain.nn.sparse_conv import explicit_padding

LAYERS = [(SparseLinear, lambda: nn.Linear(12, 9)), (SparseConv2d, lambda: nn.Conv2d(3, 6, 3, padding=1))]


def test_from_dense_default_mask_is_nonzeros_and_to_dense_round_trips():
    lin = nn.Linear(10, 6)
    masked_(lin, 0.7)
    s = SparseLinear.from_dense(lin)
    assert torch.equal(s.mask(), lin.weight != 0)
    back = s.to_dense()
    assert isinstance(back, nn.Linear)
    assert torch.equal(back.weight, lin.weight) and torch.equal(back.bias, lin.bias)
    conv = nn.Conv2d(3, 5, 3, padding="same", bias=False)
    masked_(conv, 0.5)
    c = SparseConv2d.from_dense(conv)
    cb = c.to_dense()
    assert isinstance(cb, nn.Conv2d) and cb.padding == "same" and cb.bias is None
    assert torch.equal(cb.weight, conv.weight)


def test_only_kept_values_are_parameters_and_indices_are_buffers():
    conv = nn.Conv2d(4, 8, 3)
    mask = masked_(conv, 0.9)
    s = SparseConv2d.from_dense(conv)
    params = dict(s.named_parameters())
    assert set(params) == {"values", "bias"} and params["values"].numel() == int(mask.sum())
    assert {"och", "ich", "kh", "kw"} <= set(dict(s.named_buffers()))


@pytest.mark.parametrize("cls,dense", LAYERS)
def test_state_dict_round_trip_including_a_different_mask(cls, dense):
    a_dense, b_dense = dense(), dense()
    masked_(a_dense, 0.8, seed=1)
    masked_(b_dense, 0.5, seed=2)
    a, b = cls.from_dense(a_dense), cls.from_dense(b_dense)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    assert torch.equal(b.mask(), a.mask()) and torch.equal(b.dense_weight(), a.dense_weight())
    x = torch.randn(2, 12) if cls is SparseLinear else torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(b(x), a(x))  # caches derived from the old mask were dropped


def test_to_float64_and_deepcopy():
    lin = nn.Linear(6, 4)
    masked_(lin, 0.5)
    s = SparseLinear.from_dense(lin).to(torch.float64)
    assert s.values.dtype == torch.float64 and s.row_ptr.dtype == torch.int64
    y = s(torch.randn(3, 6, dtype=torch.float64))
    assert y.dtype == torch.float64
    torch.testing.assert_close(copy.deepcopy(s)(torch.ones(1, 6, dtype=torch.float64)), s(torch.ones(1, 6, dtype=torch.float64)))


@pytest.mark.parametrize("cls,dense", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_converted_to_half_after_construction_is_refused_by_name(cls, dense, dtype):
    layer = cls.from_dense(dense()).to(dtype)  # .half() skips from_dense's dtype check
    x = torch.randn(2, 12, dtype=dtype) if cls is SparseLinear else torch.randn(2, 3, 5, 5, dtype=dtype)
    with pytest.raises(TypeError, match=f"compute in torch.float32 or torch.float64, got {dtype}"):
        layer(x)
    layer.backend = "dense"  # the way out the message names
    assert layer(x).dtype == dtype


def test_set_mask_repacks():
    lin = nn.Linear(5, 4)
    s = SparseLinear.from_dense(lin)
    new = torch.zeros(4, 5, dtype=torch.bool)
    new[:, 0] = True
    s.set_mask(new)
    assert s.nnz == 4 and torch.equal(s.mask(), new)
    torch.testing.assert_close(s.dense_weight()[:, 0], lin.weight[:, 0])


def test_bad_arguments_name_the_argument():
    lin = nn.Linear(5, 4)
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        SparseLinear.from_dense(lin, torch.ones(4, 5))
    with pytest.raises(ValueError, match="mask shape"):
        SparseLinear.from_dense(lin, torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend must be one of"):
        SparseLinear.from_dense(lin, backend="gpu")
    with pytest.raises(TypeError, match="module must be nn.Linear"):
        SparseLinear.from_dense(nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="dtype torch.float16 is not supported"):
        SparseLinear.from_dense(nn.Linear(5, 4).half())
    with pytest.raises(ValueError, match="variant must be one of"):
        SparseConv2d.from_dense(nn.Conv2d(2, 2, 3), variant="fast")
    with pytest.raises(ValueError, match="padding='same' requires stride 1"):
        explicit_padding("same", (3, 3), (1, 1), (2, 2))
    with pytest.raises(ValueError, match="padding must be non-negative"):
        explicit_padding((1, -1), (3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("cls,dense", LAYERS)
def test_loading_another_mask_with_the_same_nnz_drops_cached_structure(cls, dense):
    a_dense, b_dense = dense(), dense()
    masked_(a_dense, 0.0, seed=1)
    masked_(b_dense, 0.0, seed=2)
    with torch.no_grad():  # same count of nonzeros, different positions
        a_dense.weight.view(-1)[::2] = 0
        b_dense.weight.view(-1)[1::2] = 0
    a, b = cls.from_dense(a_dense), cls.from_dense(b_dense)
    assert a.nnz == b.nnz and not torch.equal(a.mask(), b.mask())
    x = torch.randn(2, 12) if cls is SparseLinear else torch.randn(2, 3, 5, 5)
    b(x).sum().backward()  # builds b's cached offsets
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a(xa).sum().backward()
    b(xb).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad)
