"""SparseConv2d: a conv layer whose weight is stored in SparseProp's compact format."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..formats import ConvCSR
from ..formats.validate import check_values_dtype
from ..ops import VARIANTS, ConvGeometry, sparse_conv2d
from ..ops.plan import Plan
from .base import PackedSparseModule, check_backend, dense_conv

Padding = int | str | tuple[int, int] | tuple[int, int, int, int]


def explicit_padding(padding: Padding, kernel: tuple[int, int], dilation: tuple[int, int],
                     stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding from an ``nn.Conv2d``-style spec.

    Accepts an int, (h, w), ``'valid'``, ``'same'`` (stride 1; odd totals put the extra row/column at
    the bottom/right, as PyTorch does) or a 4-tuple in ``F.pad`` order (left, right, top, bottom).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' requires stride 1, got stride={stride}")
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, int):
        padding = (padding, padding)
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        out = (padding[0], padding[0], padding[1], padding[1])
    elif len(padding) == 4:
        left, right, top, bottom = padding
        out = (top, bottom, left, right)
    else:
        raise ValueError(f"padding must have 2 or 4 entries, got {padding}")
    if min(out) < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    return out


class SparseConv2d(PackedSparseModule):
    """Drop-in ``nn.Conv2d`` with an unstructured-sparse weight; forward and backward cost O(nnz).

    Any stride, dilation, non-square kernel, groups, bias, ``padding_mode``, and padding given as an
    int, a pair, ``'same'``/``'valid'`` or an asymmetric 4-tuple in ``F.pad`` order.
    ``variant`` picks the kernel layout: ``"batch-last"`` (vectorised over the batch; best on small
    feature maps), ``"over-width"`` (vectorised over output width; best on large maps), either with
    ``"-unpadded"`` appended, or ``None`` (chosen from the input's shape by ``choose_variant``). The
    ``-unpadded`` variants read the input in place instead of a zero-padded copy, for stride-1 convs whose output
    plane has the input's shape (3x3 with padding 1, ``'same'``); other geometries run the padded kernels.
    They win where the copies cost most, on large planes at high sparsity (``sparsify(backend="auto")`` times
    all that apply). With the batch-last layout the output is a permuted (non-contiguous) view.
    """

    _index_names = ("och", "ich", "kh", "kw")

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding: Padding = 0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 mask: torch.Tensor | None = None, backend: str = "sparse-cpu", variant: str | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        sym = padding if not (isinstance(padding, tuple) and len(padding) == 4) else 0
        dense = nn.Conv2d(in_channels, out_channels, kernel_size, stride, sym, dilation, groups, bias,
                          padding_mode, device=device, dtype=dtype)
        if mask is None:
            mask = torch.ones_like(dense.weight, dtype=torch.bool)
        self._init_from(dense, mask, backend, variant, padding)

    def _init_from(self, conv: nn.Conv2d, mask: torch.Tensor, backend: str, variant: str | None,
                   padding: Padding) -> None:
        check_values_dtype(conv.weight, "weight")
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS} or None, got {variant!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
        self.groups, self.padding_mode, self.padding = conv.groups, conv.padding_mode, padding
        self.weight_shape = tuple(conv.weight.shape)
        self.geometry = ConvGeometry(self.stride, explicit_padding(padding, self.kernel_size, self.dilation, self.stride),
                                     self.dilation, self.groups, self.kernel_size)
        self.backend = check_backend(backend)
        self.variant = variant
        self._set_format(ConvCSR.pack(conv.weight, mask))
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None

    @classmethod
    def from_dense(cls, module: nn.Conv2d, mask: torch.Tensor | None = None, backend: str = "sparse-cpu",
                   variant: str | None = None) -> "SparseConv2d":
        """Pack ``module``'s weight where ``mask`` (default ``weight != 0``) is True."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"module must be nn.Conv2d, got {type(module).__name__}")
        self = cls.__new__(cls)
        PackedSparseModule.__init__(self)
        self._init_from(module, (module.weight != 0) if mask is None else mask, backend, variant, module.padding)
        return self

    def to_dense(self) -> nn.Module:
        """A plain ``nn.Conv2d`` (preceded by ``nn.ZeroPad2d`` only for an asymmetric 4-tuple padding)."""
        return dense_conv(self)

    def _channels(self) -> tuple[torch.Tensor, Plan]:
        """Activation channel of every nonzero, and the layer's plan cache (both per mask)."""
        def build():
            oc, ic, _, _ = self._format().coordinates()
            chan = (oc // (self.out_channels // self.groups)) * (self.in_channels // self.groups) + ic
            return chan, Plan()
        return self._derived_state(build)

    def _format(self) -> ConvCSR:
        return ConvCSR(self.och, self.ich, self.kh, self.kw, self.values, self.weight_shape)

    def _unpadded_applies(self) -> bool:
        return self.geometry.keeps_plane and self.padding_mode == "zeros"

    def variants(self) -> tuple[str, ...]:
        """The variants that differ for this layer: the ``-unpadded`` ones only where they apply."""
        return VARIANTS if self._unpadded_applies() else tuple(v for v in VARIANTS if not v.endswith("-unpadded"))

    def choose_variant(self, x: torch.Tensor) -> str:
        """The kernel variant used for input ``x`` when ``variant`` is None (``sparsify(backend="auto")`` times them
        instead): batch-last for output rows narrower than 16, else over-width; unpadded where it applies and a plane
        (in the layout's elements) has 2048 or more, over width only up to 32 nonzeros per output channel. The
        padded copies it saves grow with the activations, its edge work with the nonzeros; the thresholds are where
        they crossed in benchmarks/layers.py (2 threads)."""
        if self.variant is not None:
            return self.variant
        h, w = x.shape[-2], x.shape[-1]
        _, ow = self.geometry.out_size(h, w)
        batch = x.shape[0] if x.dim() == 4 else 1
        layout, v = ("batch-last", batch) if ow < 16 else ("over-width", 1)
        unpadded = self._unpadded_applies() and h * w * v >= 2048 and (
            layout == "batch-last" or self.nnz <= 32 * self.out_channels)
        return layout + "-unpadded" if unpadded else layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        geo = self.geometry
        if self.padding_mode != "zeros":
            pt, pb, pl, pr = geo.padding
            x = F.pad(x, (pl, pr, pt, pb), mode=self.padding_mode)
            geo = ConvGeometry(geo.stride, (0, 0, 0, 0), geo.dilation, geo.groups, geo.kernel)
        if self._use_dense(x):
            pt, pb, pl, pr = geo.padding
            if (pt, pl) == (pb, pr):
                return F.conv2d(x, self.dense_weight(), self.bias, self.stride, (pt, pl), self.dilation, self.groups)
            return F.conv2d(F.pad(x, (pl, pr, pt, pb)), self.dense_weight(), self.bias, self.stride, 0,
                            self.dilation, self.groups)
        chan, cache = self._channels()
        return sparse_conv2d(x, self.values, self.och, self.ich, self.kh, self.kw, self.bias, geo,
                             self.out_channels, self.choose_variant(x), chan, cache)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, density={self.density:.4f}, backend={self.backend}, "
                f"variant={self.variant}")
