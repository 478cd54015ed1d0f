"""Sparse modules and whole-model conversion."""
from .block_sparse import BlockSparseConv2d, BlockSparseLinear
from .convert import DecisionTable, choose_backend, decision_table, densify, sparsify
from .sparse_conv import SparseConv2d
from .sparse_linear import SparseLinear

__all__ = ["SparseLinear", "SparseConv2d", "BlockSparseConv2d", "BlockSparseLinear", "sparsify", "densify",
           "decision_table", "choose_backend", "DecisionTable"]
