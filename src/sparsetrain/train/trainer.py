"""The training loop: one ``Trainer(cfg).run()`` builds data, model, optimizer, method and schedule,
trains with progress bars and per-epoch metrics, checkpoints atomically, and resumes exactly."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nn import decision_table
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_text_atomic
from .config import TrainConfig
from .data import eval_batches, load_data, steps_per_epoch, train_batches
from .distributed import all_reduce_sum, init_distributed, pick_device, shutdown
from .models import build_model
from .sparsity import check_backend_available, create_algorithm, layer_backends, layer_masks, set_backends

CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
SUMMARY = "summary.json"
COLUMNS = ("epoch", "global_step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "sparsity",
           "step_ms", "epoch_s")


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay), Adam or AdamW as configured."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch LR schedule: multistep (the papers'), cosine, or constant."""
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _e: 1.0)


def overall_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of zeros over all masked layers (0 when none)."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total if total else 0.0


def load_pretrained(model: nn.Module, path: str) -> None:
    """Load weights from a plain state_dict or a sparsetrain checkpoint's model entry (dense layouts)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("format") == "sparsetrain-checkpoint":
        state = state["model"]
        if any(k.endswith(".values") for k in state):
            raise ValueError(f"--pretrained {path}: this checkpoint holds packed sparse layers; --pretrained "
                             "takes dense weights (save the state_dict of sparsetrain.densify(model))")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"--pretrained {path} does not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


class Trainer:
    """Trains one configuration; ``run()`` returns the summary dict also written to OUT/summary.json."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        device = pick_device(cfg.device)
        self.dist = init_distributed(device)
        self.device = pick_device(cfg.device, self.dist.local_rank)
        if cfg.batch_size % self.dist.world:
            raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {self.dist.world} processes")
        if cfg.method != "dense":
            check_backend_available(cfg.backend)
        self.out = Path(cfg.out)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._seed(cfg.seed)
        self.data = load_data(cfg.dataset, cfg.data_root, image_size=cfg.image_size, synthetic_size=cfg.synthetic_size,
                              num_classes=cfg.num_classes, seed=cfg.seed)
        self.steps_per_epoch = steps_per_epoch(len(self.data.train), cfg.batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"--batch-size {cfg.batch_size} exceeds the {len(self.data.train)} training images")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.model = build_model(cfg.model, self.data.num_classes, self.data.in_channels, width=cfg.width)
        if cfg.pretrained:
            load_pretrained(self.model, cfg.pretrained)
        self.model.to(self.device)
        resume = self._resume_path()
        self.state = load_checkpoint(resume, self.device) if resume else None
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        first = next(train_batches(self.data.train, cfg.batch_size, cfg.seed, 0, 0, self.dist.rank, self.dist.world))
        first = (first[0].to(self.device), first[1].to(self.device))
        self.algorithm = create_algorithm(cfg, self.model, self.optimizer, self.total_steps, self.steps_per_epoch,
                                          first[0], first)
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.criterion = nn.CrossEntropyLoss()
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.acc = [0.0, 0.0, 0.0]  # this epoch so far: loss sum, correct, samples (this rank)
        self.step_times: list[float] = []
        self.history: list[dict[str, Any]] = []  # one row per logged epoch, kept on every rank
        if self.state:
            self._restore(self.state)
            self.state = None  # free the loaded copy
        self.ddp = self._wrap()
        self.tb = self._tensorboard()

    # ----------------------------------------------------------------------------- setup helpers
    @staticmethod
    def _seed(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def _resume_path(self) -> Path | None:
        r = self.cfg.resume
        if r is None:
            return None
        return self.out / CHECKPOINT if r == "auto" else Path(r)

    def _wrap(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers (BN statistics) stay per-rank like single-GPU-per-process training in the papers
        return nn.parallel.DistributedDataParallel(self.model, device_ids=ids, broadcast_buffers=False)

    def _tensorboard(self):
        if not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: CSV/JSON only
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def _restore(self, s: dict[str, Any]) -> None:
        if (s.get("algorithm") is None) != (self.algorithm is None):
            raise ValueError(f"--resume: the checkpoint was trained with method {s['config']['method']!r}, "
                             f"this run uses {self.cfg.method!r}")
        if self.algorithm is not None:  # first: masks (and packed shapes) before weights and optimizer state
            self.algorithm.load_state_dict(s["algorithm"])
        set_backends(self.model, s.get("backends", {}))
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.epoch, self.step_in_epoch, self.global_step = s["epoch"], s["step_in_epoch"], s["global_step"]
        self.acc = list(s["accumulators"])
        set_rng_state(s["rng"])
        # every rank reads the rows (rank 0 may be rewriting the file, but atomically) and drops the epochs
        # this run will train again, so the summary is the same on every rank and no rank waits on another
        self.history = [r for r in self._read_rows() if r["epoch"] <= self.epoch]
        if self.dist.is_main:
            self._write_rows()

    def _checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint({
            "config": self.cfg.to_dict(), "model": self.model.state_dict(), "masks": layer_masks(self.model),
            "backends": layer_backends(self.model),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "algorithm": self.algorithm.state_dict() if self.algorithm is not None else None,
            "rng": rng_state(), "sampler": {"seed": self.cfg.seed, "epoch": self.epoch, "start_step": self.step_in_epoch},
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "accumulators": list(self.acc), "world_size": self.dist.world,
            "model_args": {"num_classes": self.data.num_classes, "in_channels": self.data.in_channels},
        }, self.out / CHECKPOINT)

    # ----------------------------------------------------------------------------------- metrics
    def _read_rows(self) -> list[dict[str, Any]]:
        """The metrics rows an earlier run wrote to OUT/metrics.csv, numbers parsed."""
        path = self.out / METRICS_CSV
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return [{k: int(v) if k in ("epoch", "global_step") else float(v) for k, v in r.items()}
                    for r in csv.DictReader(f)]

    def _write_rows(self) -> None:
        text = io.StringIO()
        w = csv.DictWriter(text, COLUMNS)
        w.writeheader()
        w.writerows(self.history)
        write_text_atomic(self.out / METRICS_CSV, text.getvalue())
        write_text_atomic(self.out / METRICS_JSON, json.dumps(self.history, indent=1))

    def _log_epoch(self, row: dict) -> None:
        self.history.append({k: row[k] for k in COLUMNS})
        if not self.dist.is_main:
            return
        self._write_rows()
        if self.tb is not None:
            for k in COLUMNS[2:]:
                self.tb.add_scalar(k, row[k], row["epoch"])

    # -------------------------------------------------------------------------------------- loop
    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy over the whole test split (sharded across ranks)."""
        self.model.eval()
        loss_sum = correct = n = 0.0
        with torch.no_grad():
            for x, y in eval_batches(self.data.test, self.cfg.eval_batch_size, self.dist.rank, self.dist.world,
                                     self.cfg.workers):
                x, y = x.to(self.device), y.to(self.device)
                out = self.model(x)
                loss_sum += float(self.criterion(out, y)) * len(y)
                correct += float((out.argmax(1) == y).sum())
                n += len(y)
        self.model.train()
        loss_sum, correct, n = all_reduce_sum([loss_sum, correct, n], self.dist, self.device)
        return loss_sum / max(n, 1), correct / max(n, 1)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        t0 = time.perf_counter()
        out = self.ddp(x)
        loss = self.criterion(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.algorithm is not None:
            params_before = [id(p) for p in self.model.parameters()]
            self.algorithm.step()
            if self.dist.enabled and params_before != [id(p) for p in self.model.parameters()]:
                self.ddp = self._wrap()  # a repack replaced parameters: DDP must see the new ones
        self.step_times.append(time.perf_counter() - t0)
        self.acc[0] += float(loss.detach()) * len(y)
        self.acc[1] += float((out.detach().argmax(1) == y).sum())
        self.acc[2] += len(y)

    def run(self) -> dict[str, Any]:
        """Train to the configured end (epochs or max_steps); returns the summary."""
        from tqdm import tqdm
        cfg = self.cfg
        self.model.train()
        try:
            while self.epoch < cfg.epochs and self.global_step < self.total_steps:
                t_epoch = time.perf_counter()
                self.step_times = []
                todo = min(self.steps_per_epoch - self.step_in_epoch, self.total_steps - self.global_step)
                bar = tqdm(total=todo, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                           disable=not (cfg.progress and self.dist.is_main), dynamic_ncols=True)
                batches = train_batches(self.data.train, cfg.batch_size, cfg.seed, self.epoch, self.step_in_epoch,
                                        self.dist.rank, self.dist.world, cfg.workers)
                for x, y in batches:
                    self._train_step(x.to(self.device), y.to(self.device))
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.acc[0] / max(self.acc[2], 1):.3f}")
                    if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0 \
                            and self.step_in_epoch < self.steps_per_epoch:
                        self._checkpoint()
                    if cfg.debug_exit_after is not None and self.global_step >= cfg.debug_exit_after:
                        os._exit(3)  # testing: die like a killed process (no cleanup, no final checkpoint)
                    if self.global_step >= self.total_steps:
                        break
                bar.close()
                self._end_epoch(time.perf_counter() - t_epoch)
        finally:
            if self.tb is not None:
                self.tb.close()
        summary = self._summary()
        shutdown(self.dist)
        return summary

    def _end_epoch(self, seconds: float) -> None:
        loss_sum, correct, n = all_reduce_sum(list(self.acc), self.dist, self.device)
        test_loss, test_acc = self.evaluate()
        lr = self.optimizer.param_groups[0]["lr"]
        finished = self.step_in_epoch >= self.steps_per_epoch
        row = {"epoch": self.epoch + 1, "global_step": self.global_step, "lr": lr,
               "train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1), "test_loss": test_loss,
               "test_acc": test_acc, "sparsity": overall_sparsity(layer_masks(self.model)),
               "step_ms": statistics.median(self.step_times) * 1e3 if self.step_times else math.nan,
               "epoch_s": seconds}
        self._log_epoch(row)
        if self.dist.is_main:
            print(f"epoch {row['epoch']:>3}/{self.cfg.epochs}  step {self.global_step}  lr {lr:.4g}  "
                  f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  test loss {test_loss:.4f} "
                  f"acc {test_acc:.4f}  sparsity {row['sparsity']:.3f}  {row['step_ms']:.1f} ms/step  "
                  f"{seconds:.1f}s", flush=True)
        if finished:
            self.scheduler.step()
            self.epoch += 1
            self.step_in_epoch = 0
            self.acc = [0.0, 0.0, 0.0]
        self._checkpoint()

    def _summary(self) -> dict[str, Any]:
        rows = self.history
        masks = layer_masks(self.model)
        backends = layer_backends(self.model)
        decisions = {d.layer: d for d in decision_table(self.model)}
        layers = [{"layer": n, "shape": list(m.shape), "sparsity": 1.0 - float(m.float().mean()),
                   "backend": backends.get(n, {}).get("backend", "masked-dense"),
                   "choice": decisions[n].choice if n in decisions else None,
                   "times_ms": dict(decisions[n].times_ms) if n in decisions else {}} for n, m in masks.items()]
        last = rows[-1] if rows else {}
        summary = {"config": self.cfg.to_dict(), "epochs_done": self.epoch, "global_step": self.global_step,
                   "test_acc": float(last["test_acc"]) if last else None,
                   "best_test_acc": max(float(r["test_acc"]) for r in rows) if rows else None,
                   "sparsity": overall_sparsity(masks),
                   "step_ms": statistics.median(float(r["step_ms"]) for r in rows) if rows else None,
                   "layers": layers, "world_size": self.dist.world, "threads": torch.get_num_threads(),
                   "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
                   "torch": torch.__version__}
        if self.dist.is_main:
            write_text_atomic(self.out / SUMMARY, json.dumps(summary, indent=1))
        return summary
