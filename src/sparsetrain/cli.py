"""Command-line entry point: ``sparsetrain train | bench | report | inspect | demo``."""
from __future__ import annotations

import argparse
import sys


def _positive(kind):
    def parse(s):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v
    return parse


def _sparsity(s: str) -> float:
    v = float(s)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return v


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand."""
    parser = argparse.ArgumentParser(prog="sparsetrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small CNN on Fashion-MNIST dense vs HRBP 90%% sparse; plots")
    demo.add_argument("--epochs", type=_positive(int), default=2)
    demo.add_argument("--sparsity", type=_sparsity, default=0.9)
    demo.add_argument("--method", default="hrbp", help="sparse-training method to compare with dense (default hrbp)")
    demo.add_argument("--width", type=_positive(int), default=64, help="channels of the first conv (default 64)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=_positive(int), default=2)
    demo.add_argument("--out", default="runs/demo", help="output folder (runs, plots)")
    demo.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: Debian package or subset)")
    demo.add_argument("--max-steps", type=_positive(int), default=None, help="stop each run after N steps")
    bench = sub.add_parser("bench", help="layer benchmark (see benchmarks/layers.py --help); "
                           "`bench model ...`: end-to-end training step (see benchmarks/e2e.py --help)", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    from .train.cli_train import add_inspect_arguments, add_report_arguments, add_train_arguments
    add_train_arguments(sub.add_parser("train", help="train a (sparse) model; see sparsetrain train --help"))
    add_report_arguments(sub.add_parser("report", help="plots and a table from training runs"))
    add_inspect_arguments(sub.add_parser("inspect", help="per-layer sparsity, backend and blocks of a checkpoint"))
    args = parser.parse_args(argv)
    from .runtime import tune_malloc
    tune_malloc()  # keep freed memory in the heap: every command here trains or times training steps
    if args.command in ("train", "report", "inspect"):
        from .train import cli_train
        return getattr(cli_train, f"run_{args.command}")(args)
    if args.command == "demo":
        from .demo import run_demo
        run_demo(args.epochs, args.sparsity, args.method, args.width, args.seed, args.threads, args.out,
                 args.data_root, args.max_steps)
    elif args.command == "bench" and args.rest[:1] == ["model"]:
        from .bench.e2e import main as e2e_main
        e2e_main(args.rest[1:])
    elif args.command == "bench":
        from .bench.layers import main as bench_main
        bench_main(args.rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
