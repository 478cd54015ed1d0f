"""Pure mask functions: tensors in, bool tensors (or a BlockLayout) out, seeded generators for anything random."""
from .channel import random_channel
from .hrbp import hrbp, hrbp_random
from .nm import nm_mask, transposable_nm_mask
from .random import random_mask
from .regroup import Regrouping, preserved_in_backward, regroup

__all__ = ["random_mask", "random_channel", "hrbp", "hrbp_random", "regroup", "Regrouping", "preserved_in_backward",
           "nm_mask", "transposable_nm_mask"]
