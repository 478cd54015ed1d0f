"""Reference checks: a sparse module against dense PyTorch autograd on the same masked weight."""
from __future__ import annotations

import torch


def compare(sparse, dense, x, grad_fn=None, rtol=1e-9, atol=1e-9, needs_x_grad=True):
    """Assert output, dX, dW at the kept positions and the bias gradient match the dense module."""
    mask = sparse.mask()
    with torch.no_grad():
        dense.weight.mul_(mask)
    xs = x.detach().clone().requires_grad_(needs_x_grad)
    xd = x.detach().clone().requires_grad_(needs_x_grad)
    ys, yd = sparse(xs), dense(xd)
    assert ys.shape == yd.shape
    torch.testing.assert_close(ys, yd, rtol=rtol, atol=atol)
    if grad_fn is None:
        g = torch.randn(yd.shape, dtype=yd.dtype, generator=torch.Generator().manual_seed(1))
        grad_fn = lambda y: (y * g).sum()  # noqa: E731
    grad_fn(ys).backward()
    grad_fn(yd).backward()
    if needs_x_grad:
        torch.testing.assert_close(xs.grad, xd.grad, rtol=rtol, atol=atol)
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[mask], rtol=rtol, atol=atol)
    if dense.bias is not None:
        torch.testing.assert_close(sparse.bias.grad, dense.bias.grad, rtol=rtol, atol=atol)
    return ys


def masked_(module, sparsity, seed=0, empty_rows=0):
    """Zero ``module.weight`` outside a random mask (optionally zeroing whole leading rows); returns the mask."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(module.weight.shape, generator=gen) >= sparsity
    if empty_rows:
        mask[:empty_rows] = False
    with torch.no_grad():
        module.weight.mul_(mask)
    return mask
