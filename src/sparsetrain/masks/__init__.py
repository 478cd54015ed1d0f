"""Pure mask functions: tensors in, bool tensors out, seeded generators for anything random."""
from .random import random_mask

__all__ = ["random_mask"]
