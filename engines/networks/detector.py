"""Frame-level deepfake detector: a backbone (timm, or a face-detector trunk: engines.networks.backbones) on an aligned face crop -> P(fake).

``stem="srm"`` puts fixed high-pass filters in front of the backbone: the three SRM
residual kernels of image steganalysis (Fridrich & Kodovsky, 2012), as face-forgery
detectors use them (Zhou et al., 2018; Luo et al., CVPR 2021), applied to each colour
channel and given to the backbone beside the colours.  Blending seams and resampling
leave their traces in the high frequencies, which a network trained from scratch on
little data may otherwise be slow to find.

``blend_map=True`` adds a 1 x 1 convolution on the backbone's last feature map that
predicts, per cell, how much of it is a blend of two images (the boundary map of Face
X-ray, Li et al., CVPR 2020): a training-only head (:meth:`FrameDetector.logits_and_map`)
that gives each self-blend a spatial target besides its label.  The exported model, whose
forward is P(fake) alone, leaves it out.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STEMS = ("rgb", "srm")

# 5 x 5 SRM kernels: second-order ("KV"-like) residual, the 5 x 5 "KV" kernel, and a horizontal second difference
_SRM_KERNELS = (
    [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
    [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
)
_SRM_SCALES = (4.0, 12.0, 2.0)


class HighPassStem(nn.Module):
    """(N, 3, H, W) -> (N, 12, H, W): the colours, then three fixed high-pass residuals of each colour."""

    out_channels = 12

    def __init__(self):
        super().__init__()
        kernels = torch.tensor(_SRM_KERNELS, dtype=torch.float32) / torch.tensor(_SRM_SCALES).view(3, 1, 1)
        # groups=3: output channels 3c..3c+2 filter input colour c; a constant, rebuilt from code, not saved
        self.register_buffer("weight", kernels.repeat(3, 1, 1).unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, F.conv2d(x, self.weight, padding=2, groups=3)], dim=1)


class FrameDetector(nn.Module):
    def __init__(self, backbone: str = "efficientnet_b0", pretrained: bool = False, drop_rate: float = 0.2, stem: str = "rgb",
                 blend_map: bool = False):
        super().__init__()
        from engines.networks.backbones import create

        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r} (expected one of {', '.join(STEMS)})")
        self.stem = HighPassStem() if stem == "srm" else nn.Identity()
        in_chans = HighPassStem.out_channels if stem == "srm" else 3
        self.backbone = create(backbone, pretrained=pretrained, num_classes=1, drop_rate=drop_rate, in_chans=in_chans)
        # timm's num_features (and the trunks'): the channels of forward_features' map
        self.blend_head = nn.Conv2d(self.backbone.num_features, 1, kernel_size=1) if blend_map else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.stem(x)).squeeze(1)

    def logits_and_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The P(fake) logits (N,) and the blend-map logits (N, h, w) on the last feature map's grid."""
        if self.blend_head is None:
            raise RuntimeError("this detector was built without a blend-map head (blend_map=False)")
        features = self.backbone.forward_features(self.stem(x))
        return self.backbone.forward_head(features).squeeze(1), self.blend_head(features).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def build(backbone: str = "efficientnet_b0", pretrained: bool = False, drop_rate: float = 0.2, stem: str = "rgb",
          blend_map: bool = False) -> FrameDetector:
    return FrameDetector(backbone=backbone, pretrained=pretrained, drop_rate=drop_rate, stem=stem, blend_map=blend_map)
