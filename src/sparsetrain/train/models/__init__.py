"""Model registry: ``build_model(name, num_classes, in_channels, **kw)``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .cifar_resnet import CifarResNet
from .external import ALIASES, PREFIXES, build_external
from .imagenet_resnet import resnet18, resnet50
from .mobilenetv2 import CifarMobileNetV2
from .small import SmallCNN
from .vgg import CifarVGG

# name -> builder(num_classes, in_channels, width=default); "width" sets the base channel count (tiny tests)
_BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "resnet20": lambda nc, ic, width=16: CifarResNet(20, nc, ic, int(width)),
    "resnet32": lambda nc, ic, width=16: CifarResNet(32, nc, ic, int(width)),
    "resnet56": lambda nc, ic, width=16: CifarResNet(56, nc, ic, int(width)),
    "wrn-32-2": lambda nc, ic, width=32: CifarResNet(32, nc, ic, int(width)),
    "wrn-56-2": lambda nc, ic, width=32: CifarResNet(56, nc, ic, int(width)),
    "vgg19": lambda nc, ic, width=64: CifarVGG(num_classes=nc, in_channels=ic, width=int(width)),
    "mobilenetv2": lambda nc, ic, width=1.0: CifarMobileNetV2(nc, ic, width),
    "fmnist-cnn": lambda nc, ic, width=32: SmallCNN(nc, ic, int(width)),
    "resnet18": lambda nc, ic, width=64: resnet18(num_classes=nc, in_channels=ic, width=int(width)),
    "resnet50": lambda nc, ic, width=64: resnet50(num_classes=nc, in_channels=ic, width=int(width)),
}
MODELS = tuple(_BUILTIN) + tuple(ALIASES)


def is_known_model(name: str) -> bool:
    """True for a built-in name, an alias, or a ``torchvision:``/``timm:``/``hf:`` name."""
    return name in _BUILTIN or name in ALIASES or name.partition(":")[0] in PREFIXES and ":" in name


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, **kw) -> nn.Module:
    """Build a model by name with random weights; ``width`` (built-ins) scales the channel counts."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if name in _BUILTIN:
        if kw.get("width") is None:
            kw.pop("width", None)
        return _BUILTIN[name](num_classes, in_channels, **kw)
    if is_known_model(name):
        kw = {k: v for k, v in kw.items() if not (k == "width" and v is None)}
        return build_external(name, num_classes, in_channels, **kw)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, "
                     f"or torchvision:NAME / timm:NAME / hf:bert-base")


__all__ = ["build_model", "MODELS", "is_known_model"]
