"""DCGAN (Radford et al., 2016) on 64 x 64 face crops: generator and discriminator.

As the paper: the generator maps 100-d noise through transposed convolutions with
batch norm and ReLU to a tanh image; the discriminator is strided convolutions with
LeakyReLU(0.2) (batch norm on all but the first layer) and a sigmoid.  Weights are
initialised N(0, 0.02) (batch-norm scales N(1, 0.02)).

dfstream trains the discriminator with label 1 = *generated* (the BCE objective is
the same game as the paper's 1 = real, mirrored), so its output is directly
P(fake), and ``build(**kwargs)`` -- family ``dcgan_discriminator`` -- returns a
module that is a valid dfstream *detector*: a preprocessed crop batch (mean/std
0.5, i.e. pixels in [-1, 1], the generator's tanh range) -> P(fake), shape (N,).
"""
from __future__ import annotations

import math

import torch
from torch import nn

Z_DIM = 100


def weights_init(module: nn.Module) -> None:
    name = type(module).__name__
    if "Conv" in name:
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif "BatchNorm" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _levels(image_size: int) -> int:
    levels = int(round(math.log2(image_size))) - 2  # 64 -> 4 stride-2 stages between 4x4 and the image
    if image_size < 16 or 2 ** (levels + 2) != image_size:
        raise ValueError(f"DCGAN image size must be a power of two >= 16, not {image_size}")
    return levels


class Generator(nn.Module):
    """z (N x z_dim) -> image (N x 3 x S x S) in [-1, 1]."""

    def __init__(self, z_dim: int = Z_DIM, ngf: int = 64, image_size: int = 64, channels: int = 3):
        super().__init__()
        levels = _levels(image_size)
        self.z_dim = z_dim
        width = ngf * 2 ** (levels - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    """Image in [-1, 1] (N x 3 x S x S) -> P(generated) (N,).  ``logits`` for training with BCEWithLogits."""

    def __init__(self, ndf: int = 64, image_size: int = 64, channels: int = 3):
        super().__init__()
        levels = _levels(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(levels - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)
        self.apply(weights_init)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def build(ndf: int = 64, image_size: int = 64, channels: int = 3) -> Discriminator:
    """Family ``dcgan_discriminator``: the discriminator as a detector (crop -> P(fake))."""
    return Discriminator(ndf=int(ndf), image_size=int(image_size), channels=int(channels))


def build_generator(z_dim: int = Z_DIM, ngf: int = 64, image_size: int = 64, channels: int = 3) -> Generator:
    return Generator(z_dim=int(z_dim), ngf=int(ngf), image_size=int(image_size), channels=int(channels))
