"""sparsetrain: sparse neural-network training that is actually faster (SparseProp and HRBP engines)."""
from . import algorithms, masks
from .algorithms import GMP, SET, HRBPDynamic, LotteryTicket, RigL, Static
from .formats import CSR, BlockLayout, ConvCSR
from .nn import (BlockSparseConv2d, BlockSparseLinear, DecisionTable, SparseConv2d, SparseLinear, decision_table,
                 densify, sparsify)

__version__ = "0.1.0"
__all__ = ["algorithms", "Static", "SET", "RigL", "HRBPDynamic", "GMP", "LotteryTicket", "SparseLinear", "SparseConv2d", "BlockSparseConv2d", "BlockSparseLinear", "BlockLayout", "sparsify",
           "densify", "decision_table", "DecisionTable", "CSR", "ConvCSR", "masks", "__version__"]
