"""End-to-end training-step benchmark: a whole model, dense PyTorch vs the same model made sparse with
``sparsetrain.sparsify(..., backend="auto")`` — forward, backward (+ SGD step) and total, medians of
interleaved rounds after warm-up — in the papers' settings (SparseProp Table 4: ResNet-18 at 224x224;
HRBP Fig. 6: VGG-19 and ResNet-32 at CIFAR shapes). Masks: ``uniform`` random (unstructured, SparseProp) and
``hrbp`` (HRBP-random block layouts, t=8, s=4/9: the block layers become candidates of ``auto``); the first
conv and the last linear stay dense, as in both papers. Run ``python benchmarks/e2e.py --help``."""
from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..masks import hrbp_random, random_mask
from ..nn import decision_table, sparsify
from ..runtime import malloc_note, tune_malloc
from ..train.models import build_model


@dataclass(frozen=True)
class ModelCase:
    """A model at one input shape."""

    name: str
    model: str
    batch: int
    size: int
    classes: int

    def describe(self) -> str:
        return f"{self.model} {self.batch}x3x{self.size}x{self.size}"


CASES = {
    "resnet18": ModelCase("resnet18", "resnet18", 32, 224, 1000),
    # SparseProp Table 2 (sparse transfer): the step cost of fine-tuning with fixed 97% masks; uniform random
    # masks stand in for the pretrained sparse checkpoint's (same density, same kernels). Not in the default run:
    # a dense ResNet-50 step at batch 32 takes tens of seconds on 2 cores.
    "resnet50": ModelCase("resnet50", "resnet50", 32, 224, 1000),
    "vgg19": ModelCase("vgg19", "vgg19", 128, 32, 10),
    "resnet32": ModelCase("resnet32", "resnet32", 128, 32, 10),
}
DEFAULT_SPARSITIES = {"resnet18": (0.9, 0.95, 0.97), "resnet50": (0.97,), "vgg19": (0.9, 0.95), "resnet32": (0.9, 0.95)}
DEFAULT_MASKS = {"resnet18": ("uniform",), "resnet50": ("uniform",), "vgg19": ("uniform", "hrbp"),
                 "resnet32": ("uniform", "hrbp")}
MASK_KINDS = ("uniform", "hrbp")


def uniform_masks(model: nn.Module, sparsity: float, seed: int = 0, kind: str = "uniform") -> dict:
    """Masks at ``sparsity`` for every Conv2d/Linear except the first conv and the last linear: uniform random
    bool masks, or (``kind="hrbp"``) HRBP-random block layouts for the groups=1 convs (others stay random)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first_conv = next(n for n, m in layers if isinstance(m, nn.Conv2d))
    last_linear = [n for n, m in layers if isinstance(m, nn.Linear)][-1]
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, m in layers:
        if n in (first_conv, last_linear):
            continue
        if kind == "hrbp" and isinstance(m, nn.Conv2d) and m.groups == 1:
            out[n] = hrbp_random(m.weight.shape, 1.0 - sparsity, generator=g)
        else:
            out[n] = random_mask(m.weight.shape, sparsity, g)
    return out


def _step(model: nn.Module, opt, x, y) -> tuple[float, float]:
    """One training step; returns (forward ms, backward+optimizer ms)."""
    t0 = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x), y)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3


def bench_case(case: ModelCase, sparsities, rounds: int, warmup: int, seed: int = 0, log=print,
               kinds=("uniform",)) -> list[dict]:
    """Time dense and each (mask kind, sparsity) of ``case``, interleaved round by round; one row per level."""
    torch.manual_seed(seed)
    dense = build_model(case.model, case.classes, 3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case.batch, 3, case.size, case.size, generator=g)
    y = torch.randint(0, case.classes, (case.batch,), generator=g)
    impls = {"dense": dense}
    for kind in kinds:
        for s in sparsities:
            m = copy.deepcopy(dense)
            masks = uniform_masks(m, s, seed, kind)
            t0 = time.perf_counter()
            sparsify(m, masks, example_input=x, backend="auto", min_sparsity=min(0.8, s), warmup=1, repeats=3)
            label = f"{kind} {s:.0%}"
            log(f"\n{case.describe()} {label}: sparsify(backend='auto') took {time.perf_counter() - t0:.1f}s")
            log(str(decision_table(m)))
            impls[label] = m
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in impls.items()}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in impls}
    rng = random.Random(seed)
    for r in range(warmup + rounds):
        order = list(impls)
        rng.shuffle(order)  # interleaved, in a new order each round, so machine noise is spread fairly
        for k in order:
            t = _step(impls[k], opts[k], x, y)
            if r >= warmup:
                times[k].append(t)
    rows = []
    med = {k: (statistics.median(f for f, _ in v), statistics.median(b for _, b in v),
               statistics.median(f + b for f, b in v)) for k, v in times.items()}
    for k in impls:
        f, b, t = med[k]
        rows.append({"case": case.describe(), "impl": k, "fwd_ms": f, "bwd_ms": b, "total_ms": t,
                     "speedup": med["dense"][2] / t})
    return rows


def machine_line() -> str:
    """CPU model, usable cores and threads (the numbers depend on all three)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"machine: {cpu}; {torch.get_num_threads()} threads; torch {torch.__version__}; {malloc_note()}"


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    out = ["| model, input | impl | forward ms | backward+step ms | total ms | speedup vs dense |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['case']} | {r['impl']} | {r['fwd_ms']:.1f} | {r['bwd_ms']:.1f} | {r['total_ms']:.1f} | "
                   f"{r['speedup']:.2f}x |")
    return "\n".join(out)


