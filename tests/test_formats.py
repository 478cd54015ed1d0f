"""CSR and ConvCSR: pack/unpack round trips, index widths, and the strict validators."""
import dataclasses

import pytest
import torch

from sparsetrain import CSR, ConvCSR


def test_csr_round_trip_and_order():
    w = torch.randn(7, 11) * (torch.rand(7, 11) > 0.6)
    c = CSR.pack(w)
    c.validate()
    assert c.nnz == int((w != 0).sum())
    assert torch.equal(c.to_dense(), w) and torch.equal(c.mask(), w != 0)
    assert torch.equal(c.values, w[w != 0])  # row-major order, the order of weight[mask]
    assert c.row_ptr.dtype == torch.int64 and c.cols.dtype == torch.int32


def test_csr_explicit_mask_keeps_zero_valued_weights():
    w = torch.zeros(3, 4)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[1, 2] = True
    c = CSR.pack(w, mask)
    assert c.nnz == 1 and torch.equal(c.mask(), mask)


def test_conv_round_trip_and_paper_example_layout():
    w = torch.zeros(3, 2, 2, 3)
    w[0, 0, 0, 1] = 1
    w[1, 0, 1, 1] = 2
    w[1, 1, 1, 0] = 3
    w[2, 1, 0, 2] = 4
    c = ConvCSR.pack(w)
    c.validate()
    assert c.och.tolist() == [0, 1, 3, 4]
    assert c.ich.tolist() == [[0, 1, 1], [0, 1, 2], [0, 0, 1]]
    assert c.kh.tolist() == [0, 1, 1, 0] and c.kw.tolist() == [1, 1, 0, 2]
    assert torch.equal(c.to_dense(), w)


def test_conv_index_widths_do_not_overflow():
    w = torch.ones(2, 4000, 3, 3)  # 36,000 nonzeros per output channel, past int16
    c = ConvCSR.pack(w)
    c.validate()
    assert c.ich.dtype == torch.int32 and int(c.ich[0, -1]) == 36_000
    assert torch.equal(c.to_dense(), w)


def test_to_dense_is_differentiable_in_values():
    c = CSR.pack(torch.randn(4, 5))
    v = c.values.clone().requires_grad_()
    (c.to_dense(v) * torch.arange(20.0).view(4, 5)).sum().backward()
    assert torch.equal(v.grad, torch.arange(20.0))


@pytest.mark.parametrize("field,value,msg", [
    ("row_ptr", torch.tensor([0, 2, 1, 3]), "non-decreasing"),
    ("cols", torch.tensor([0, 5, 1], dtype=torch.int32), r"cols must lie"),
    ("cols", torch.tensor([1, 0, 2], dtype=torch.int32), "strictly increasing"),
    ("values", torch.zeros(2), "values shape"),
])
def test_csr_validator_rejects_corruption(field, value, msg):
    c = CSR(torch.tensor([0, 2, 2, 3]), torch.tensor([0, 1, 2], dtype=torch.int32), torch.ones(3), (3, 4))
    c.validate()
    with pytest.raises(ValueError, match=msg):
        dataclasses.replace(c, **{field: value}).validate()


def test_conv_validator_rejects_corruption():
    c = ConvCSR.pack(torch.randn(3, 2, 3, 3))
    with pytest.raises(ValueError, match="kh must lie"):
        dataclasses.replace(c, kh=c.kh + 3).validate()
    bad = c.ich.clone()
    bad[0, 1] = 99
    with pytest.raises(ValueError):
        dataclasses.replace(c, ich=bad).validate()


def test_mask_errors_name_the_argument():
    w = torch.randn(3, 4)
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        CSR.pack(w, torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"mask shape \(4, 3\) does not match weight shape \(3, 4\)"):
        CSR.pack(w, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="weight must be 4-D"):
        ConvCSR.pack(w)


def test_plan_cache_is_bounded():
    from sparsetrain.ops.plan import Plan
    p = Plan()
    for i in range(20):
        p[i] = i
    assert len(p) == Plan.limit and list(p) == list(range(20 - Plan.limit, 20))
