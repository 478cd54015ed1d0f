"""Datasets read from local files (nothing is downloaded)."""
from .fashion_mnist import load_fashion_mnist

__all__ = ["load_fashion_mnist"]