def _sparsities(s: str) -> list[float]:
    vals = [float(v) for v in s.split(",") if v]
    if not vals or any(not 0 < v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--sparsity takes comma-separated values in (0, 1), got {s!r}")
    return vals


def main(argv: list[str] | None = None) -> int:
    """Command line of ``benchmarks/e2e.py`` and ``sparsetrain bench model``."""
    p = argparse.ArgumentParser(prog="sparsetrain bench model", description=__doc__)
    p.add_argument("--models", default="resnet18,vgg19,resnet32",  # resnet50 on request (slow)
                   help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    p.add_argument("--sparsity", type=_sparsities, default=None,
                   help="comma-separated sparsities (default per model: resnet18 0.9,0.95,0.97; others 0.9,0.95)")
    p.add_argument("--masks", default=None,
                   help="comma-separated mask kinds from uniform,hrbp (default: resnet18 uniform; CIFAR models both)")
    p.add_argument("--batch", type=int, default=None, help="override the batch size of every model")
    p.add_argument("--threads", type=int, default=None, help="torch/numba threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=5, help="timed interleaved rounds (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds (default 2)")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    a = p.parse_args(argv)
    names = [n for n in a.models.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {', '.join(CASES)}")
    if a.threads is not None:
        if a.threads < 1:
            p.error(f"--threads must be >= 1, got {a.threads}")
        torch.set_num_threads(a.threads)
    kinds = None if a.masks is None else [k for k in a.masks.split(",") if k]
    if kinds is not None and (not kinds or any(k not in MASK_KINDS for k in kinds)):
        p.error(f"--masks takes comma-separated kinds from {', '.join(MASK_KINDS)}, got {a.masks!r}")
    if a.rounds < 1 or a.warmup < 0:
        p.error("--rounds must be >= 1 and --warmup >= 0")
    tune_malloc()
    print(machine_line())
    rows = []
    for n in names:
        case = CASES[n] if a.batch is None else ModelCase(n, CASES[n].model, a.batch, CASES[n].size, CASES[n].classes)
        rows += bench_case(case, a.sparsity or DEFAULT_SPARSITIES[n], a.rounds, a.warmup,
                           kinds=kinds or DEFAULT_MASKS[n])
    text = table(rows)
    print("\n" + machine_line() + f"; medians of {a.rounds} interleaved rounds after {a.warmup} warm-up\n" + text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    return 0
