"""Python-side overhead of the sparse layers: fwd+bwd wall time minus time inside the compute kernels.

Everything outside the run kernels (``spmm_runs``/``sddmm_runs``/``spmm_sddmm_runs``/``spmm_sddmm_rows``, the
``_same`` twins) and the stride>1 conv kernels counts as overhead: layout changes (transposes, padding copies),
allocation, autograd and Python. Medians over repeats
after warm-up, at the sparsities given (default 0.99, where overhead matters most). The ``floor`` columns time
a no-op ``torch.autograd.Function`` with the same input and output shapes in the same rounds: the part of the
overhead that no kernel work can remove while a layer is an autograd Function called from Python.

    python benchmarks/overhead.py --threads 2 --sparsity 0.99
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

# As benchmarks/layers.py: measure under the OpenMP runtime's default (spinning waiters) unless set; with
# `import sparsetrain`'s PASSIVE default every parallel region pays a wake-up, which at 99% is a large share.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import torch  # noqa: E402
from torch import nn

import sparsetrain.ops.conv as conv_ops  # noqa: E402
import sparsetrain.ops.linear as linear_ops  # noqa: E402
from sparsetrain import SparseConv2d, SparseLinear  # noqa: E402
from sparsetrain.runtime import malloc_note, tune_malloc  # noqa: E402

KERNELS = {linear_ops: ("spmm_runs", "sddmm_runs", "spmm_sddmm_runs", "spmm_sddmm_rows"),
           conv_ops: ("spmm_runs", "sddmm_runs", "spmm_sddmm_runs", "spmm_same", "sddmm_same", "spmm_sddmm_same",
                      "conv_forward_bl", "conv_backward_bl", "conv_forward_ow", "conv_backward_ow")}
_spent = [0.0]


def _timed(fn):
    def wrapper(*args):
        t0 = time.perf_counter()
        fn(*args)
        _spent[0] += time.perf_counter() - t0
    return wrapper


class _NoOp(torch.autograd.Function):
    """The cheapest custom op: allocates its output and its input and weight gradients, computes nothing. Its
    fwd+bwd is the floor that Python, autograd and allocation set for a layer written as an autograd Function."""

    @staticmethod
    def forward(ctx, x, w, out_shape):
        ctx.in_shape = x.shape
        return x.new_empty(out_shape)

    @staticmethod
    def backward(ctx, dy):
        return dy.new_empty(ctx.in_shape), dy.new_empty(1), None


def _floor_step(x, w, out_shape, g):
    """One fwd+bwd of ``_NoOp``: output allocated, gradients returned, no arithmetic."""
    _NoOp.apply(x, w, out_shape).backward(g)


def cases():
    yield "Linear 768->3072 B=902", lambda: nn.Linear(768, 3072), (902, 768), SparseLinear, {}
    yield "Linear 768->3072 B=128", lambda: nn.Linear(768, 3072), (128, 768), SparseLinear, {}
    yield "Linear 3072->768 B=902", lambda: nn.Linear(3072, 768), (902, 3072), SparseLinear, {}
    for v in ("batch-last", "over-width", "batch-last-unpadded"):
        yield f"Conv 8x128x7x7 p1 {v}", lambda: nn.Conv2d(128, 256, 3, padding=1), (8, 128, 7, 7), SparseConv2d, {"variant": v}
    for v in ("over-width", "over-width-unpadded"):
        yield f"Conv 32x64x56x56 p1 {v}", lambda: nn.Conv2d(64, 64, 3, padding=1), (32, 64, 56, 56), SparseConv2d, {"variant": v}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sparsity", type=str, default="0.99")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    tune_malloc()
    torch.set_num_threads(args.threads)
    for mod, names in KERNELS.items():
        for n in names:
            setattr(mod, n, _timed(getattr(mod, n)))
    print(f"threads {args.threads}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; {malloc_note()}; medians of {args.repeats} "
          "fwd+bwd after 3 warm-up")
    print(f"{'case':<42}{'sparsity':>9}{'total ms':>10}{'kernels ms':>12}{'overhead':>10}{'floor ms':>10}"
          f"{'floor/kernels':>15}")
    for sp in (float(s) for s in args.sparsity.split(",")):
        for name, make, shape, cls, kw in cases():
            torch.manual_seed(0)
            dense = make()
            with torch.no_grad():
                dense.weight.mul_(torch.rand_like(dense.weight) > sp)
            layer = cls.from_dense(dense, **kw)
            x = torch.randn(*shape, requires_grad=True)
            g = torch.randn_like(dense(x))
            totals, kernels, floors = [], [], []
            w = torch.zeros(1, requires_grad=True)
            for i in range(3 + args.repeats):
                x.grad = None  # as zero_grad(set_to_none=True): no accumulation into old gradients
                layer.zero_grad(set_to_none=True)
                _spent[0] = 0.0
                t0 = time.perf_counter()
                layer(x).backward(g)
                t1 = time.perf_counter()
                x.grad = None
                _floor_step(x, w, g.shape, g)
                if i >= 3:
                    totals.append(t1 - t0)
                    kernels.append(_spent[0])
                    floors.append(time.perf_counter() - t1)
            t, k, f = statistics.median(totals), statistics.median(kernels), statistics.median(floors)
            print(f"{name:<42}{sp:>9.2f}{t * 1e3:>10.3f}{k * 1e3:>12.3f}{(t - k) / k:>10.0%}{f * 1e3:>10.3f}"
                  f"{f / k:>15.0%}")


if __name__ == "__main__":
    main()
