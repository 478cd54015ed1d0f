"""Models from optional packages (torchvision, timm, Hugging Face transformers), built with random
weights from a local config: nothing is downloaded. A missing package is a clear error."""
from __future__ import annotations

import importlib

from torch import nn

PREFIXES = ("torchvision", "timm", "hf")
ALIASES = {"deit-tiny": "timm:deit_tiny_patch16_224", "deit_tiny": "timm:deit_tiny_patch16_224",
           "bert-base": "hf:bert-base"}
_INSTALL = {"torchvision": "torchvision (a build matching your torch)", "timm": "timm",
            "hf": "transformers"}


def _require(package: str, model: str):
    try:
        return importlib.import_module(package)
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError)
        raise ImportError(f"model {model!r} needs the package {package!r}, which cannot be imported here "
                          f"({type(e).__name__}: {e}); install {package} or pick a built-in model") from e


class SequenceClassifier(nn.Module):
    """Wraps a transformers model so ``forward(input_ids)`` returns the logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


def build_external(name: str, num_classes: int, in_channels: int, **kw) -> nn.Module:
    """Build ``torchvision:NAME``, ``timm:NAME`` or ``hf:bert-base`` with random weights."""
    name = ALIASES.get(name, name)
    prefix, _, arch = name.partition(":")
    if prefix == "torchvision":
        models = _require("torchvision.models", name)
        if in_channels != 3:
            raise ValueError(f"model {name!r} takes 3 input channels; the dataset has {in_channels}")
        return models.get_model(arch, weights=None, num_classes=num_classes, **kw)
    if prefix == "timm":
        timm = _require("timm", name)
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw)
    if prefix == "hf":
        transformers = _require("transformers", name)
        if arch != "bert-base":
            raise ValueError(f"hf models: only 'hf:bert-base' is built from a config here, got {name!r}")
        # BERT-base shape by default; keyword arguments (e.g. num_hidden_layers=2) shrink it for tests
        config = transformers.BertConfig(num_labels=num_classes, **kw)
        return SequenceClassifier(transformers.BertForSequenceClassification(config))
    raise ValueError(f"unknown model prefix {prefix!r} in {name!r}; use one of {PREFIXES}")
