"""HRBP layer benchmark (the paper's Fig. 6/7 per layer): the conv shapes of VGG-19 and ResNet-32 on CIFAR
(32x32 input), forward, backward and forward+backward, side by side in one run:

* ``dense``       ``nn.Conv2d`` (oneDNN on the CPU, cuDNN on a GPU);
* ``hrbp``        ``BlockSparseConv2d`` on an HRBP-random layout at density r (t=8, s=4/9 or the smallest
  admissible s >= r);
* ``sparseprop``  ``SparseConv2d`` (unstructured random mask at the same density; CPU only);
* ``channel``     random channel pruning at the same density: a dense conv with round(r * C_O) output channels.

Every implementation is warmed up, then ``--repeats`` interleaved rounds run each once in a new random order;
the table shows medians, ``fwd+bwd`` with [min-max], and speedups over dense. The first conv (3 input
channels) is dense in the papers and is left out. Run ``python benchmarks/hrbp.py --help``.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..masks import hrbp_random, random_mask
from ..nn import BlockSparseConv2d, SparseConv2d
from ..ops.block_conv import BLOCK_VARIANTS, STRIDE1_VARIANTS
from ..runtime import tune_malloc
from .layers import ForeignLoad, _seed, _usable_cores, machine_header

# (name, C_I, C_O, H=W, stride) of the distinct 3x3 convs after the first layer
VGG19 = [("vgg19.64x64@32", 64, 64, 32, 1), ("vgg19.64x128@16", 64, 128, 16, 1),
         ("vgg19.128x128@16", 128, 128, 16, 1), ("vgg19.128x256@8", 128, 256, 8, 1),
         ("vgg19.256x256@8", 256, 256, 8, 1), ("vgg19.256x512@4", 256, 512, 4, 1),
         ("vgg19.512x512@4", 512, 512, 4, 1), ("vgg19.512x512@2", 512, 512, 2, 1)]
RESNET32 = [("resnet32.16x16@32", 16, 16, 32, 1), ("resnet32.16x32@32/s2", 16, 32, 32, 2),
            ("resnet32.32x32@16", 32, 32, 16, 1), ("resnet32.32x64@16/s2", 32, 64, 16, 2),
            ("resnet32.64x64@8", 64, 64, 8, 1)]
SHAPES = VGG19 + RESNET32


@dataclass
class Timed:
    name: str
    module: nn.Module
    x: torch.Tensor
    gy: torch.Tensor
    fwd: list[float] = field(default_factory=list)
    bwd: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _step(t: Timed, device: torch.device) -> tuple[float, float, float]:
    x = t.x.detach().requires_grad_(True)
    _sync(device)
    t0 = time.perf_counter()
    y = t.module(x)
    _sync(device)
    t1 = time.perf_counter()
    y.backward(t.gy)
    _sync(device)
    t2 = time.perf_counter()
    for p in t.module.parameters():
        p.grad = None
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t2 - t0) * 1e3


def build(shape, sparsity: float, batch: int, device: torch.device, groups: int, seed: int,
          variants: tuple = (None,)) -> list[Timed]:
    """The implementations of one (layer shape, sparsity) case on ``device``; ``variants``: the CPU block variants to
    time (None = the layer's own choice, named plain "hrbp")."""
    _, ci, co, hw, stride = shape
    density = 1.0 - sparsity
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, ci, hw, hw, device=device)
    dense = nn.Conv2d(ci, co, 3, stride, 1).to(device)
    layout = hrbp_random(dense.weight.shape, density, groups=groups, generator=gen)
    impls = [("dense", dense)]
    runnable = [v for v in variants if v not in STRIDE1_VARIANTS or stride == 1] or [None]  # None: the layer's own
    for v in runnable:
        impls.append(("hrbp" if v is None else f"hrbp/{v}", BlockSparseConv2d.from_dense(dense, layout, variant=v)))
    if device.type == "cpu":
        mask = random_mask(dense.weight.shape, sparsity, gen).to(device)
        impls.append(("sparseprop", SparseConv2d.from_dense(dense, mask)))
    impls.append(("channel", nn.Conv2d(ci, max(1, round(density * co)), 3, stride, 1).to(device)))
    out = []
    for name, m in impls:
        with torch.no_grad():
            gy = torch.randn_like(m(x))
        out.append(Timed(name, m, x, gy))
    return out


def run(impls: list[Timed], device: torch.device, warmup: int, repeats: int, seed: int) -> None:
    """Warm up, then time ``repeats`` interleaved rounds (a new random order each round)."""
    for t in impls:
        for _ in range(warmup):
            _step(t, device)
    gc.collect()
    rng = random.Random(seed)
    order = list(impls)
    for _ in range(repeats):
        rng.shuffle(order)
        for t in order:
            f, b, tot = _step(t, device)
            t.fwd.append(f)
            t.bwd.append(b)
            t.total.append(tot)


