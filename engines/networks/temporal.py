"""Temporal detector: per-frame CNN features -> LSTM -> P(fake) for a track's crop sequence."""
from __future__ import annotations

import torch
from torch import nn


class TemporalDetector(nn.Module):
    """Input (N, T, 3, H, W) preprocessed crops of one face track; output P(fake) per sequence (N,).

    The CNN is a backbone (timm, or a face-detector trunk) without its classifier (usually initialised from a
    trained frame detector and kept frozen); an LSTM reads the per-frame features
    and its last hidden state is classified.
    """

    def __init__(self, backbone: str = "mobilenetv3_small_100", hidden: int = 64, layers: int = 1,
                 freeze_backbone: bool = True, drop_rate: float = 0.1):
        super().__init__()
        from engines.networks.backbones import create

        self.backbone = create(backbone, pretrained=False, num_classes=0)
        self.freeze_backbone = freeze_backbone
        self.backbone.eval()
        with torch.no_grad():  # what the backbone really outputs (after any conv head), not num_features
            features = int(self.backbone(torch.zeros(1, 3, 64, 64)).shape[-1])
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(hidden, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        flat = x.reshape(n * t, *x.shape[2:])
        if self.freeze_backbone:
            self.backbone.eval()
            with torch.no_grad():
                f = self.backbone(flat)
        else:
            f = self.backbone(flat)
        return f.reshape(n, t, -1)

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(f)
        return self.head(out[:, -1]).squeeze(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def build(backbone: str = "mobilenetv3_small_100", hidden: int = 64, layers: int = 1, freeze_backbone: bool = True,
          drop_rate: float = 0.1) -> TemporalDetector:
    return TemporalDetector(backbone=backbone, hidden=hidden, layers=layers, freeze_backbone=freeze_backbone, drop_rate=drop_rate)
