"""Training configuration: a dataclass whose defaults follow the HRBP paper for CIFAR, filled from a
YAML file and then command-line overrides, and validated with messages that name the option."""
from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .data import DATASETS
from .models import MODELS, is_known_model

BACKENDS = ("auto", "dense", "sparse", "block")
DISTRIBUTIONS = ("erk", "er", "uniform", "global")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")


def _opt(default, help: str, **meta):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Every option of ``sparsetrain train`` (YAML keys are these names; dashes or underscores)."""

    model: str = _opt("resnet32", "model name (see --help of the models list)")
    width: float | None = _opt(None, "channel width of built-in models (resnet: 16, wrn: 32, vgg: 64, mobilenetv2: 1.0)")
    dataset: str = _opt("cifar10", f"one of {', '.join(DATASETS)}")
    data_root: str | None = _opt(None, "local folder holding the dataset (nothing is downloaded)")
    image_size: int | None = _opt(None, "image side for synthetic/imagefolder data")
    synthetic_size: int = _opt(512, "number of synthetic training images")
    num_classes: int | None = _opt(None, "classes of synthetic data (others: from the dataset)")
    method: str = _opt("dense", "sparse-training algorithm name, or dense")
    sparsity: float = _opt(0.9, "fraction of weights removed in the sparsified layers, in [0, 1)")
    distribution: str = _opt("erk", f"layer-wise sparsity: {', '.join(DISTRIBUTIONS)}")
    backend: str = _opt("auto", f"sparse-layer backend: {', '.join(BACKENDS)}")
    block_t: int = _opt(8, "HRBP: dense blocks per layer (t)")
    block_s: float | None = _opt(None, "HRBP: block density s, a multiple of 1/(kh*kw) (default: 4/9 for 3x3 "
                                       "kernels, the smallest admissible value otherwise; see masks.hrbp)")
    method_options: dict = _opt({}, "extra keyword arguments for the algorithm (YAML mapping)")
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto")
    epochs: int = _opt(160, "training epochs")
    batch_size: int = _opt(128, "global batch size (split evenly across torchrun processes)")
    optimizer: str = _opt("sgd", f"one of {', '.join(OPTIMIZERS)}")
    lr: float = _opt(0.1, "initial learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "weight decay")
    nesterov: bool = _opt(False, "Nesterov momentum (SGD)")
    schedule: str = _opt("multistep", f"LR schedule: {', '.join(SCHEDULES)}")
    milestones: list = _opt([80, 120], "epochs at which multistep multiplies the LR by gamma")
    gamma: float = _opt(0.1, "multistep LR factor")
    seed: int = _opt(0, "seed of weights, masks, data order and augmentation")
    out: str = _opt("runs/run", "output directory (checkpoint, metrics, summary)")
    resume: str | None = _opt(None, "checkpoint to resume from ('auto': OUT/checkpoint.pt)")
    pretrained: str | None = _opt(None, "local weights file (state_dict or sparsetrain checkpoint) to start from")
    checkpoint_every: int = _opt(0, "also checkpoint every N steps (0: at epoch ends only)")
    max_steps: int | None = _opt(None, "stop after this many optimiser steps in total (smoke runs)")
    eval_batch_size: int = _opt(256, "batch size for evaluation")
    workers: int = _opt(0, "DataLoader workers (imagefolder)")
    threads: int | None = _opt(None, "CPU threads (torch and the sparse kernels)")
    deterministic: bool = _opt(True, "deterministic algorithms (exact resume on CPU)")
    progress: bool = _opt(True, "tqdm progress bars (rank 0)")
    debug_exit_after: int | None = _opt(None, "testing only: exit abruptly after this global step", hidden=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and summaries)."""
        return dataclasses.asdict(self)


def field_names() -> list[str]:
    """The option names, in declaration order."""
    return [f.name for f in fields(TrainConfig)]


