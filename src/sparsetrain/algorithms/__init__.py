"""Sparse-training algorithms: built like optimizers, stepped after ``optimizer.step()``."""
from .base import Sparsifier
from .distributed import all_reduce_scores, broadcast_masks
from .dynamic import SET, DynamicSparsifier, RigL
from .gradual import GMP, sparseprop_gmp
from .hrbp import HRBPDynamic, HRBPStatic, RandomChannel
from .lottery import LotteryTicket
from .registry import create, names, register
from .static import Static
from .transfer import load_sparse_checkpoint

__all__ = ["Sparsifier", "Static", "DynamicSparsifier", "SET", "RigL", "GMP", "sparseprop_gmp", "HRBPStatic",
           "HRBPDynamic", "RandomChannel", "LotteryTicket", "create", "names", "register", "load_sparse_checkpoint", "all_reduce_scores", "broadcast_masks"]
