"""Triton GPU kernels (tested on the CPU under TRITON_INTERPRET=1)."""
