"""A small CNN for 28x28 Fashion-MNIST (no batch norm, so results do not depend on how a batch is split)."""
from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """conv(w)-pool-conv(2w)-pool-linear(hidden)-linear(classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        # adaptive pooling to 7x7 keeps the head valid for any input size >= 4
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.fc1 = nn.Linear(2 * width * 49, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.pool(self.features(x)).flatten(1))))