def table_rows(shape, sparsity: float, impls: list[Timed], layout_desc: str) -> list[list[str]]:
    dense = statistics.median(impls[0].total)
    dense_f, dense_b = statistics.median(impls[0].fwd), statistics.median(impls[0].bwd)
    rows = []
    for t in impls:
        f, b, tot = statistics.median(t.fwd), statistics.median(t.bwd), statistics.median(t.total)
        rows.append([shape[0], f"{sparsity:g}", t.name, f"{f:.2f}", f"{b:.2f}",
                     f"{tot:.2f} [{min(t.total):.2f}-{max(t.total):.2f}]",
                     f"{dense_f / f:.2f}x", f"{dense_b / b:.2f}x", f"{dense / tot:.2f}x",
                     layout_desc if t.name.startswith("hrbp") else ""])
    return rows


HEAD = ["layer", "sparsity", "impl", "fwd ms", "bwd ms", "fwd+bwd ms [min-max]", "fwd vs dense", "bwd vs dense",
        "fwd+bwd vs dense", "blocks"]


def _fmt(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEAD)]
    out = ["  ".join(h.ljust(w) for h, w in zip(HEAD, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/hrbp.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch/numba threads on the CPU (default 2)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sparsity", default="0.5,0.8,0.9,0.95", help="comma-separated, each in [0, 1)")
    p.add_argument("--shapes", default="all", help="'all', 'vgg19', 'resnet32' or comma-separated layer names")
    p.add_argument("--groups", type=int, default=8, help="HRBP groups t (default 8)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", default="auto", help="CPU block variants to time: 'auto' (the layer's own choice), "
                   "'all', or comma-separated of over-width,batch-last,runs,tiled,planes")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--list", action="store_true", help="list the layer names and exit")
    args = p.parse_args(argv)
    try:
        args.sparsities = [float(s) for s in args.sparsity.split(",")]
    except ValueError:
        p.error(f"--sparsity must be comma-separated numbers, got {args.sparsity!r}")
    if any(not 0 <= s < 1 for s in args.sparsities):
        p.error(f"--sparsity values must lie in [0, 1), got {args.sparsity}")
    for name in ("threads", "batch", "groups", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.variants == "auto":
        args.variant_list = (None,)
    else:
        args.variant_list = BLOCK_VARIANTS if args.variants == "all" else tuple(args.variants.split(","))
        bad = [v for v in args.variant_list if v not in BLOCK_VARIANTS]
        if bad:
            p.error(f"--variants: unknown {bad}; allowed: auto, all or a list of {', '.join(BLOCK_VARIANTS)}")
    if args.device not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    known = {s[0]: s for s in SHAPES}
    if args.shapes == "all":
        args.shape_list = SHAPES
    elif args.shapes in ("vgg19", "resnet32"):
        args.shape_list = VGG19 if args.shapes == "vgg19" else RESNET32
    else:
        names = args.shapes.split(",")
        bad = [n for n in names if n not in known]
        if bad:
            p.error(f"--shapes: unknown layer(s) {bad}; see --list")
        args.shape_list = [known[n] for n in names]
    return args


def main(argv=None) -> None:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    if args.list:
        print("\n".join(s[0] for s in SHAPES))
        return
    tune_malloc()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    head = machine_header(argparse.Namespace(warmup=args.warmup), [args.threads], args.sparsities, args.repeats,
                          None)
    head[0] = "sparsetrain HRBP layer benchmark (per-layer fwd/bwd, CIFAR shapes)"
    head = [h for h in head if not h.startswith(("masks:", "impls:", "columns:", "NOTE: sparseprop"))]
    if device.type == "cuda":
        head.append(f"device: {torch.cuda.get_device_name()} (dense = cuDNN, tf32 "
                    f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'})")
    head.append(f"batch {args.batch}, float32; hrbp = BlockSparseConv2d on hrbp_random (t={args.groups}; plain "
                "hrbp = its default variant, hrbp/<v> = variant v); sparseprop = SparseConv2d on a uniform random mask; channel = dense conv with round(r*C_O) output channels")
    print("\n".join(head), flush=True)
    rows = []
    load = ForeignLoad()
    for shape in args.shape_list:
        for sp in args.sparsities:
            impls = build(shape, sp, args.batch, device, args.groups, seed=_seed(shape[0], sp),
                          variants=args.variant_list if device.type == "cpu" else (None,))
            run(impls, device, args.warmup, args.repeats, seed=len(rows))
            lay = impls[1].module.layout
            r, k = lay.block_shape
            rows += table_rows(shape, sp, impls, f"{lay.groups}x({r}x{k})")
            print(_fmt(rows[-len(impls):], False).split("\n", 1)[1], flush=True)
            del impls
    print()
    print(_fmt(rows, args.markdown))
    frac = load.fraction()
    if frac is not None:
        print(f"other processes' CPU use during the run: {100 * frac:.0f}% of {_usable_cores()} cores")
