"""Sharpness contrast: how much smoother (or sharper) a face is than its surroundings, against real faces.

A camera renders a face and what is around it (hair, ears, collar, background) through one
lens, one sensor and one codec, so the two share a level of fine detail that varies with the
capture but keeps a characteristic relation.  A face swapper renders the inner face at its
own resolution (64-256 px for the swappers live apps use) and pastes it into the frame; a
lip-sync model re-renders the mouth region; the pasted region comes out smoother than the
frame around it.  This model measures that relation and nothing else:

    r = log( mean |gradient| inside the inner face / mean |gradient| in a ring around the face )

on a wide aligned crop (the face and its surroundings), with the inner face and the ring
fixed by the alignment template.  ``r`` is standardised by the mean and spread it has on real
faces (``reference_mean``, ``reference_std``, measured by ``dfstream train sharpness`` on real
media alone: no fake is ever needed), and the score is the deviation towards a smoother face
(``sided="smoother"``) or in either direction (``sided="both"``).  P(fake) = sigmoid of that
score; ``dfstream calibrate`` gives it a calibrated scale and a threshold.

On real faces ``r`` falls as the detail around the face rises (a busy background, sharp hair)
and as compression and down-scaling take more from skin than from edges, so a *conditional*
reference (``reference_slope`` != 0) compares r with what real faces show at the same detail
around them, d = log(mean gradient in the ring):  z = (r - mean - slope * (d - reference_detail)) / std.

It cannot see a frame generated whole (face and surroundings alike), and a real photo with a
blurred background looks like a sharper-than-usual face; see the model card for what it
catches and misses.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INNER_SCALE = 0.8  # the inner face: the 5-point face polygon shrunk to stay on skin
RING = (1.15, 1.6)  # the surroundings: between the face polygon grown by these factors
SIDES = ("smoother", "both")
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def region_masks(size: tuple[int, int], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The inner-face and ring masks (H x W float32, 0/1) of an aligned crop, from the alignment template."""
    import cv2

    from engines.alignment import face_polygon, template_points

    landmarks = template_points(size, margin)

    def filled(scale: float) -> np.ndarray:
        mask = np.zeros(size, np.uint8)
        cv2.fillConvexPoly(mask, np.round(face_polygon(landmarks, scale=scale)).astype(np.int32), 1)
        return mask

    inner = filled(INNER_SCALE)
    ring = (filled(RING[1]) > 0) & (filled(RING[0]) == 0)
    if inner.sum() < 16 or ring.sum() < 16:
        raise ValueError(f"a {size[1]}x{size[0]} crop at margin {margin} leaves no room for the face's surroundings")
    return inner.astype(np.float32), ring.astype(np.float32)


class SharpnessContrast(nn.Module):
    """Wide aligned crop (normalised as the metadata says) -> P(fake) from the sharpness contrast."""

    def __init__(self, input_size: tuple[int, int] = (224, 224), margin: float = 2.0, mean: tuple = (0.5, 0.5, 0.5),
                 std: tuple = (0.5, 0.5, 0.5), color_order: str = "RGB", reference_mean: float = 0.0,
                 reference_std: float = 1.0, sided: str = "smoother", reference_slope: float = 0.0,
                 reference_detail: float = 0.0):
        super().__init__()
        if sided not in SIDES:
            raise ValueError(f"sided must be one of {', '.join(SIDES)}, not {sided!r}")
        if not reference_std > 0:
            raise ValueError(f"reference_std must be positive, not {reference_std}")
        self.sided = sided
        self.reference_mean, self.reference_std = float(reference_mean), float(reference_std)
        self.reference_slope, self.reference_detail = float(reference_slope), float(reference_detail)
        inner, ring = region_masks(tuple(input_size), float(margin))
        self.register_buffer("inner", torch.from_numpy(inner)[None, None] / float(inner.sum()), persistent=False)
        self.register_buffer("ring", torch.from_numpy(ring)[None, None] / float(ring.sum()), persistent=False)
        # grey on 0..255 from the normalised input: undo mean/std, weigh the channels (ITU-R BT.601)
        weights = (0.299, 0.587, 0.114) if color_order == "RGB" else (0.114, 0.587, 0.299)
        scale = torch.tensor([255.0 * w * s for w, s in zip(weights, std)]).view(1, 3, 1, 1)
        self.register_buffer("grey_scale", scale, persistent=False)
        self.grey_shift = float(sum(255.0 * w * m for w, m in zip(weights, mean)))
        sobel = torch.tensor(_SOBEL_X)
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()])[:, None], persistent=False)

    def contrast_and_detail(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, d), each (N,): r = log(mean gradient inside the face / mean gradient around it),
        d = log(mean gradient around it)."""
        grey = (x * self.grey_scale).sum(dim=1, keepdim=True) + self.grey_shift
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.sobel)
        magnitude = torch.sqrt((g * g).sum(dim=1, keepdim=True) + 1e-6)
        inside = (magnitude * self.inner).sum(dim=(1, 2, 3)) + 1e-3
        around = torch.log((magnitude * self.ring).sum(dim=(1, 2, 3)) + 1e-3)
        return torch.log(inside) - around, around

    def contrast(self, x: torch.Tensor) -> torch.Tensor:
        return self.contrast_and_detail(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, d = self.contrast_and_detail(x)
        expected = self.reference_mean + self.reference_slope * (d - self.reference_detail)
        z = (r - expected) / self.reference_std
        score = -z if self.sided == "smoother" else torch.abs(z)
        return torch.sigmoid(score)


def build(**kwargs) -> SharpnessContrast:
    return SharpnessContrast(**kwargs)
