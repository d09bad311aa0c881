"""Image quality of reconstructions: PSNR and SSIM (scikit-image), and a differentiable SSIM for training.

The evaluation figures use ``skimage.metrics`` on uint8 images (data range 255, SSIM
over the colour channels), the same definitions the original face-swap project's
30.5 dB / 0.85 were reported with.  :func:`ssim_torch` is the structural term of the
swapper's training loss, not used for reporting.
"""
from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (or batches) of the same shape; ``inf`` when identical."""
    from skimage.metrics import peak_signal_noise_ratio

    reference, test = _check(reference, test)
    if np.array_equal(reference, test):
        return math.inf
    return float(peak_signal_noise_ratio(reference, test, data_range=255))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM of two uint8 H x W x 3 images (Gaussian-free 7x7 window, as skimage's default)."""
    from skimage.metrics import structural_similarity

    reference, test = _check(reference, test)
    if reference.ndim == 4:
        return float(np.mean([ssim(r, t) for r, t in zip(reference, test)]))
    win = min(7, reference.shape[0], reference.shape[1])
    win -= (win + 1) % 2  # odd
    return float(structural_similarity(reference, test, data_range=255, channel_axis=-1 if reference.ndim == 3 else None, win_size=win))


def batch_quality(references: np.ndarray, tests: np.ndarray) -> dict:
    """Mean per-image PSNR (dB; identical pairs count as 100 dB) and SSIM over a batch of uint8 images."""
    references, tests = _check(references, tests)
    if references.ndim == 3:
        references, tests = references[None], tests[None]
    psnrs = [min(psnr(r, t), 100.0) for r, t in zip(references, tests)]
    ssims = [ssim(r, t) for r, t in zip(references, tests)]
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "images": int(len(references))}


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def ssim_torch(x, y, window: int = 7, c1: float = 0.01**2, c2: float = 0.03**2):
    """Mean SSIM of two N x C x H x W tensors with values in [0, 1] (uniform window); differentiable."""
    import torch.nn.functional as F

    pad = window // 2
    channels = x.shape[1]
    kernel = x.new_full((channels, 1, window, window), 1.0 / (window * window))

    def blur(t):
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return s.mean()
