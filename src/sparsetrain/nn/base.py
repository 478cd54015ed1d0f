"""Behaviour shared by the packed sparse layers: backends, state_dict resizing, the mask protocol."""
from __future__ import annotations

import warnings

import torch
from torch import nn

BACKENDS = ("sparse-cpu", "dense")


def check_backend(backend: str, allowed: tuple[str, ...] = BACKENDS) -> str:
    if backend not in allowed:
        raise ValueError(f"backend must be one of {allowed}, got {backend!r}")
    return backend


class PackedSparseModule(nn.Module):
    """Base of SparseLinear/SparseConv2d: ``values`` is the only weight parameter (nnz-sized); the
    index tensors are buffers. Subclasses define ``_format()`` and ``_index_names``."""

    _index_names: tuple[str, ...] = ()
    backend: str
    # class-level defaults: a missing instance attribute would go through nn.Module.__getattr__ and raise on every
    # forward, which costs microseconds per call (tens with cold caches)
    _dense_grad_request = False
    _dense_grad_armed = False
    _warned_device = False
    _derived = None

    def _format(self):
        raise NotImplementedError

    def _set_format(self, fmt) -> None:
        """Install a packed format: values become the parameter, indices the buffers."""
        self.values = nn.Parameter(fmt.values.detach().clone())
        for name in self._index_names:
            self.register_buffer(name, getattr(fmt, name).clone())
        self._derived = None

    def _derived_state(self, build):
        """Data derived from the indices (offsets, transposed structure, a ``Plan`` cache), built by
        ``build()`` once per mask and device; dropped by a repack or a state_dict load."""
        d = self._derived
        index = self._buffers[self._index_names[0]]  # .to(device) replaces it: its identity marks the state
        if d is None or d[0] is not index:
            d = self._derived = (index, build())
        return d[1]

    # --- the layer protocol used by algorithms (DESIGN decision 3) -------------------------------
    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @property
    def density(self) -> float:
        """Fraction of weight positions kept."""
        total = 1
        for s in self.weight_shape:
            total *= s
        return self.nnz / total if total else 0.0

    def mask(self) -> torch.Tensor:
        """Bool mask of the kept weight positions."""
        return self._format().mask()

    def dense_weight(self) -> torch.Tensor:
        """Dense weight tensor (zeros where pruned); differentiable with respect to ``values``."""
        w = self._format().to_dense(self.values)
        if self._dense_grad_armed and w.requires_grad:
            # this forward serves a dense-gradient request: keep dL/dW from the coming backward
            self._dense_grad_armed = self._dense_grad_request = False
            w.register_hook(self._keep_dense_grad)
        return w

    def request_dense_grad(self) -> None:
        """Run the next grad-enabled forward on the dense reference and keep the dense dL/dW of its
        backward (RigL's grow criterion: one dense GEMM when asked, the sparse kernels otherwise)."""
        self._dense_grad_request = True

    def take_dense_grad(self) -> torch.Tensor | None:
        """The dense weight gradient kept since ``request_dense_grad()`` (then forgotten), or None."""
        g = getattr(self, "_dense_grad", None)
        self._dense_grad = None
        return g

    def _keep_dense_grad(self, grad: torch.Tensor) -> None:
        self._dense_grad = grad.detach().clone()

    def scatter_values(self, v: torch.Tensor) -> torch.Tensor:
        """Dense tensor shaped like the weight holding ``v`` (laid out like ``values``) at kept positions.

        Used to carry per-value optimizer state across a repack; override if ``_format()`` cannot."""
        return self._format().to_dense(v.detach())

    def gather_values(self, dense: torch.Tensor) -> torch.Tensor:
        """Inverse of ``scatter_values`` for the current mask: ``dense`` at kept positions, ``values`` layout."""
        return type(self._format()).pack(dense.detach().to(self.values.dtype), self.mask()).values

    def set_mask(self, mask: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Repack with a new ``mask``, keeping the current values (or ``weight``) at kept positions."""
        w = self.dense_weight().detach() if weight is None else weight.detach()
        fmt = type(self._format()).pack(w.to(self.values.dtype), mask)
        with torch.no_grad():
            self._set_format(fmt)

    def _use_dense(self, x: torch.Tensor) -> bool:
        if self._dense_grad_request and torch.is_grad_enabled():
            self._dense_grad_armed = True  # dense_weight() in this forward hooks the dense gradient
            return True
        if self.backend == "dense":
            return True
        if not x.is_cpu:
            if not self._warned_device:
                warnings.warn(f"{type(self).__name__}: sparse-cpu kernels need CPU tensors; input on {x.device} "
                              "runs the masked dense reference instead", stacklevel=3)
                self._warned_device = True
            return True
        return False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint may hold another mask: adopt its nnz and index shapes before copying
        for name in ("values",) + self._index_names:
            key = prefix + name
            if key in state_dict:
                cur = getattr(self, name)
                new = state_dict[key]
                if cur.shape != new.shape:
                    blank = torch.empty(new.shape, dtype=cur.dtype, device=cur.device)
                    if name == "values":
                        self.values = nn.Parameter(blank, requires_grad=cur.requires_grad)
                    else:
                        setattr(self, name, blank)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._derived = None  # buffers may hold another mask now, even at the same shapes


def dense_linear(m: PackedSparseModule) -> nn.Linear:
    """A plain ``nn.Linear`` holding ``m``'s zero-filled weight and bias (``to_dense`` of linear layers)."""
    lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device=m.values.device,
                    dtype=m.values.dtype)
    with torch.no_grad():
        lin.weight.copy_(m.dense_weight())
        if m.bias is not None:
            lin.bias.copy_(m.bias)
    return lin


def dense_conv(m: PackedSparseModule) -> nn.Module:
    """A plain ``nn.Conv2d`` holding ``m``'s zero-filled weight (after ``nn.ZeroPad2d`` for a 4-tuple padding)."""
    asym = isinstance(m.padding, tuple) and len(m.padding) == 4
    conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, 0 if asym else m.padding, m.dilation,
                     m.groups, m.bias is not None, m.padding_mode, device=m.values.device, dtype=m.values.dtype)
    with torch.no_grad():
        conv.weight.copy_(m.dense_weight())
        if m.bias is not None:
            conv.bias.copy_(m.bias)
    return nn.Sequential(nn.ZeroPad2d(m.padding), conv) if asym else conv
