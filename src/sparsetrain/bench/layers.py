"""Layer benchmark: one sparse Linear/Conv2d layer, forward and backward, several implementations side by side.

Implementations per case (each on the same masked weight and the same input):

* ``dense``          - ``nn.Linear`` / ``nn.Conv2d`` holding the zero-filled weight (the baseline);
* ``torch-csr``      - linear only: ``y = torch.sparse.mm(W_csr, x.t()).t() + b`` with a CSR weight parameter;
* ``sparseprop``     - the published ``sparseprop`` package (linear), and for conv both kernels:
  ``sparseprop/bl`` (``vectorizing_over_on=False``, vectorised over the batch) and ``sparseprop/ow``
  (``vectorizing_over_on=True``, vectorised over output width); the faster one is its "best";
* ``ours``           - ``sparsetrain`` ``SparseLinear`` (``sparse-cpu``), or ``SparseConv2d`` with
  ``ours/bl`` (``variant="batch-last"``) and ``ours/ow`` (``variant="over-width"``), and for stride-1 convs that keep
  the plane also ``ours/bl-u`` and ``ours/ow-u`` (the ``-unpadded`` variants);
* ``ours-auto``      - a fresh ``sparsetrain`` layer after ``choose_backend(module, x)`` (the choice is shown).

Method: every implementation is checked against dense (output allclose rtol=atol=1e-4; input and weight
gradients to a relative L2 error below 1e-4) and warmed up (``--warmup`` fwd+bwd, default 3). Then
``--repeats`` interleaved rounds run each implementation once per round (in a new seeded random order
every round):
a timed forward (autograd on, graph dropped), then a timed forward+backward whose backward part is also
timed alone. ``fwd``/``bwd`` are medians, ``fwd+bwd`` is the median with [min-max]. Gradients are reset to
None between steps (outside the timed region), as with ``zero_grad(set_to_none=True)``.

Run ``python benchmarks/layers.py --help``; ``--list`` names the cases.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from importlib import metadata

import torch
from torch import nn

from sparsetrain.nn import SparseConv2d, SparseLinear
from sparsetrain.nn.convert import choose_backend
from sparsetrain.runtime import malloc_note, tune_malloc

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta state.*")

RTOL = ATOL = 1e-4
GRAD_REL_TOL = 1e-4
DEFAULT_SPARSITIES = (0.8, 0.9, 0.95, 0.98, 0.99)
QUICK_SPARSITIES = (0.9, 0.99)
DEFAULT_REPEATS = 7
QUICK_REPEATS = 3
SPARSEPROP_INSTALL = ("pip install pybind11 && PATH=$VENV/bin:$PATH pip install --no-build-isolation "
                      "sparseprop==0.1.14   (builds with -march=native; needs AVX2+FMA)")


# ----------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    kind: str                 # "linear" | "conv"
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]  # linear: (out, in); conv: (OC, IC, KH, KW)
    padding: int = 0

    def describe(self) -> str:
        if self.kind == "linear":
            return f"Linear {self.w_shape[1]}->{self.w_shape[0]}, x={self.x_shape}"
        return f"Conv2d x={self.x_shape} w={self.w_shape} padding={self.padding} stride=1"


CASES: dict[str, Case] = {c.name: c for c in (
    Case("lin768x3072_b902", "linear", (902, 768), (3072, 768)),
    Case("lin768x3072_b128", "linear", (128, 768), (3072, 768)),
    Case("lin3072x768_b902", "linear", (902, 3072), (768, 3072)),
    Case("lin3072x768_b128", "linear", (128, 3072), (768, 3072)),
    Case("conv7x7_c128to256_b8_p1", "conv", (8, 128, 7, 7), (256, 128, 3, 3), 1),
    Case("conv7x7_c128to256_b8_p0", "conv", (8, 128, 7, 7), (256, 128, 3, 3), 0),
    Case("conv56x56_c64to64_b32_p1", "conv", (32, 64, 56, 56), (64, 64, 3, 3), 1),
)}


# ------------------------------------------------------------------------------- implementations
class TorchCSRLinear(nn.Module):
    """``y = torch.sparse.mm(W_csr, x.t()).t() + b`` with ``W_csr`` a sparse-CSR weight parameter."""

    def __init__(self, lin: nn.Linear, mask: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter((lin.weight.detach() * mask).to_sparse_csr())
        self.bias = nn.Parameter(lin.bias.detach().clone()) if lin.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight, x.t()).t()
        return y + self.bias if self.bias is not None else y


def _load_sparseprop():
    try:
        from sparseprop.modules import SparseConv2d as SPConv2d
        from sparseprop.modules import SparseLinear as SPLinear
    except Exception as e:  # ImportError, or the compiled `backend` module failing to load
        return None, None, f"{type(e).__name__}: {e}"
    return SPLinear, SPConv2d, None


@dataclass
class Impl:
    name: str
    module: nn.Module
    group: str                      # "dense" | "baseline" | "sparseprop" | "ours"
    fwd_only: bool = False          # backward unsupported: fwd timed only
    note: str = ""
    fwd: list[float] = field(default_factory=list)
    bwd: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


def _seed(*parts) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def make_problem(case: Case, sparsity: float):
    """Dense module with the weight zeroed outside a seeded uniform random mask, the mask and the input."""
    torch.manual_seed(_seed(case.name, "weights"))
    if case.kind == "linear":
        dense = nn.Linear(case.w_shape[1], case.w_shape[0])
    else:
        oc, ic, kh, kw = case.w_shape
        dense = nn.Conv2d(ic, oc, (kh, kw), padding=case.padding)
    g = torch.Generator().manual_seed(_seed(case.name, sparsity, "mask"))
    mask = torch.rand(dense.weight.shape, generator=g) > sparsity
    with torch.no_grad():
        dense.weight.mul_(mask)
    gx = torch.Generator().manual_seed(_seed(case.name, "input"))
    x = torch.randn(case.x_shape, generator=gx).contiguous()
    return dense, mask, x


def build_impls(case: Case, dense: nn.Module, mask: torch.Tensor, x: torch.Tensor, sp_linear, sp_conv) -> list[Impl]:
    impls = [Impl("dense", dense, "dense")]
    if case.kind == "linear":
        impls.append(Impl("torch-csr", TorchCSRLinear(dense, mask), "baseline"))
        if sp_linear is not None:
            impls.append(Impl("sparseprop", sp_linear.from_dense(dense), "sparseprop"))
        impls.append(Impl("ours", SparseLinear.from_dense(dense, mask, backend="sparse-cpu"), "ours"))
        auto = SparseLinear.from_dense(dense, mask, backend="sparse-cpu")
    else:
        if sp_conv is not None:
            impls.append(Impl("sparseprop/bl", sp_conv.from_dense(dense, vectorizing_over_on=False), "sparseprop"))
            impls.append(Impl("sparseprop/ow", sp_conv.from_dense(dense, vectorizing_over_on=True), "sparseprop"))
        auto = SparseConv2d.from_dense(dense, mask, backend="sparse-cpu")
        for variant in auto.variants():
            impls.append(Impl(f"ours/{_short(variant)}", SparseConv2d.from_dense(dense, mask, variant=variant), "ours"))
    times = choose_backend(auto, x)
    choice = auto.backend if auto.backend == "dense" else (
        "sparse-cpu" if case.kind == "linear" else _short(auto.variant))
    note = "choose_backend: " + ", ".join(f"{k}={v:.2f}ms" for k, v in times.items())
    impls.append(Impl(f"ours-auto({choice})", auto, "ours", note=note))
    return impls


def _short(variant: str) -> str:
    """bl / ow, with ``-u`` for the unpadded variants."""
    layout = {"batch-last": "bl", "over-width": "ow"}[variant.removesuffix("-unpadded")]
    return layout + "-u" if variant.endswith("-unpadded") else layout


# ----------------------------------------------------------------------------------- correctness
def _clear_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def _dense_weight_grad(impl: Impl, mask: torch.Tensor):
    """The implementation's weight gradient as a dense tensor (masked), or None when it cannot be read."""
    m = impl.module
    try:
        if isinstance(m, (SparseLinear, SparseConv2d)):
            return m._format().to_dense(m.values.grad)
        if isinstance(m, TorchCSRLinear):
            return m.weight.grad.to_dense() * mask
        if impl.group == "sparseprop" and m.W_val.grad is not None:
            if isinstance(m.W_idx, (tuple, list)) and len(m.W_idx) == 2:  # linear CSR, row-major order
                out = torch.zeros(mask.shape)
                out[mask] = m.W_val.grad.reshape(-1).to(out.dtype)
                return out
            from sparseprop.modules.utils import from_sparse_format_conv2d
            return from_sparse_format_conv2d(m.W_val.grad, m.W_idx, tuple(mask.shape))
    except Exception:
        return None
    return None


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def verify(case: Case, impls: list[Impl], mask: torch.Tensor, x: torch.Tensor) -> list[str]:
    """Compare every implementation with dense; returns problems found in non-"ours" implementations and
    raises SystemExit for any mismatch of ours."""
    dense = impls[0].module
    gen = torch.Generator().manual_seed(_seed(case.name, "gy"))
    xd = x.detach().clone().requires_grad_(True)
    yd = dense(xd)
    gy = torch.randn(yd.shape, generator=gen)
    yd.backward(gy)
    ref_gw = dense.weight.grad.detach() * mask
    ref_gx = xd.grad.detach()
    ref_y = yd.detach()
    _clear_grads(dense)
    problems = []
    for impl in impls[1:]:
        xi = x.detach().clone().requires_grad_(True)
        msgs = []
        try:
            y = impl.module(xi)
            if y.shape != ref_y.shape:
                msgs.append(f"output shape {tuple(y.shape)} != {tuple(ref_y.shape)}")
            elif not torch.allclose(y.detach(), ref_y, rtol=RTOL, atol=ATOL):
                msgs.append(f"output max abs err {float((y.detach() - ref_y).abs().max()):.3g} "
                            f"(rel L2 {_rel(y.detach(), ref_y):.3g}) exceeds rtol={RTOL}, atol={ATOL}")
            if not msgs:
                try:
                    y.backward(gy)
                except (RuntimeError, NotImplementedError) as e:
                    impl.fwd_only = True
                    impl.note = (impl.note + "; " if impl.note else "") + f"backward unsupported ({str(e).splitlines()[0][:80]})"
                if not impl.fwd_only:
                    if xi.grad is None or _rel(xi.grad, ref_gx) > GRAD_REL_TOL:
                        msgs.append("grad_input " + ("missing" if xi.grad is None else f"rel L2 err {_rel(xi.grad, ref_gx):.3g}"))
                    gw = _dense_weight_grad(impl, mask)
                    if gw is not None and _rel(gw, ref_gw) > GRAD_REL_TOL:
                        msgs.append(f"grad_weight rel L2 err {_rel(gw, ref_gw):.3g}")
        except Exception as e:  # noqa: BLE001 - report any failure of a third-party implementation
            msgs.append(f"{type(e).__name__}: {e}")
        _clear_grads(impl.module)
        if msgs:
            text = f"{case.name}: {impl.name} differs from dense: " + "; ".join(msgs)
            if impl.group == "ours":
                raise SystemExit(f"CORRECTNESS FAILURE (aborting): {text}")
            problems.append(text)
            impl.note = (impl.note + "; " if impl.note else "") + "WRONG RESULT: " + "; ".join(msgs)
    return problems


