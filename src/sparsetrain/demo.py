"""The `make demo` job: a small CNN on Fashion-MNIST, dense vs 95%-sparse, accuracy and step time."""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import load_fashion_mnist
from .masks import random_mask
from .nn import decision_table, sparsify


def small_cnn() -> nn.Sequential:
    """Conv-conv-pool-conv-pool-fc-fc for 28x28 grey images."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 10))


def _train(model, x, y, steps, batch, lr, seed, desc):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    times = []
    model.train()
    for _ in tqdm(range(steps), desc=desc, leave=False, disable=None):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    warm = times[min(5, len(times) - 1):]  # first steps include numba compilation and allocation
    return sorted(warm)[len(warm) // 2], loss.item()


@torch.no_grad()
def _accuracy(model, x, y, batch=500) -> float:
    model.eval()
    hits = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(y), batch))
    return hits / len(y)


def run_demo(steps: int = 200, batch: int = 64, sparsity: float = 0.95, lr: float = 0.02, seed: int = 0,
             threads: int | None = None) -> dict:
    """Train the same CNN dense and with 95% random masks on its inner layers; print and return results."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    xtr, ytr, src = load_fashion_mnist("train")
    xte, yte, _ = load_fashion_mnist("test")
    print(f"Fashion-MNIST from {src}: {len(ytr)} train / {len(yte)} test images; "
          f"{torch.get_num_threads()} threads; {steps} steps of batch {batch}")
    dense = small_cnn()
    sparse = copy.deepcopy(dense)
    gen = torch.Generator().manual_seed(seed)
    inner = {"2": sparse[2], "5": sparse[5], "9": sparse[9]}  # first conv and last linear stay dense
    masks = {name: random_mask(m.weight.shape, sparsity, gen) for name, m in inner.items()}
    with torch.no_grad():  # keep each layer's output variance: scale kept weights by 1/sqrt(density)
        for name, m in inner.items():
            m.weight.mul_(masks[name] / (1.0 - sparsity) ** 0.5)
    sparsify(sparse, masks, example_input=xtr[:batch], backend="auto", min_sparsity=0.5)
    print("backend decisions (fwd+bwd ms on the real input):")
    print(decision_table(sparse))
    t_dense, l_dense = _train(dense, xtr, ytr, steps, batch, lr, seed, "dense")
    t_sparse, l_sparse = _train(sparse, xtr, ytr, steps, batch, lr, seed, "sparse")
    acc_dense, acc_sparse = _accuracy(dense, xte, yte), _accuracy(sparse, xte, yte)
    print(f"\n{'model':<22}{'test acc':>10}{'ms/step':>10}{'final loss':>12}")
    print(f"{'dense':<22}{acc_dense:>10.4f}{t_dense * 1e3:>10.1f}{l_dense:>12.4f}")
    print(f"{f'sparse {sparsity:.0%} inner':<22}{acc_sparse:>10.4f}{t_sparse * 1e3:>10.1f}{l_sparse:>12.4f}")
    print(f"training step speedup: {t_dense / t_sparse:.2f}x (median step time after warm-up)")
    return {"acc_dense": acc_dense, "acc_sparse": acc_sparse, "ms_dense": t_dense * 1e3,
            "ms_sparse": t_sparse * 1e3, "speedup": t_dense / t_sparse}
