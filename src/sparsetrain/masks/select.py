"""Choose the layers an algorithm makes sparse, by module-name glob patterns."""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn


def _is_layer(module: nn.Module) -> bool:
    # packed sparse layers are recognised by their protocol (masks/ sits below nn/ and must not import it)
    return isinstance(module, (nn.Linear, nn.Conv2d)) or (
        hasattr(module, "weight_shape") and callable(getattr(module, "mask", None)))


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) or len(getattr(module, "weight_shape", ())) == 4


def select_layers(model: nn.Module, include: Iterable[str] | str | None = None,
                  exclude: Iterable[str] | str = (), dense_first_last: bool = True) -> list[str]:
    """Names of the Linear/Conv2d (or packed sparse) layers to sparsify, in model order.

    ``include``/``exclude`` are ``fnmatch`` globs on module names (``include=None`` means every layer).
    With ``dense_first_last`` the first convolution and the last linear layer stay dense, as in the
    papers. A pattern in ``include`` that matches no module, or matches a module that cannot be made
    sparse (not Linear/Conv2d), is an error naming it.
    """
    include = [include] if isinstance(include, str) else (None if include is None else list(include))
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    modules = list(model.named_modules())
    layers = [(n, m) for n, m in modules if n and _is_layer(m)]
    if include is not None:
        for pat in include:
            hits = [(n, m) for n, m in modules if n and fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise ValueError(f"include pattern {pat!r} matches no module of the model")
            bad = [n for n, m in hits if not _is_layer(m)]
            if bad and not any(_is_layer(m) for _, m in hits):
                raise TypeError(f"include pattern {pat!r} matches only modules that cannot be made sparse "
                                f"(allowed: nn.Linear, nn.Conv2d, packed sparse layers): {bad[:3]}")
        layers = [(n, m) for n, m in layers if any(fnmatch.fnmatchcase(n, p) for p in include)]
    skip = set()
    if dense_first_last:
        convs = [n for n, m in modules if n and _is_layer(m) and _is_conv(m)]
        linears = [n for n, m in modules if n and _is_layer(m) and not _is_conv(m)]
        skip.update(convs[:1] + linears[-1:])
    names = [n for n, _ in layers if n not in skip and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not names:
        raise ValueError("no layer left to sparsify: check include/exclude patterns and dense_first_last")
    return names