# ---------------------------------------------------------------------------------------- timing
def _fwd(module: nn.Module, x: torch.Tensor) -> float:
    xi = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    y = module(xi)
    t1 = time.perf_counter()
    del y
    return (t1 - t0) * 1e3


def _fwd_bwd(module: nn.Module, x: torch.Tensor, gy: torch.Tensor) -> tuple[float, float]:
    xi = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    y = module(xi)
    t1 = time.perf_counter()
    y.backward(gy)
    t2 = time.perf_counter()
    _clear_grads(module)
    return (t2 - t1) * 1e3, (t2 - t0) * 1e3


def run_case(impls: list[Impl], x: torch.Tensor, warmup: int, repeats: int) -> None:
    with torch.no_grad():
        gy = torch.randn(impls[0].module(x).shape)
    for impl in impls:
        for _ in range(warmup):
            if impl.fwd_only:
                _fwd(impl.module, x)
            else:
                _fwd_bwd(impl.module, x, gy)
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        rng = random.Random(1234)
        order = list(impls)
        for _ in range(repeats):
            rng.shuffle(order)  # vary each implementation's predecessor too (cache and thread-pool state)
            for impl in order:
                impl.fwd.append(_fwd(impl.module, x))
                if not impl.fwd_only:
                    b, t = _fwd_bwd(impl.module, x, gy)
                    impl.bwd.append(b)
                    impl.total.append(t)
    finally:
        if gc_was:
            gc.enable()