def available_methods() -> tuple[str, ...]:
    """``dense`` plus every algorithm registered in ``sparsetrain.algorithms`` (when it exists)."""
    try:
        algorithms = importlib.import_module("sparsetrain.algorithms")
    except ImportError:
        return ("dense",)
    for attr in ("available", "names", "list_algorithms"):
        fn = getattr(algorithms, attr, None)
        if callable(fn):
            return ("dense",) + tuple(n for n in fn() if n != "dense")
    for attr in ("REGISTRY", "ALGORITHMS", "METHODS"):
        reg = getattr(algorithms, attr, None)
        if reg:
            return ("dense",) + tuple(n for n in reg if n != "dense")
    return ("dense",)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a YAML mapping, keys normalised to field names; unknown keys are an error."""
    import yaml
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config: file {p} does not exist")
    with open(p) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {p}: expected a mapping of option: value, got {type(data).__name__}")
    out, known = {}, set(field_names())
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key not in known:
            raise ValueError(f"--config {p}: unknown option {k!r}; known options: {', '.join(sorted(known))}")
        out[key] = v
    return out


def build_config(yaml_path: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then ``overrides`` (command line); validated."""
    values = read_yaml(yaml_path) if yaml_path else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _check(cond: bool, option: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"--{option.replace('_', '-')}: {msg}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` naming the first bad option."""
    _check(isinstance(cfg.model, str) and is_known_model(cfg.model), "model",
           f"unknown model {cfg.model!r}; choose one of {', '.join(MODELS)}, or torchvision:NAME / timm:NAME / hf:bert-base")
    _check(cfg.dataset in DATASETS, "dataset", f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    methods = available_methods()
    _check(cfg.method in methods, "method", f"unknown method {cfg.method!r}; available: {', '.join(methods)}")
    _check(_is_number(cfg.sparsity) and 0.0 <= cfg.sparsity < 1.0, "sparsity",
           f"must be a number in [0, 1), got {cfg.sparsity!r}")
    _check(cfg.distribution in DISTRIBUTIONS, "distribution", f"must be one of {DISTRIBUTIONS}, got {cfg.distribution!r}")
    _check(cfg.backend in BACKENDS, "backend", f"must be one of {BACKENDS}, got {cfg.backend!r}")
    _check(isinstance(cfg.block_t, int) and cfg.block_t >= 1, "block_t", f"must be an integer >= 1, got {cfg.block_t!r}")
    _check(cfg.block_s is None or _is_number(cfg.block_s) and 0 < cfg.block_s <= 1, "block_s",
           f"must be in (0, 1], got {cfg.block_s!r}")
    _check(isinstance(cfg.method_options, dict), "method_options", "must be a mapping")
    for name in ("epochs", "batch_size", "synthetic_size", "eval_batch_size"):
        v = getattr(cfg, name)
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, f"must be an integer >= 1, got {v!r}")
    for name in ("image_size", "num_classes", "threads", "max_steps", "debug_exit_after"):
        v = getattr(cfg, name)
        _check(v is None or (isinstance(v, int) and v >= 1), name, f"must be an integer >= 1, got {v!r}")
    _check(cfg.width is None or (_is_number(cfg.width) and cfg.width > 0), "width", f"must be > 0, got {cfg.width!r}")
    _check(cfg.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    _check(cfg.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}, got {cfg.schedule!r}")
    _check(_is_number(cfg.lr) and cfg.lr > 0, "lr", f"must be > 0, got {cfg.lr!r}")
    _check(_is_number(cfg.momentum) and 0 <= cfg.momentum < 1, "momentum", f"must be in [0, 1), got {cfg.momentum!r}")
    _check(_is_number(cfg.weight_decay) and cfg.weight_decay >= 0, "weight_decay", f"must be >= 0, got {cfg.weight_decay!r}")
    _check(_is_number(cfg.gamma) and 0 < cfg.gamma <= 1, "gamma", f"must be in (0, 1], got {cfg.gamma!r}")
    _check(isinstance(cfg.milestones, (list, tuple)) and all(isinstance(m, int) and m >= 1 for m in cfg.milestones),
           "milestones", f"must be a list of epochs >= 1, got {cfg.milestones!r}")
    _check(isinstance(cfg.checkpoint_every, int) and cfg.checkpoint_every >= 0, "checkpoint_every",
           f"must be an integer >= 0, got {cfg.checkpoint_every!r}")
    _check(isinstance(cfg.workers, int) and cfg.workers >= 0, "workers", f"must be an integer >= 0, got {cfg.workers!r}")
    _check(cfg.device == "auto" or cfg.device == "cpu" or str(cfg.device).startswith("cuda"), "device",
           f"must be cpu, cuda, cuda:N or auto, got {cfg.device!r}")
    if cfg.dataset in ("cifar10", "cifar100", "imagefolder"):
        _check(cfg.data_root is not None, "data_root", f"--dataset {cfg.dataset} needs a local data folder")
        _check(Path(cfg.data_root).is_dir(), "data_root", f"folder {cfg.data_root} does not exist")
    if cfg.dataset == "fashion-mnist" and cfg.data_root is not None:
        _check(Path(cfg.data_root).is_dir(), "data_root", f"folder {cfg.data_root} does not exist")
    if cfg.pretrained is not None:
        _check(Path(cfg.pretrained).is_file(), "pretrained", f"file {cfg.pretrained} does not exist")
