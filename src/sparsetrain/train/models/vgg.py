"""VGG-19 with batch normalisation, CIFAR variant (one linear classifier on the 512-channel 1x1 map)."""
from __future__ import annotations

from torch import nn

VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class CifarVGG(nn.Module):
    """VGG with conv-BN-ReLU layers; channel counts scale with ``width / 64``."""

    def __init__(self, cfg=VGG19, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                cout = max(1, v * width // 64)
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        # adaptive pooling makes the classifier independent of the input size (1x1 at 32x32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))
