"""torch.autograd.Function per sparse layer kind, dispatching to the CPU kernels."""
from .conv import VARIANTS, ConvGeometry, sparse_conv2d
from .linear import sparse_linear
from .threads import sync_threads

__all__ = ["sparse_linear", "sparse_conv2d", "ConvGeometry", "VARIANTS", "sync_threads"]
