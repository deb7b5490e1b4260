"""The hi-wells network: a tiny CNN that reads one well crop (torch; training only).

Four 3x3 conv blocks (BN + ReLU, max-pool between; widths w, 2w, 4w, 6w with w = 8), global
average pooling, one linear layer and a softmax. Exported graphs hold only Conv (BN folded),
Relu, MaxPool, GlobalAveragePool, Flatten, Gemm and Softmax, all standard for ONNX Runtime and
TensorRT. About 20 k parameters and ~1 MMAC per 32 px crop: a plate's 96 crops cost a small
fraction of one YOLO frame, and a network trains in minutes on one shared CPU core.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class WellNet(nn.Module):
    def __init__(self, n_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(3, w),
            nn.MaxPool2d(2),
            *_block(w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
            nn.MaxPool2d(2),
            *_block(4 * w, 6 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(6 * w, n_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The exported graph ends in the probabilities the edge thresholds.
        return torch.softmax(self.logits(x), dim=1)
