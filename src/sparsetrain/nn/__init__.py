"""Sparse modules and whole-model conversion."""
from .convert import DecisionTable, choose_backend, decision_table, densify, sparsify
from .sparse_conv import SparseConv2d
from .sparse_linear import SparseLinear

__all__ = ["SparseLinear", "SparseConv2d", "sparsify", "densify", "decision_table", "choose_backend",
           "DecisionTable"]
