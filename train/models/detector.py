"""Frame-level deepfake detector: a timm backbone on an aligned face crop -> P(fake)."""
from __future__ import annotations

import torch
from torch import nn


class FrameDetector(nn.Module):
    def __init__(self, backbone: str = "efficientnet_b0", pretrained: bool = False, drop_rate: float = 0.2):
        super().__init__()
        import timm

        self.backbone = timm.create_model(backbone, pretrained=pretrained, num_classes=1, drop_rate=drop_rate)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def build(backbone: str = "efficientnet_b0", pretrained: bool = False, drop_rate: float = 0.2) -> FrameDetector:
    return FrameDetector(backbone=backbone, pretrained=pretrained, drop_rate=drop_rate)
