"""Detectors that look at a face differently, fused into one: P(fake) = sigmoid(mean of their z).

An ensemble (:mod:`engines.networks.ensemble`) averages models that see the same crop.  A fusion
joins models that see the face each its own way -- the sharpness contrast reads a wide crop
(margin 2.0, 224 px), a CNN a tighter one (margin 1.4, 128 px) -- and whose scores live on
different scales.  The fused model is given the widest member's crop; every aligned crop is a
zoom about the same centre (:func:`engines.alignment.template_points`), so a member with a
smaller margin gets the central ``its margin / widest margin`` of it, resized to its input size.
Each member's logit is standardised by its mean and spread on real faces (z: how unusual this
face is for a real one, by that member's measure), and the fused logit is the mean of the z's:
no member outweighs another by the scale of its scores.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPSILON = 1e-6  # P(fake) is clamped this far from 0 and 1 before its logit is taken


class DetectorFusion(nn.Module):
    """``members``: P(fake) detectors; ``views``: for each, how it sees the fused input
    (``fraction`` of the crop's side, ``input_size``, ``mean``, ``std``, ``color_order``);
    ``input``: the fused input's ``mean``, ``std``, ``color_order``; ``z_mean`` / ``z_std``:
    each member's logit mean and spread on real faces."""

    def __init__(self, members: list[nn.Module], views: list[dict], input: dict, z_mean: list[float],
                 z_std: list[float]):
        super().__init__()
        if not (len(members) == len(views) == len(z_mean) == len(z_std)) or len(members) < 2:
            raise ValueError("a fusion needs two or more members, each with its view and its real faces' logit mean and spread")
        if min(z_std) <= 0:
            raise ValueError(f"the members' logit spreads on real faces must be positive, not {z_std}")
        self.members = nn.ModuleList(members)
        self.views = [dict(v) for v in views]
        in_mean = torch.tensor(input["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        in_std = torch.tensor(input["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("in_mean", in_mean, persistent=False)
        self.register_buffer("in_std", in_std, persistent=False)
        self.in_order = input["color_order"]
        for i, view in enumerate(self.views):
            self.register_buffer(f"mean_{i}", torch.tensor(view["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"std_{i}", torch.tensor(view["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("z_mean", torch.tensor(z_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("z_std", torch.tensor(z_std, dtype=torch.float32), persistent=False)

    def view(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Member ``i``'s input, cut and normalised from the fused input ``x``."""
        view = self.views[i]
        pixels = x * self.in_std + self.in_mean  # 0..1
        if view["color_order"] != self.in_order:
            pixels = torch.flip(pixels, dims=[1])
        side_h, side_w = x.shape[2], x.shape[3]
        fraction = float(view["fraction"])
        if fraction < 1.0:
            cut_h, cut_w = round(side_h * fraction), round(side_w * fraction)
            top, left = (side_h - cut_h) // 2, (side_w - cut_w) // 2
            pixels = pixels[:, :, top:top + cut_h, left:left + cut_w]
        height, width = view["input_size"]
        if (pixels.shape[2], pixels.shape[3]) != (height, width):
            pixels = F.interpolate(pixels, size=(int(height), int(width)), mode="bilinear", align_corners=False)
        return (pixels - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")

    def z(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's standardised logit, (N, members)."""
        out = []
        for i, member in enumerate(self.members):
            p = member(self.view(x, i)).reshape(-1).clamp(EPSILON, 1.0 - EPSILON)
            out.append((torch.log(p) - torch.log1p(-p) - self.z_mean[i]) / self.z_std[i])
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.z(x).mean(dim=1))


def build(members: list[dict], views: list[dict], input: dict, z_mean: list[float], z_std: list[float],
          build_member) -> DetectorFusion:
    """The fusion of the ``members`` (their architectures), each built by ``build_member``
    (:func:`engines.networks.build_model`, passed in: it is what imports this module)."""
    return DetectorFusion([build_member(architecture) for architecture in members], views, input, z_mean, z_std)