# ------------------------------------------------------------------------------------- reporting
COLS = ("case", "sparsity", "thr", "impl", "fwd ms", "bwd ms", "fwd+bwd ms [min-max]",
        "vs dense", "vs sparseprop", "efficiency")


@dataclass
class Row:
    case: str
    sparsity: float
    density: float
    threads: int
    impl: str
    group: str
    fwd: float | None
    bwd: float | None
    total: float | None
    tmin: float | None
    tmax: float | None
    speedup: float | None = None
    vs_sp: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        f = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
        tot = "n/a" if self.total is None else f"{self.total:.3f} [{self.tmin:.3f}-{self.tmax:.3f}]"
        vs_sp = "-" if self.group != "ours" else f(self.vs_sp, ".2f") + ("x" if self.vs_sp is not None else "")
        eff = "-" if self.speedup is None or self.group == "dense" else f"{self.speedup * self.density:.3f}"
        spd = f(self.speedup, ".2f") + ("x" if self.speedup is not None else "")
        return [self.case, f"{self.sparsity:.2f}", str(self.threads), self.impl, f(self.fwd, ".3f"),
                f(self.bwd, ".3f"), tot, spd, vs_sp, eff]


WIDTHS = (24, 8, 3, 22, 9, 9, 28, 8, 13, 10)


