"""sparsetrain: sparse neural-network training that is actually faster (SparseProp and HRBP engines)."""
import os as _os

# numba's kernels and torch run on two OpenMP runtimes; with the default spin-waiting, each pool's idle threads
# burn the cores the other pool needs (up to 40x slower block convs on a busy 2-core machine, see
# docs/decisions.md). Sleeping waiters fix that. Set before any OpenMP runtime starts; a user's value wins,
# and torch's pool only sees it when sparsetrain is imported before torch (the CLI always is).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from . import algorithms, masks
from .algorithms import GMP, SET, HRBPDynamic, LotteryTicket, RigL, Static
from .formats import CSR, BlockLayout, ConvCSR
from .runtime import tune_malloc
from .nn import (BlockSparseConv2d, BlockSparseLinear, DecisionTable, SparseConv2d, SparseLinear, decision_table,
                 densify, sparsify)

__version__ = "0.1.0"
__all__ = ["SparseLinear", "SparseConv2d", "BlockSparseConv2d", "BlockSparseLinear", "BlockLayout", "sparsify",
           "densify", "decision_table", "DecisionTable", "CSR", "ConvCSR", "masks", "algorithms", "Static", "SET",
           "RigL", "HRBPDynamic", "GMP", "LotteryTicket", "tune_malloc", "__version__"]
