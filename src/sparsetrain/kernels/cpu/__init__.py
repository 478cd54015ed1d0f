"""numba CPU kernels (SparseProp). No torch imports: arrays in, arrays out."""
from .conv import conv_backward_bl, conv_backward_ow, conv_forward_bl, conv_forward_ow
from .runs import sddmm_runs, spmm_runs, spmm_sddmm_rows, spmm_sddmm_runs
from .same import sddmm_same, spmm_same, spmm_sddmm_same
from .transpose import pad_batch_last, pad_planes, take_into, transpose_into, unpad_batch_first

__all__ = ["spmm_runs", "sddmm_runs", "spmm_sddmm_runs", "spmm_sddmm_rows", "spmm_same", "sddmm_same",
           "spmm_sddmm_same", "transpose_into", "take_into", "pad_batch_last", "pad_planes", "unpad_batch_first",
           "conv_forward_bl", "conv_backward_bl", "conv_forward_ow", "conv_backward_ow"]
