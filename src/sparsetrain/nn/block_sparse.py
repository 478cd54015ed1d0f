"""HRBP block-sparse layers: the weight is ``t`` equal-shape dense blocks (``formats.BlockLayout``), and
forward, input gradient and weight gradient are batched dense GEMMs over those blocks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..formats import BlockLayout
from ..ops import ConvGeometry
from ..ops.block_conv import BLOCK_VARIANTS, PLANE_VARIANTS, STRIDE1_VARIANTS, block_conv2d, channel_items
from ..ops.plan import Plan
from .base import PackedSparseModule, check_backend, dense_conv, dense_linear
from .sparse_conv import Padding, explicit_padding

BLOCK_BACKENDS = ("block-cpu", "block-gpu", "dense")
BLOCK_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check_dtype(weight: torch.Tensor) -> None:
    # CPU kernels: float32/float64; Triton kernels: float32/bfloat16/float16 (checked again per call)
    if weight.dtype not in BLOCK_DTYPES:
        raise TypeError(f"weight dtype {weight.dtype} is not supported by the block layers (allowed: {BLOCK_DTYPES})")


def _layout_for(weight: torch.Tensor, layout: "BlockLayout | torch.Tensor | None") -> BlockLayout:
    if layout is None:
        layout = weight != 0
    if isinstance(layout, torch.Tensor):
        if layout.dtype != torch.bool:
            raise TypeError(f"layout mask must have dtype torch.bool, got {layout.dtype}")
        layout = BlockLayout.from_mask(layout)
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a BlockLayout or a block-structured bool mask, got {type(layout).__name__}")
    if tuple(layout.weight_shape) != tuple(weight.shape):
        raise ValueError(f"layout weight_shape {tuple(layout.weight_shape)} does not match weight shape "
                         f"{tuple(weight.shape)}")
    layout.validate()
    return layout


class _BlockModule(PackedSparseModule):
    """Shared parts: values (t, R, c*p) are the parameter; rows/channels/cells are buffers."""

    _index_names = ("rows", "channels", "cells")

    def _install(self, layout: BlockLayout, weight: torch.Tensor) -> None:
        self.weight_shape = tuple(weight.shape)
        self._set_format(layout.to(weight.device).with_values(weight))

    def _format(self) -> BlockLayout:
        return BlockLayout(self.weight_shape, self.rows, self.channels, self.cells, self.values)

    @property
    def layout(self) -> BlockLayout:
        """The block layout (indices only)."""
        return BlockLayout(self.weight_shape, self.rows, self.channels, self.cells)

    def mask(self) -> torch.Tensor:
        return self._format().mask

    def gather_values(self, dense: torch.Tensor) -> torch.Tensor:
        return self._format().gather(dense.detach().to(self.values.dtype))

    def set_mask(self, mask: "torch.Tensor | BlockLayout", weight: torch.Tensor | None = None) -> None:
        """Repack with a new layout (or block-structured bool mask), keeping current values (or ``weight``)."""
        w = self.dense_weight().detach() if weight is None else weight.detach()
        layout = _layout_for(w, mask)
        with torch.no_grad():
            self._set_format(layout.to(w.device).with_values(w.to(self.values.dtype)))

    def _dense_path(self, x: torch.Tensor) -> bool:
        """Run the masked dense reference: backend 'dense', a pending dense-gradient request (the base class
        arms its hook), or a device with no block kernels (CPU -> numba, CUDA -> Triton)."""
        if getattr(self, "_dense_grad_request", False) and torch.is_grad_enabled():
            return PackedSparseModule._use_dense(self, x)
        if self.backend == "dense":
            return True
        if x.device.type not in ("cpu", "cuda"):
            return PackedSparseModule._use_dense(self, x)  # warns once
        return False


class BlockSparseConv2d(_BlockModule):
    """Drop-in ``nn.Conv2d`` (groups=1) whose weight is HRBP blocks; all three passes are block GEMMs.

    ``backend``: ``"block-cpu"``/``"block-gpu"`` run the block kernels of the input's device (CPU: numba
    gather/scatter + ``torch.bmm``; CUDA: Triton implicit GEMM); ``"dense"`` is the masked dense reference.
    Stride, padding (int, pair, 'same', 'valid', F.pad-order 4-tuple), dilation, bias and any ``padding_mode``
    are supported.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, layout: BlockLayout, stride=1,
                 padding: Padding = 0, dilation=1, bias: bool = True, padding_mode: str = "zeros",
                 backend: str = "block-cpu", variant: str | None = None, device=None, dtype=None) -> None:
        super().__init__()
        sym = padding if not (isinstance(padding, tuple) and len(padding) == 4) else 0
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, sym, dilation, 1, bias, padding_mode,
                         device=device, dtype=dtype)
        self._init_from(conv, layout, backend, padding, variant)

    def _init_from(self, conv: nn.Conv2d, layout, backend: str, padding: Padding, variant: str | None) -> None:
        if variant is not None and variant not in BLOCK_VARIANTS:
            raise ValueError(f"variant must be one of {BLOCK_VARIANTS} or None, got {variant!r}")
        self.variant = variant
        _check_dtype(conv.weight)
        if conv.groups != 1:
            raise ValueError(f"BlockSparseConv2d needs groups=1 (got groups={conv.groups}); grouped and depthwise "
                             "convs stay SparseConv2d or dense")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
        self.padding_mode, self.padding, self.groups = conv.padding_mode, padding, 1
        pads = explicit_padding(padding, self.kernel_size, self.dilation, self.stride)
        self.geometry = ConvGeometry(self.stride, pads, self.dilation, 1, self.kernel_size)
        if variant in STRIDE1_VARIANTS and self.stride != (1, 1):
            raise ValueError(f"variant {variant!r} needs stride 1, got stride={self.stride}; use 'over-width', "
                             "'batch-last' or None")
        if variant in PLANE_VARIANTS and not self.kernel_geometry.keeps_plane:
            raise ValueError(f"variant {variant!r} needs an output plane of the input's shape (padding='same' with "
                             f"zeros), got padding={padding!r}, padding_mode={conv.padding_mode!r}; use 'tiled', "
                             "'runs' or None")
        self.backend = check_backend(backend, BLOCK_BACKENDS)
        self._install(_layout_for(conv.weight, layout), conv.weight)
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None

    @classmethod
    def from_dense(cls, module: nn.Conv2d, layout: "BlockLayout | torch.Tensor | None" = None,
                   backend: str = "block-cpu", variant: str | None = None) -> "BlockSparseConv2d":
        """Keep ``module``'s weight inside ``layout`` (a BlockLayout, e.g. from ``masks.hrbp``, or a block-structured
        bool mask; default ``weight != 0``, which must already be block-structured)."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"module must be nn.Conv2d, got {type(module).__name__}")
        self = cls.__new__(cls)
        PackedSparseModule.__init__(self)
        self._init_from(module, layout, backend, module.padding, variant)
        return self

    def to_dense(self) -> nn.Module:
        """A plain ``nn.Conv2d`` holding the zero-filled weight (after ``nn.ZeroPad2d`` for a 4-tuple padding)."""
        return dense_conv(self)

    def _channel_items(self) -> tuple[torch.Tensor, torch.Tensor, Plan]:
        """(ptr, items) of the col2im kernels and the runs variant's offset cache, rebuilt when the layout changes."""
        def build():
            return (*channel_items(self.channels.cpu(), self.cells.shape[1], self.in_channels), Plan())
        return self._derived_state(build)

    @property
    def kernel_geometry(self) -> ConvGeometry:
        """The geometry the kernels run: ``geometry``, or without its padding when ``padding_mode`` pads first."""
        geo = self.geometry
        return geo if self.padding_mode == "zeros" else ConvGeometry(geo.stride, (0, 0, 0, 0), geo.dilation, 1,
                                                                      geo.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # unbatched (C, H, W), as nn.Conv2d accepts
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"BlockSparseConv2d expects input of shape (N, {self.in_channels}, H, W) or "
                             f"({self.in_channels}, H, W), got {tuple(x.shape)}")
        geo = self.kernel_geometry
        if self.padding_mode != "zeros":
            pt, pb, pl, pr = self.geometry.padding
            x = F.pad(x, (pl, pr, pt, pb), mode=self.padding_mode)
        if self._dense_path(x):
            pt, pb, pl, pr = geo.padding
            return F.conv2d(F.pad(x, (pl, pr, pt, pb)), self.dense_weight(), self.bias, self.stride, 0, self.dilation)
        if x.is_cuda:
            from ..ops.block_conv_gpu import block_conv2d_gpu
            return block_conv2d_gpu(x, self.values, self.bias, self.rows, self.channels, self.cells, geo,
                                    self.out_channels)
        ptr, items, plan = self._channel_items()
        return block_conv2d(x, self.values, self.bias, self.rows, self.channels, self.cells, ptr, items, geo,
                            self.out_channels, self.variant, plan)

    def extra_repr(self) -> str:
        t, (r, k) = self.layout.groups, self.layout.block_shape
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
                f"blocks={t}x({r}x{k}), density={self.density:.4f}, backend={self.backend}, variant={self.variant}")


