"""Fidelity table: a small ResNet on real Fashion-MNIST at 90% sparsity with every algorithm, short schedule.

Each algorithm's sparse layers move onto the fast packed layers (``backend="auto"``: the masked dense
reference, the SparseProp kernels or the HRBP block layers, whichever times fastest on the real input)
once at least 80% sparse. Prints a markdown table of test accuracy and training time.

    .venv/bin/python benchmarks/fidelity.py --threads 2 --train-size 6000 --epochs 1
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import create
from sparsetrain.data.fashion_mnist import load_fashion_mnist
from sparsetrain.train.models.cifar_resnet import CifarResNet


def small_resnet(width: int = 16, classes: int = 10) -> nn.Module:
    """ResNet-8 (the trainer's CIFAR ResNet with one block per stage: width, 2*width, 4*width), 1-channel input."""
    return CifarResNet(8, classes, in_channels=1, width=width)


METHODS = {  # label: (registry name, options)
    "dense": (None, {}),
    "random (ERK)": ("random", {}),
    "SNIP": ("snip", {}),
    "GraSP": ("grasp", {}),
    "SynFlow": ("synflow", {}),
    "SET": ("set", {}),
    "RigL": ("rigl", {}),
    "HRBP static": ("hrbp", {}),
    "HRBP DST": ("hrbp-dst", {}),
    "GMP": ("gmp", {}),
    "random channel": ("random-channel", {}),
}


def run(label: str, args, data, test) -> tuple[float, float, float]:
    name, extra = METHODS[label]
    torch.manual_seed(args.seed)
    model = small_resnet(args.width)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    x_all, y_all = data
    n, bs = x_all.shape[0], args.batch_size
    steps = args.epochs * (n // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(args.epochs)])
    batches = [(x_all[order[i * bs:(i + 1) * bs]], y_all[order[i * bs:(i + 1) * bs]]) for i in range(steps)]
    t0 = time.perf_counter()
    algo = None
    if name is not None:
        opts = dict(density=1 - args.sparsity, distribution="erk", backend="auto", example_input=batches[0][0],
                    seed=args.seed, **extra)
        if name in ("snip", "grasp"):
            opts.update(data=batches, n_batches=args.score_batches)
        if name in ("set", "rigl", "hrbp-dst"):
            opts.update(total_steps=steps, update_interval=args.update_interval)
        if name == "gmp":
            opts.update(start_step=steps // 10, end_step=steps * 6 // 10, update_interval=max(1, steps // 10))
        algo = create(name, model, opt, **opts)
    model.train()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
        if algo is not None:
            algo.step()
    train_s = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, test[0].shape[0], 1000):
            correct += int((model(test[0][i:i + 1000]).argmax(1) == test[1][i:i + 1000]).sum())
    acc = correct / test[0].shape[0]
    density = 1.0
    if algo is not None:
        masks = algo.masks()
        density = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    return acc, train_s, density


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--update-interval", type=int, default=20)
    p.add_argument("--score-batches", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y, source = load_fashion_mnist("train")
    xt, yt, _ = load_fashion_mnist("test")
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(x.shape[0], generator=g)[:args.train_size]
    print(f"Fashion-MNIST from {source}: {len(idx)} train images, {xt.shape[0]} test images; "
          f"{args.epochs} epoch(s), batch {args.batch_size}, sparsity {args.sparsity}, threads {args.threads}")
    rows = ["| method | test accuracy | train time (s) | density of sparse layers |", "|---|---|---|---|"]
    for label in args.methods.split(","):
        acc, secs, dens = run(label, args, (x[idx], y[idx]), (xt, yt))
        rows.append(f"| {label} | {acc:.4f} | {secs:.1f} | {dens:.3f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
