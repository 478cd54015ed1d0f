"""Command-line entry point: ``sparsetrain demo | bench`` (more subcommands arrive with the trainer)."""
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
    demo = sub.add_parser("demo", help="train a small CNN on Fashion-MNIST dense vs 95%% sparse")
    demo.add_argument("--steps", type=_positive(int), default=200)
    demo.add_argument("--batch-size", type=_positive(int), default=64)
    demo.add_argument("--sparsity", type=_sparsity, default=0.95)
    demo.add_argument("--lr", type=_positive(float), default=0.02)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=_positive(int), default=None)
    bench = sub.add_parser("bench", help="layer benchmark (see benchmarks/layers.py --help)", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo
        run_demo(args.steps, args.batch_size, args.sparsity, args.lr, args.seed, args.threads)
    elif args.command == "bench":
        from .bench.layers import main as bench_main
        bench_main(args.rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
