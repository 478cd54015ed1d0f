"""Fashion-MNIST from gzipped IDX files (Debian's dataset-fashion-mnist), or the committed subset.

Fashion-MNIST is (c) Zalando SE, released under the MIT licence
(https://github.com/zalandoresearch/fashion-mnist); the subset in ``fixtures/`` keeps that licence.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FIXTURE = Path(__file__).with_name("fixtures") / "fashion_mnist_subset.npz"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a uint8 array of its stated shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images (N, 1, 28, 28) float32 normalised, labels (N,) int64, and where they came from.

    Looks in ``root``, then ``/usr/share/datasets/fashion-mnist``; falls back to the committed subset.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    for base in [Path(root)] if root is not None else [DEBIAN_ROOT]:
        img, lab = (base / f for f in _FILES[split])
        if img.exists() and lab.exists():
            images, labels, source = read_idx(img), read_idx(lab), str(base)
            break
    else:
        if root is not None:
            raise FileNotFoundError(f"root={root!s} has no {_FILES[split][0]} / {_FILES[split][1]}")
        with np.load(FIXTURE) as z:
            images, labels, source = z[f"{split}_images"], z[f"{split}_labels"], f"subset {FIXTURE.name}"
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - 0.2860) / 0.3530  # dataset mean/std
    return x, torch.from_numpy(labels.astype(np.int64)), source
