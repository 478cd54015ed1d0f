"""``sparsetrain report RUN_DIR...``: the papers' plots from training runs' summary.json files —
accuracy vs sparsity (HRBP Fig. 5), end-to-end training speedup vs sparsity (Fig. 6), per-layer
speedup of the chosen kernels (Fig. 7) — and a markdown table."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def load_runs(dirs: list[str]) -> list[dict]:
    """Each run's summary.json, with its folder under ``"dir"``."""
    runs = []
    for d in dirs:
        p = Path(d) / "summary.json"
        if not p.is_file():
            raise FileNotFoundError(f"{d}: no summary.json (is it the --out folder of a finished sparsetrain train run?)")
        with open(p) as f:
            s = json.load(f)
        s["dir"] = str(d)
        runs.append(s)
    return runs


def _key(run: dict) -> tuple[str, str]:
    return run["config"]["model"], run["config"]["dataset"]


def speedups(runs: list[dict]) -> dict[str, float]:
    """Median step time of the dense run of the same model and dataset over each run's (by folder)."""
    dense = {_key(r): r["step_ms"] for r in runs if r["config"]["method"] == "dense" and r.get("step_ms")}
    return {r["dir"]: dense[_key(r)] / r["step_ms"] for r in runs if _key(r) in dense and r.get("step_ms")}


def layer_speedups(run: dict) -> list[tuple[str, float, float]]:
    """(layer, sparsity, dense ms / chosen ms) for every layer whose backends were timed."""
    out = []
    for layer in run.get("layers", []):
        t, choice = layer.get("times_ms") or {}, layer.get("choice")
        if "dense" in t and choice in t and t[choice] > 0:
            out.append((layer["layer"], layer["sparsity"], t["dense"] / t[choice]))
    return out


def make_report(dirs: list[str], out: str) -> str:
    """Write the plots (PNG) and report.md into ``out``; return the markdown text."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    runs = load_runs(dirs)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    speed = speedups(runs)
    series: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        series[f"{r['config']['model']} / {r['config']['method']}"].append(r)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["sparsity"])
        ax.plot([100 * r["sparsity"] for r in rs], [100 * (r["test_acc"] or 0) for r in rs], "o-", label=label)
    ax.set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title="Accuracy vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outdir / "accuracy_vs_sparsity.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rs in sorted(series.items()):
        pts = sorted((100 * r["sparsity"], speed[r["dir"]]) for r in rs if r["dir"] in speed)
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set(xlabel="sparsity (%)", ylabel="training-step speedup vs dense (x)", title="End-to-end speedup vs sparsity")
    ax.grid(alpha=0.3)
    if speed:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outdir / "speedup_vs_sparsity.png", dpi=120)
    plt.close(fig)

    timed = [(r, layer_speedups(r)) for r in runs if layer_speedups(r)]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * max((len(ls) for _, ls in timed), default=10)), 4))
    width = 0.8 / max(len(timed), 1)
    for i, (r, ls) in enumerate(timed):
        ax.bar([j + i * width for j in range(len(ls))], [s for _, _, s in ls], width,
               label=f"{Path(r['dir']).name} ({r['config']['method']})")
        ax.set_xticks(range(len(ls)), [f"{n} ({100 * sp:.0f}%)" for n, sp, _ in ls], rotation=90, fontsize=6)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set(ylabel="fwd+bwd speedup vs dense (x)", title="Per-layer speedup of the chosen kernel")
    if timed:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outdir / "layer_speedup.png", dpi=120)
    plt.close(fig)

    lines = ["| run | model | dataset | method | sparsity | test acc | step ms | speedup vs dense |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        c = r["config"]
        acc = "-" if r["test_acc"] is None else f"{100 * r['test_acc']:.2f}%"
        sp = f"{speed[r['dir']]:.2f}x" if r["dir"] in speed else "-"
        ms = "-" if r.get("step_ms") is None else f"{r['step_ms']:.1f}"
        lines.append(f"| {r['dir']} | {c['model']} | {c['dataset']} | {c['method']} | {100 * r['sparsity']:.1f}% | "
                     f"{acc} | {ms} | {sp} |")
    lines.append("")
    lines.append(f"plots: {outdir / 'accuracy_vs_sparsity.png'}, {outdir / 'speedup_vs_sparsity.png'}, "
                 f"{outdir / 'layer_speedup.png'}")
    text = "\n".join(lines)
    (outdir / "report.md").write_text(text + "\n")
    return text
