"""Packed weight formats: pack from (weight, mask), unpack to dense, strict validators."""
from .block_layout import BlockLayout
from .conv_csr import ConvCSR
from .csr import CSR

__all__ = ["CSR", "ConvCSR", "BlockLayout"]
