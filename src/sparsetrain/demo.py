"""The `make demo` job: a small CNN trained on real Fashion-MNIST dense and with HRBP block sparsity, through the
same Trainer as ``sparsetrain train``; prints test accuracy and the measured training speedup side by side and
writes the report plots."""
from __future__ import annotations

from pathlib import Path

from .bench.report import make_report
from .train.config import TrainConfig, validate
from .train.trainer import Trainer


def demo_config(method: str, out: Path, epochs: int, sparsity: float, width: int, threads: int | None,
                seed: int, data_root: str | None, max_steps: int | None = None) -> TrainConfig:
    """One run of the demo: fmnist-cnn, SGD with cosine LR, batch 128; the first conv and last linear stay dense."""
    return TrainConfig(model="fmnist-cnn", width=width, dataset="fashion-mnist", data_root=data_root, method=method,
                       sparsity=sparsity, distribution="uniform", backend="auto", epochs=epochs, batch_size=128,
                       lr=0.05, schedule="cosine", weight_decay=5e-4, seed=seed, out=str(out), threads=threads,
                       deterministic=False, max_steps=max_steps)


def run_demo(epochs: int = 2, sparsity: float = 0.9, method: str = "hrbp", width: int = 64, seed: int = 0,
             threads: int | None = 2, out: str = "runs/demo", data_root: str | None = None,
             max_steps: int | None = None) -> dict:
    """Train dense and ``method`` at ``sparsity``; print accuracy and step-time speedup; write plots to OUT/report."""
    root = Path(out)
    results = {}
    for name in ("dense", method):
        cfg = demo_config(name, root / name, epochs, sparsity, width, threads, seed, data_root, max_steps)
        validate(cfg)
        print(f"\n== {name}" + ("" if name == "dense" else f" at {sparsity:.0%} sparsity (inner conv and hidden "
                                                            "linear; first conv and classifier dense)"), flush=True)
        results[name] = Trainer(cfg).run()
        if results[name]["test_acc"] is None:
            raise RuntimeError(f"demo run {name} finished without an evaluation")
    d, s = results["dense"], results[method]
    speedup = d["step_ms"] / s["step_ms"]
    print(f"\n{'run':<24}{'test acc':>10}{'ms/step':>10}{'sparsity':>10}")
    for name, r in results.items():
        print(f"{name:<24}{r['test_acc']:>10.4f}{r['step_ms']:>10.1f}{r['sparsity']:>10.3f}")
    print(f"training step speedup of {method} over dense: {speedup:.2f}x (median step time)")
    for layer in s["layers"]:
        print(f"  {layer['layer']}: sparsity {layer['sparsity']:.3f}, kernel {layer['choice'] or layer['backend']}")
    make_report([str(root / "dense"), str(root / method)], str(root / "report"))
    print(f"plots and report.md in {root / 'report'}")
    return {"acc_dense": d["test_acc"], "acc_sparse": s["test_acc"], "ms_dense": d["step_ms"],
            "ms_sparse": s["step_ms"], "speedup": speedup}
