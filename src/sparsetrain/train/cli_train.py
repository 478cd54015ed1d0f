"""``sparsetrain train``: command-line options generated from ``TrainConfig`` (one place to add an option)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from .checkpoint import CheckpointError
from .config import TrainConfig, build_config

_INT = {"image_size", "synthetic_size", "num_classes", "block_t", "epochs", "batch_size", "seed",
        "checkpoint_every", "max_steps", "eval_batch_size", "workers", "threads", "debug_exit_after"}
_FLOAT = {"width", "sparsity", "block_s", "lr", "momentum", "weight_decay", "gamma"}
_BOOL = {"nesterov", "deterministic", "progress"}


def _int_list(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _mapping(s: str) -> dict:
    import yaml
    v = yaml.safe_load(s)
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{update_every: 100}}', got {s!r}")
    return v


def _fraction(s: str) -> float:
    # 4/9 is how the papers write the block density
    if "/" in s:
        a, b = s.split("/", 1)
        return float(a) / float(b)
    return float(s)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per ``TrainConfig`` field; unset options fall back to the YAML file, then defaults."""
    parser.add_argument("--config", help="YAML file of options (command-line options override it)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"default": None, "dest": f.name,
                              "help": argparse.SUPPRESS if f.metadata.get("hidden") else
                              f"{f.metadata['help']} (default: {_show(f)})"}
        if f.name in _BOOL:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "milestones":
            kw["type"] = _int_list
        elif f.name == "method_options":
            kw["type"] = _mapping
        elif f.name == "resume":
            kw.update(nargs="?", const="auto")
        elif f.name in _INT:
            kw["type"] = int
        elif f.name in _FLOAT:
            kw["type"] = _fraction
        parser.add_argument(flag, **kw)


def _show(f) -> str:
    v = f.default_factory() if callable(getattr(f, "default_factory", None)) else f.default
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_train(args: argparse.Namespace) -> int:
    """Build the config from ``args`` and train; a bad option is one clear line on stderr and exit 2."""
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    try:
        cfg = build_config(args.config, overrides)
        from .trainer import Trainer
        trainer = Trainer(cfg)
    except (ValueError, FileNotFoundError, ImportError, CheckpointError) as e:
        print(f"sparsetrain train: error: {e}", file=sys.stderr)
        return 2
    summary = trainer.run()
    if trainer.dist.is_main:
        print(f"done: test accuracy {summary['test_acc']}, sparsity {summary['sparsity']:.3f}, "
              f"outputs in {cfg.out}")
    return 0


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    """``sparsetrain inspect CHECKPOINT``."""
    parser.add_argument("checkpoint", help="a checkpoint.pt written by sparsetrain train")


def run_inspect(args: argparse.Namespace) -> int:
    """Print per-layer sparsity, backend and block structure of a checkpoint."""
    from .inspect import inspect_text
    try:
        print(inspect_text(args.checkpoint))
    except CheckpointError as e:
        print(f"sparsetrain inspect: error: {e}", file=sys.stderr)
        return 2
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """``sparsetrain report RUN_DIR... [--out DIR]``."""
    parser.add_argument("runs", nargs="+", help="run directories (each with summary.json)")
    parser.add_argument("--out", default="report", help="folder for the plots and report.md (default: report)")


def run_report(args: argparse.Namespace) -> int:
    """Write the papers' plots and a markdown table for the given runs."""
    from ..bench.report import make_report
    try:
        text = make_report(args.runs, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"sparsetrain report: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0