class BlockSparseLinear(_BlockModule):
    """Drop-in ``nn.Linear`` whose weight is HRBP blocks (1x1 kernels, HRBP Appendix C): y[..., rows[g]] =
    x[..., channels[g]] @ values[g]^T, one batched GEMM; autograd of the gather/bmm/scatter gives the backward
    on the same blocks. Any leading dimensions."""

    def __init__(self, in_features: int, out_features: int, layout: BlockLayout, bias: bool = True,
                 backend: str = "block-cpu", device=None, dtype=None) -> None:
        super().__init__()
        self._init_from(nn.Linear(in_features, out_features, bias, device=device, dtype=dtype), layout, backend)

    def _init_from(self, lin: nn.Linear, layout, backend: str) -> None:
        _check_dtype(lin.weight)
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.backend = check_backend(backend, BLOCK_BACKENDS)
        self._install(_layout_for(lin.weight, layout), lin.weight)
        self.bias = nn.Parameter(lin.bias.detach().clone()) if lin.bias is not None else None

    @classmethod
    def from_dense(cls, module: nn.Linear, layout: "BlockLayout | torch.Tensor | None" = None,
                   backend: str = "block-cpu") -> "BlockSparseLinear":
        """Keep ``module``'s weight inside ``layout`` (see ``BlockSparseConv2d.from_dense``)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"module must be nn.Linear, got {type(module).__name__}")
        self = cls.__new__(cls)
        PackedSparseModule.__init__(self)
        self._init_from(module, layout, backend)
        return self

    def to_dense(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the zero-filled weight."""
        return dense_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input's last dimension must be in_features={self.in_features}, got {x.shape[-1]}")
        if self._dense_path(x):
            return F.linear(x, self.dense_weight(), self.bias)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        t, r, _ = self.values.shape
        xg = x2[:, self.channels.flatten()].view(-1, t, self.channels.shape[1]).transpose(0, 1)  # (t, N, c)
        yg = torch.bmm(xg, self.values.transpose(1, 2))  # (t, N, R)
        n = x2.shape[0]
        y = x2.new_zeros(n, self.out_features) if self.bias is None else self.bias.expand(n, -1).clone()
        y = y.index_add(1, self.rows.flatten(), yg.transpose(0, 1).reshape(x2.shape[0], t * r))
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        t, (r, k) = self.layout.groups, self.layout.block_shape
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"blocks={t}x({r}x{k}), density={self.density:.4f}, backend={self.backend}")