def fmt_row(cells) -> str:
    parts = []
    for i, (c, w) in enumerate(zip(cells, WIDTHS)):
        parts.append(f"{c:<{w}}" if i in (0, 3) else f"{c:>{w}}")
    return " ".join(parts)


def rows_for(case: Case, sparsity: float, density: float, threads: int, impls: list[Impl]) -> list[Row]:
    med = lambda v: statistics.median(v) if v else None  # noqa: E731
    rows = []
    for impl in impls:
        rows.append(Row(case.name, sparsity, density, threads, impl.name, impl.group, med(impl.fwd), med(impl.bwd),
                        med(impl.total), min(impl.total) if impl.total else None,
                        max(impl.total) if impl.total else None, note=impl.note))
    dense_t = rows[0].total
    sp = [r.total for r in rows if r.group == "sparseprop" and r.total is not None and "WRONG" not in r.note]
    sp_best = min(sp) if sp else None
    for r in rows:
        if r.total is not None and dense_t is not None:
            r.speedup = dense_t / r.total
        if r.group == "ours" and r.total is not None and sp_best is not None:
            r.vs_sp = sp_best / r.total
    # mark sparseprop's best variant (conv has two)
    sp_rows = [r for r in rows if r.group == "sparseprop" and r.total is not None]
    if len(sp_rows) > 1 and sp_best is not None:
        for r in sp_rows:
            if r.total == sp_best:
                r.impl += "*"
    return rows


class ForeignLoad:
    """CPU time used by *other* processes while a block runs: system busy time (/proc/stat) minus this
    process's CPU time, as a fraction of wall time x usable cores. Timings are suspect when it is high."""

    def __init__(self) -> None:
        self.t0 = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(v[:8]) - v[3] - v[4]  # everything but idle and iowait (steal counts as lost time)
        t = os.times()
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), t.user + t.system

    def fraction(self) -> float | None:
        t1 = self._sample()
        if t1 is None or self.t0 is None:
            return None
        wall = t1[0] - self.t0[0]
        if wall <= 0:
            return None
        foreign = (t1[1] - self.t0[1]) - (t1[2] - self.t0[2])
        return max(0.0, foreign) / (wall * (_usable_cores() or 1))


