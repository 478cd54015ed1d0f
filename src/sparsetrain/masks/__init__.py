"""Pure mask functions: tensors in, bool tensors (or a BlockLayout) out, seeded generators for anything random."""
from .channel import random_channel
from .hrbp import hrbp, hrbp_random
from .random import random_mask

__all__ = ["random_mask", "random_channel", "hrbp", "hrbp_random"]
