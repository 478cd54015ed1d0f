"""numba CPU kernels (SparseProp). No torch imports: arrays in, arrays out."""
from .conv import conv_backward_bl, conv_backward_ow, conv_forward_bl, conv_forward_ow
from .runs import sddmm_runs, spmm_runs
from .same import sddmm_same, spmm_same
from .transpose import take_into, transpose_into

__all__ = ["spmm_runs", "sddmm_runs", "spmm_same", "sddmm_same", "transpose_into", "take_into", "conv_forward_bl", "conv_backward_bl", "conv_forward_ow", "conv_backward_ow"]