FOREIGN_WARN = 0.10


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_header(args, threads: list[int], sparsities: list[float], repeats: int, sp_err: str | None) -> list[str]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            fl = next((l for l in fh if l.startswith("flags")), "").split()
        flags = ",".join(f for f in ("avx2", "fma", "avx512f") if f in fl)
    except OSError:
        pass
    affinity = _usable_cores()

    def ver(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"
    import numba
    lines = [
        "sparsetrain layer benchmark",
        f"machine: {cpu or 'unknown CPU'} ({platform.machine()}; {flags or 'no avx2/fma flags'}); "
        f"logical cores: {os.cpu_count()} (usable: {affinity}); {platform.system()} {platform.release()}",
        f"python {platform.python_version()}; torch {torch.__version__}; numba {numba.__version__}; "
        f"numpy {ver('numpy')}; sparseprop {ver('sparseprop')}",
        f"threads (torch.set_num_threads; numba and sparseprop's OpenMP follow it): {','.join(map(str, threads))}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; {malloc_note()}; "
        f"repeats: {repeats} interleaved rounds after {args.warmup} warm-up fwd+bwd; "
        f"sparsities: {','.join(f'{s:g}' for s in sparsities)}",
        "masks: seeded uniform random (torch.rand > sparsity), weights zeroed outside the mask; float32, contiguous input",
        "impls: bl = batch-last (sparseprop vectorizing_over_on=False), ow = over-width (sparseprop "
        "vectorizing_over_on=True); * = sparseprop's best variant; ours-auto(X) = choose_backend picked X",
        "columns: medians; vs dense = dense fwd+bwd / impl fwd+bwd; vs sparseprop = sparseprop-best fwd+bwd / ours "
        "fwd+bwd (>1: ours faster); efficiency = speedup x density",
    ]
    if sp_err is not None:
        lines.append(f"NOTE: sparseprop not installed ({sp_err}); its columns are skipped. "
                     f"Install: {SPARSEPROP_INSTALL}")
    probe = ForeignLoad()
    time.sleep(1.0)
    frac = probe.fraction()
    if frac is not None:
        lines.append(f"other processes' CPU use in the 1 s before start: {100 * frac:.0f}% of {_usable_cores()} cores")
        if frac > FOREIGN_WARN:
            lines.append("WARNING: the machine is busy; other processes compete for the cores and make (especially "
                         "multi-threaded) timings very noisy - rerun when it is idle")
    if max(threads) > (affinity or 1):
        lines.append(f"WARNING: {max(threads)} threads requested but only {affinity} cores usable")
    return lines


CELL = 33


def summary_lines(rows: list[Row], threads: list[int], cases: list[Case], sparsities: list[float],
                  have_sp: bool) -> list[str]:
    out = ["", "SUMMARY: ours-best fwd+bwd speedup vs dense" + (" | ratio vs sparseprop-best (>1: ours faster)"
                                                               if have_sp else "") + "   [which ours]"]
    for t in threads:
        out.append(f"threads={t}")
        head = f"  {'case':<26}" + "".join(f"{'s=' + format(s, 'g'):>{CELL}}" for s in sparsities)
        out.append(head)
        for c in cases:
            cells = []
            for s in sparsities:
                ours = [r for r in rows if r.threads == t and r.case == c.name and r.sparsity == s
                        and r.group == "ours" and r.total is not None]
                if not ours:
                    cells.append(f"{'-':>{CELL}}")
                    continue
                best = min(ours, key=lambda r: r.total)
                cell = f"{best.speedup:.2f}x"
                if have_sp:
                    cell += " | " + (f"{best.vs_sp:.2f}x" if best.vs_sp is not None else "n/a")
                short = best.impl.replace("ours-auto", "auto").replace("ours/", "")
                cell += f" [{short}]"
                cells.append(f"{cell:>{CELL}}")
            out.append(f"  {c.name:<26}" + "".join(cells))
    return out


def markdown(header: list[str], rows: list[Row], summary: list[str]) -> str:
    md = ["# Layer benchmark", ""] + [f"- {h}" for h in header] + [""]
    md.append("| " + " | ".join(COLS) + " | note |")
    md.append("|" + "---|" * (len(COLS) + 1))
    for r in rows:
        md.append("| " + " | ".join(c.replace("|", "/") for c in r.cells()) + f" | {r.note.replace('|', '/')} |")
    md += ["", "```"] + [s for s in summary if s] + ["```", ""]
    return "\n".join(md)


# -------------------------------------------------------------------------------------------- CLI
def _floats(text: str) -> list[float]:
    vals = [float(v) for v in text.split(",") if v.strip()]
    if not vals or any(not 0.0 <= v < 1.0 for v in vals):
        raise argparse.ArgumentTypeError(f"sparsities must be in [0, 1), got {text!r}")
    return vals


def _ints(text: str) -> list[int]:
    vals = [int(v) for v in text.split(",") if v.strip()]
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return vals


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Side-by-side benchmark of one sparse layer (fwd, bwd, fwd+bwd): dense, "
                                            "torch.sparse CSR, the published sparseprop and sparsetrain.")
    p.add_argument("--threads", type=_ints, default=[1, 2], help="comma-separated thread counts (default 1,2)")
    p.add_argument("--sparsity", type=_floats, default=None,
                   help=f"comma-separated sparsities (default {','.join(map(str, DEFAULT_SPARSITIES))}; "
                        f"--quick: {','.join(map(str, QUICK_SPARSITIES))})")
    p.add_argument("--cases", default=None, help="comma-separated case names (default all; see --list)")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"interleaved timed rounds (default {DEFAULT_REPEATS}; --quick: {QUICK_REPEATS})")
    p.add_argument("--warmup", type=int, default=3, help="warm-up fwd+bwd per implementation (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer sparsities and repeats")
    p.add_argument("--tune-malloc", action="store_true",
                   help="call sparsetrain.tune_malloc() first (default: glibc's defaults, the conditions of the "
                        "issue's sparseprop reference figures and of the earlier tables)")
    p.add_argument("--markdown", metavar="PATH", default=None, help="also write the table as a markdown file")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.tune_malloc:
        tune_malloc()
    if args.list:
        for c in CASES.values():
            print(f"{c.name:<26} {c.describe()}")
        return
    if args.cases:
        names = [n.strip() for n in args.cases.split(",") if n.strip()]
        unknown = [n for n in names if n not in CASES]
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
        cases = [CASES[n] for n in names]
    else:
        cases = list(CASES.values())
    sparsities = args.sparsity or list(QUICK_SPARSITIES if args.quick else DEFAULT_SPARSITIES)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    warmup = max(args.warmup, 3)
    args.warmup = warmup
    sp_linear, sp_conv, sp_err = _load_sparseprop()

    header = machine_header(args, args.threads, sparsities, repeats, sp_err)
    print("\n".join(header))
    print()
    print(fmt_row(COLS))
    print("-" * (sum(WIDTHS) + len(WIDTHS) - 1))
    sys.stdout.flush()

    rows: list[Row] = []
    problems: list[str] = []
    notes: list[str] = []
    busy_blocks = 0
    for t in args.threads:
        torch.set_num_threads(t)
        for case in cases:
            for s in sparsities:
                dense, mask, x = make_problem(case, s)
                density = float(mask.float().mean())
                impls = build_impls(case, dense, mask, x, sp_linear, sp_conv)
                problems += verify(case, impls, mask, x)  # every (case, sparsity, threads): cheap, and ours-auto may differ
                probe = ForeignLoad()
                run_case(impls, x, warmup, repeats)
                frac = probe.fraction()
                new = rows_for(case, s, density, t, impls)
                rows += new
                for r in new:
                    print(fmt_row(r.cells()), flush=True)
                    if r.note:
                        notes.append(f"[{r.case} s={r.sparsity:g} thr={t} {r.impl}] {r.note}")
                if frac is not None and frac > FOREIGN_WARN:
                    msg = (f"[{case.name} s={s:g} thr={t}] other processes used {100 * frac:.0f}% of the cores "
                           "while this block was timed: its timings are suspect")
                    print("  ^ WARNING: " + msg.split("] ", 1)[1])
                    notes.append(msg)
                    busy_blocks += 1
                print(flush=True)

    summary = summary_lines(rows, args.threads, cases, sparsities, sp_err is None)
    print("\n".join(summary))
    if notes:
        print("\nNOTES:")
        for n in notes:
            print("  " + n)
    if problems:
        print("\nTHIRD-PARTY CORRECTNESS PROBLEMS (timed anyway, excluded from 'vs sparseprop'):")
        for pr in sorted(set(problems)):
            print("  " + pr)
    if busy_blocks:
        print(f"\nWARNING: {busy_blocks} block(s) ran while other processes were busy (see NOTES); rerun those "
              "on an idle machine (--cases/--sparsity/--threads select them)")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(markdown(header, rows, summary + (["", "NOTES:"] + notes if notes else [])))
        print(f"\nmarkdown written to {args.markdown}")


if __name__ == "__main__":
    main()
