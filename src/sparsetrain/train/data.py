"""Datasets read from a local root (nothing is downloaded), a resumable batch order, and batched
augmentation with torch ops whose randomness comes from (seed, epoch, step) so a resumed run sees the
same batches and the same crops/flips as an uninterrupted one."""
from __future__ import annotations

import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "imagefolder", "synthetic")
_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", tar="cifar-10-python.tar.gz", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], key=b"labels", classes=10,
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": dict(folder="cifar-100-python", tar="cifar-100-python.tar.gz", train=["train"], test=["test"], key=b"fine_labels", classes=100,
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


@dataclass
class Split:
    """One split held in memory: ``images`` uint8 (N,C,H,W) or float (normalised), int64 ``labels``."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...] | None = None  # set for uint8 images: normalised per batch
    std: tuple[float, ...] | None = None
    augment: str = "none"  # "cifar" (pad-4 random crop + horizontal flip) or "none"

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataSpec:
    """What the trainer needs: both splits, the number of classes and input channels, and where from."""

    train: object
    test: object
    num_classes: int
    in_channels: int
    source: str


def _cifar_dir(root: Path, name: str) -> Path:
    info = _CIFAR[name]
    for cand in (root / info["folder"], root):
        if all((cand / f).is_file() for f in info["train"] + info["test"]):
            return cand
    files = ", ".join(info["train"] + info["test"])
    raise FileNotFoundError(
        f"--data-root {root}: {name} not found. Put the python-pickle CIFAR files ({files}) in "
        f"{root / info['folder']} (the folder inside the official {info['tar']} "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html); nothing is downloaded")


def _read_cifar(folder: Path, files: list[str], key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            # the official CIFAR format is a pickle (as torchvision reads it); only open files you trust
            d = pickle.load(fh, encoding="bytes")
        if b"data" not in d or key not in d:
            raise ValueError(f"{folder / f} is not a CIFAR batch (no {b'data'!r} / {key!r} entries)")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load_cifar(name: str, root: str | os.PathLike) -> DataSpec:
    """CIFAR-10/100 from the standard python-pickle batches under ``root``."""
    info = _CIFAR[name]
    folder = _cifar_dir(Path(root), name)
    splits = []
    for part, aug in (("train", "cifar"), ("test", "none")):
        x, y = _read_cifar(folder, info[part], info["key"])
        splits.append(Split(x, y, info["mean"], info["std"], aug))
    return DataSpec(splits[0], splits[1], info["classes"], 3, str(folder))


def load_fashion(root: str | os.PathLike | None) -> DataSpec:
    """Fashion-MNIST from ``root``, the Debian package, or the committed subset (no augmentation)."""
    from ..data.fashion_mnist import load_fashion_mnist
    xtr, ytr, src = load_fashion_mnist("train", root)
    xte, yte, _ = load_fashion_mnist("test", root)
    return DataSpec(Split(xtr, ytr), Split(xte, yte), 10, 1, src)


def synthetic(size: int = 256, image_size: int = 32, channels: int = 3, num_classes: int = 10,
              seed: int = 0) -> DataSpec:
    """Gaussian images whose label is a fixed random linear function of a pooled copy: learnable, tiny."""
    g = torch.Generator().manual_seed(seed)
    n_test = max(num_classes, size // 4)
    x = torch.randn(size + n_test, channels, image_size, image_size, generator=g)
    proj = torch.randn(channels * 16, num_classes, generator=g)
    y = (torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ proj).argmax(1)
    # CIFAR-style crop/flip on the training split, so smoke runs and resume tests exercise augmentation
    return DataSpec(Split(x[:size], y[:size], augment="cifar"), Split(x[size:], y[size:]), num_classes, channels,
                    f"synthetic({size}+{n_test}, {channels}x{image_size}x{image_size})")


def load_imagefolder(root: str | os.PathLike, image_size: int = 224) -> DataSpec:
    """ImageNet-style ``root/train/CLASS/*.jpg`` and ``root/val/CLASS/*.jpg`` through torchvision."""
    try:
        datasets = importlib.import_module("torchvision.datasets")
        T = importlib.import_module("torchvision.transforms")
    except Exception as e:
        raise ImportError(f"--dataset imagefolder needs torchvision, which cannot be imported here ({e})") from e
    root = Path(root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise FileNotFoundError(f"--data-root {root}: imagefolder expects {root}/train/CLASS/*.jpg and "
                                f"{root}/val/CLASS/*.jpg")
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train = datasets.ImageFolder(root / "train", T.Compose([T.RandomResizedCrop(image_size),
                                                            T.RandomHorizontalFlip(), T.ToTensor(), norm]))
    test = datasets.ImageFolder(root / "val", T.Compose([T.Resize(int(image_size * 256 / 224)),
                                                         T.CenterCrop(image_size), T.ToTensor(), norm]))
    return DataSpec(train, test, len(train.classes), 3, str(root))


def load_data(name: str, root: str | None, *, image_size: int | None = None, synthetic_size: int = 256,
              num_classes: int | None = None, seed: int = 0, in_channels: int = 3) -> DataSpec:
    """Load dataset ``name`` (one of ``DATASETS``) from ``root``."""
    if name in _CIFAR:
        if root is None:
            raise FileNotFoundError(f"--dataset {name} needs --data-root (a folder holding {_CIFAR[name]['folder']}/)")
        return load_cifar(name, root)
    if name == "fashion-mnist":
        return load_fashion(root)
    if name == "imagefolder":
        if root is None:
            raise FileNotFoundError("--dataset imagefolder needs --data-root (a folder holding train/ and val/)")
        return load_imagefolder(root, image_size or 224)
    if name == "synthetic":
        return synthetic(synthetic_size, image_size or 32, in_channels, num_classes or 10, seed)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


# ------------------------------------------------------------------------------- batches and order
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full global batches per epoch (the last partial batch is dropped, so every step has equal size)."""
    return n // batch_size


def _augment_params(batch: int, seed: int, epoch: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step + 1)
    return torch.stack([torch.randint(0, 9, (batch,), generator=g), torch.randint(0, 9, (batch,), generator=g),
                        torch.randint(0, 2, (batch,), generator=g)], 1)


def _crop_flip(x: torch.Tensor, params: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch plus horizontal flip (torch ops, no torchvision)."""
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = params[:, 0, None] + torch.arange(h)
    cols = params[:, 1, None] + torch.arange(w)
    cols = torch.where(params[:, 2, None].bool(), cols.flip(1), cols)
    return xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
              rows[:, None, :, None], cols[:, None, None, :]]


def make_batch(split: Split, idx: torch.Tensor, train: bool, params: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather, augment (train only) and normalise the samples ``idx`` of ``split``."""
    x = split.images[idx]
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    if train and split.augment == "cifar" and params is not None:
        x = _crop_flip(x, params)
    if split.mean is not None:
        mean = torch.tensor(split.mean).view(1, -1, 1, 1)
        std = torch.tensor(split.std).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x.contiguous(), split.labels[idx]


def train_batches(data, batch_size: int, seed: int, epoch: int, start_step: int = 0, rank: int = 0,
                  world: int = 1, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of every global training batch of ``epoch`` from ``start_step`` on."""
    n = len(data)
    order = epoch_order(n, seed, epoch)
    steps = steps_per_epoch(n, batch_size)
    if isinstance(data, Split):
        for step in range(start_step, steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            params = _augment_params(batch_size, seed, epoch, step)[rank::world]
            yield make_batch(data, idx[rank::world], True, params)
        return
    # a map-style dataset (ImageFolder): torchvision transforms in DataLoader workers; the order is exact,
    # the random crops are not reproducible across a resume
    batches = [order[s * batch_size:(s + 1) * batch_size][rank::world].tolist() for s in range(start_step, steps)]
    loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=workers)
    yield from loader


def eval_batches(data, batch_size: int, rank: int = 0, world: int = 1, workers: int = 0):
    """This rank's contiguous shard of the test split in batches (no augmentation, no shuffling)."""
    n = len(data)
    lo, hi = n * rank // world, n * (rank + 1) // world
    if isinstance(data, Split):
        for s in range(lo, hi, batch_size):
            yield make_batch(data, torch.arange(s, min(s + batch_size, hi)), False)
        return
    sub = torch.utils.data.Subset(data, range(lo, hi))
    yield from torch.utils.data.DataLoader(sub, batch_size=batch_size, num_workers=workers)
