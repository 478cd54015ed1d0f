"""Checks and data-movement helpers shared by the autograd ops."""
from __future__ import annotations

import numpy as np
import torch

from ..kernels.cpu import take_into, transpose_into
from .threads import sync_threads


def check_cpu_input(x: torch.Tensor, values: torch.Tensor, layer: str) -> None:
    """The sparse CPU kernels need a CPU input of the weights' dtype, float32 or float64."""
    if x.device.type != "cpu":
        raise RuntimeError(f"{layer}: the sparse-cpu backend needs CPU tensors, got input on {x.device}; "
                           "use backend='dense' (or 'auto') on other devices")
    if x.dtype != values.dtype:
        raise TypeError(f"{layer}: input dtype {x.dtype} does not match weight dtype {values.dtype}; "
                        "convert the module with .to(dtype) or the input, nothing is downcast silently")
    # a module converted after construction (.half(), .bfloat16()) reaches here; the kernels would fail inside numba
    if x.dtype not in NP_DTYPES:
        raise TypeError(f"{layer}: the CPU kernels compute in torch.float32 or torch.float64, got {x.dtype}; "
                        "use a CUDA input (block layers' Triton kernels) or backend='dense'")


def refuse_double_backward(layer: str) -> None:
    """Raise when a backward runs with ``create_graph=True``: the kernels' gradients carry no graph, so second-order
    terms through the layer would be missing without a word (a gradient penalty's weight gradient, say)."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"{layer}: second-order gradients (backward with create_graph=True) are not supported by "
                           "the sparse kernels; use backend='dense' for this layer")


def check_conv_input(x: torch.Tensor, geo, layer: str) -> None:
    """A 4-D input whose spatial size leaves at least one output position for ``geo`` (a ConvGeometry)."""
    if x.dim() != 4:
        raise ValueError(f"{layer} expects a 4-D input (batch, channels, height, width), got {x.dim()}-D")
    oh, ow = geo.out_size(x.shape[2], x.shape[3])
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{layer}: input spatial size {tuple(x.shape[2:])} is too small for kernel "
                         f"{geo.kernel}, dilation {geo.dilation} and padding {geo.padding}")


def np_view(t: torch.Tensor):
    """Zero-copy NumPy view of a CPU tensor (detached)."""
    return t.detach().numpy() if t.requires_grad else t.numpy()


NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def np_empty(shape, dtype: torch.dtype) -> np.ndarray:
    """An uninitialised NumPy buffer for a kernel. Buffers that never leave the op stay NumPy arrays: a torch tensor
    plus ``.numpy()`` is several dispatcher calls, and with cold caches (a real network runs other layers between
    two calls of this one) each costs 10-30 us, as much as a whole kernel at 99% sparsity."""
    return np.empty(shape, NP_DTYPES[dtype])


def strided_tensor(buf: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...], offset: int = 0) -> torch.Tensor:
    """A tensor of ``shape`` with element ``strides`` from element ``offset`` of the NumPy buffer ``buf``, sharing its
    memory. It is not an autograd view (an op's output made so may be modified in place) and costs one call."""
    item = buf.itemsize
    return torch.from_numpy(np.ndarray(shape, buf.dtype, buf, offset * item, tuple(s * item for s in strides)))


_ZEROS: dict[tuple[int, torch.dtype], np.ndarray] = {}


def zeros(n: int, dtype: torch.dtype) -> np.ndarray:
    """A shared zero vector of length ``n`` for kernel arguments that are only read: a missing bias, or an empty
    (``n = 0``) "not wanted" array such as ``pad_batch_last``'s channel sums."""
    key = (n, dtype)
    if key not in _ZEROS:
        _ZEROS[key] = torch.zeros(n, dtype=dtype).numpy()
    return _ZEROS[key]


def transposed(t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Contiguous ``t.t()`` of a 2-D tensor: free when ``t`` is already a transposed view; written
    into ``out`` (a reusable workspace) when given."""
    if t.t().is_contiguous():
        return t.t()
    if out is None:
        out = t.new_empty(t.shape[1], t.shape[0])
    if t.numel():
        sync_threads()
        transpose_into(np_view(t), out.numpy())
    return out


def batch_last(t: torch.Tensor) -> torch.Tensor:
    """``t.permute(1, 2, 3, 0)`` of a 4-D (B, C, H, W) tensor, contiguous: free when ``t`` is already a batch-last
    view, else one blocked transpose of (B, C*H*W) (torch's permute copy is 2-3x slower here)."""
    p = t.detach().permute(1, 2, 3, 0)
    if p.is_contiguous() or not t.is_contiguous():
        return p.contiguous()
    return transposed(t.detach().view(t.shape[0], -1)).view(p.shape)


def batch_first(tT: torch.Tensor) -> torch.Tensor:
    """The contiguous (B, C, H, W) copy of a contiguous batch-last (C, H, W, B) tensor (one blocked transpose)."""
    C, H, W, B = tT.shape
    return transposed(tT.view(C * H * W, B)).view(B, C, H, W)


def taken(values: torch.Tensor, perm: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``values.reshape(-1)[perm]`` (detached) with a parallel kernel: the weights in a transposed structure's order."""
    out = values.new_empty(perm.shape[0])
    if out.numel():
        sync_threads()
        take_into(np_view(values.reshape(-1)), perm if isinstance(perm, np.ndarray) else np_view(perm), out.numpy())
    return out


# Up to this many weights, a transposed-structure pass reads them through its index (no gather pass, whose launch
# and allocation dominate at high sparsity); beyond, the random reads into a large value array cost more than one
# gather (measured: linear 3072->768, B=128, 80%: dX 10.8 ms indexed, 7.4 ms gathered plus 0.3 ms to gather).
INDEX_LIMIT = 16384
NO_INDEX = np.empty(0, dtype=np.int64)  # spmm_runs: the structure is in the values' own order


def values_in_order(values: torch.Tensor, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(vals, vidx)`` for ``spmm_runs`` over a structure whose nonzero ``p`` holds ``values[perm[p]]``: the values
    read through ``perm`` when there are few, else gathered into that order once (``vidx`` then empty)."""
    if perm.shape[0] <= INDEX_LIMIT:
        return np_view(values.reshape(-1)), perm
    return taken(values, perm).numpy(), NO_INDEX


def fused_parts(groups: int, threads: int) -> tuple[int, bool]:
    """(parts, by_group) for the fused gradient kernels (``spmm_sddmm_runs``/``_same``): one part per thread, each
    over its own groups (images), when every thread gets one; otherwise (one group, e.g. a linear layer) the input
    rows are the tasks. With one thread a single part runs group by group (each group's gradient stays in cache)."""
    by_group = groups >= threads
    return (threads if by_group else 1), by_group


def unviewed(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or when it is a view, a tensor over the same memory that autograd does not track as a view.

    A custom Function's output that is a view of a buffer made inside ``forward`` may not be modified in place
    (``nn.ReLU(inplace=True)`` right after the layer would fail); the buffer is private to the op, so an
    untracked alias is safe and costs no copy."""
    if t._base is None:
        return t
    return t.new_empty(0).set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())
