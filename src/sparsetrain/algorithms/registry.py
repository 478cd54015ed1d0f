"""Algorithms by name, for the CLI and configs: ``create("rigl", model, optimizer, density=0.1, ...)``."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import Sparsifier
from .dynamic import SET, RigL
from .gradual import GMP, sparseprop_gmp
from .hrbp import HRBPDynamic, HRBPStatic, RandomChannel
from .lottery import LotteryTicket
from .static import Static

_REGISTRY: dict[str, Callable[..., Sparsifier]] = {}


def register(name: str, factory: Callable[..., Sparsifier]) -> None:
    """Add ``factory(model, optimizer, **options)`` under ``name`` (an existing name is an error)."""
    if name in _REGISTRY:
        raise ValueError(f"algorithm name {name!r} is already registered")
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Registered algorithm names."""
    return sorted(_REGISTRY)


def create(name: str, model: nn.Module, optimizer, **options) -> Sparsifier:
    """Build the algorithm registered as ``name`` (see ``names()``) with ``options``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown algorithm name {name!r}; known names: {', '.join(names())}")
    return _REGISTRY[name](model, optimizer, **options)


def _static(criterion: str) -> Callable[..., Sparsifier]:
    return lambda model, optimizer, **o: Static(model, optimizer, criterion=criterion, **o)


register("static", _static("random"))
register("random", _static("random"))
register("magnitude", _static("magnitude"))  # one-shot magnitude pruning of the given weights
register("snip", _static("snip"))
register("grasp", _static("grasp"))
register("synflow", _static("synflow"))
register("set", SET)
register("rigl", RigL)
register("gmp", GMP)
register("gmp-global", lambda model, optimizer, **o: GMP(model, optimizer, **{"distribution": "global", **o}))
register("sparseprop", sparseprop_gmp)
register("lottery", LotteryTicket)
register("hrbp", HRBPStatic)
register("hrbp-dst", HRBPDynamic)
register("random-channel", RandomChannel)
