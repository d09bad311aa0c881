"""Face swapper: one shared encoder, one decoder per identity (the "deepfakes" autoencoder),
plus the patch discriminator that supplies its adversarial loss.

Training teaches the encoder a face code common to both people and each decoder to
draw its own person from that code; a swap is "encode a face of A, decode it with
B's decoder".  ``build(**architecture)`` returns the whole :class:`FaceSwapper`; its
``forward`` is what gets exported and run by the infer stage: a preprocessed NCHW
crop batch (``engines.base.preprocess``, in the metadata's mean/std space) in, the
swapped crop batch out, NCHW, in the same space, decoded by the decoder named by
``target``.  The discriminator is training-only and not part of the exported graph.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.LeakyReLU(0.1, inplace=True))


class Upscale(nn.Module):
    """3x3 conv to 4x the channels, then pixel shuffle: x2 resolution without checkerboard artefacts."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 4, 3, 1, 1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.act(self.conv(x)))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        return F.leaky_relu(x + self.conv2(y), 0.2)


class Encoder(nn.Module):
    """Crop -> strided convs -> dense bottleneck -> small feature map (shared by both identities)."""

    def __init__(self, input_size: int, channels: tuple[int, ...], latent: int):
        super().__init__()
        layers, cin = [], 3
        for cout in channels:
            layers.append(_conv(cin, cout))
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.bottom = input_size // (2 ** len(channels))  # spatial size after the convs
        self.seed = max(4, self.bottom)  # spatial size the decoders start from
        self.seed_channels = channels[-1]
        self.dense1 = nn.Linear(cin * self.bottom * self.bottom, latent)
        self.dense2 = nn.Linear(latent, self.seed_channels * self.seed * self.seed)
        self.upscale = Upscale(self.seed_channels, self.seed_channels // 2)

    @property
    def out_channels(self) -> int:
        return self.seed_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x).flatten(1)
        x = self.dense2(self.dense1(x))
        x = x.view(-1, self.seed_channels, self.seed, self.seed)
        return self.upscale(x)


class Decoder(nn.Module):
    """Encoder features -> upscale blocks -> RGB in [0, 1] (sigmoid)."""

    def __init__(self, cin: int, channels: tuple[int, ...], start: int, input_size: int, residual: bool = True):
        super().__init__()
        blocks = []
        size = start
        for i, cout in enumerate(channels):
            blocks.append(Upscale(cin, cout))
            if residual and i < len(channels) - 1:  # none at full resolution: too costly on a CPU
                blocks.append(ResBlock(cout))
            cin, size = cout, size * 2
        if size != input_size:
            raise ValueError(f"decoder reaches {size}px, not the {input_size}px input: adjust channels")
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(cin, 3, 5, 1, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.to_rgb(self.blocks(z)))


class PatchDiscriminator(nn.Module):
    """Real crop vs reconstructed crop, judged per patch (logits, N x 1 x h x w).  Training only."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers, cin = [], 3
        for i, cout in enumerate(channels):
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            if i:
                layers.append(nn.InstanceNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FaceSwapper(nn.Module):
    """Shared encoder + ``decoders[identity]``.  ``forward`` swaps into ``target`` in mean/std space."""

    def __init__(
        self,
        input_size: int = 64,
        encoder_channels: tuple[int, ...] = (32, 64, 128, 256),
        latent: int = 256,
        decoder_channels: tuple[int, ...] | None = None,
        identities: tuple[str, ...] = ("a", "b"),
        target: str = "b",
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        residual: bool = True,
    ):
        super().__init__()
        if input_size % (2 ** len(encoder_channels)):
            raise ValueError(f"input_size {input_size} must be divisible by {2 ** len(encoder_channels)}")
        if target not in identities:
            raise ValueError(f"target {target!r} is not one of the identities {list(identities)}")
        self.input_size = int(input_size)
        self.identities = tuple(identities)
        self.target = target
        self.encoder = Encoder(input_size, tuple(encoder_channels), latent)
        start = self.encoder.seed * 2
        if decoder_channels is None:  # halve the channels on each upscale to the input size
            n, c, decoder_channels = 0, self.encoder.out_channels // 2, []
            while start * (2 ** n) < input_size:
                decoder_channels.append(c)
                c = max(16, c // 2)
                n += 1
        self.decoder_channels = tuple(decoder_channels)
        self.decoders = nn.ModuleDict(
            {name: Decoder(self.encoder.out_channels, tuple(decoder_channels), start, input_size, residual) for name in identities}
        )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # pixel space [0, 1] -> the model's normalised input space
    def to_normalised(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def autoencode(self, x_pixels: torch.Tensor, identity: str) -> torch.Tensor:
        """Pixels [0, 1] in, pixels [0, 1] out, through ``identity``'s decoder (training path)."""
        return self.decoders[identity](self.encoder(self.to_normalised(x_pixels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_normalised(self.decoders[self.target](self.encoder(x)))


def build(
    input_size: int = 64,
    encoder_channels=(32, 64, 128, 256),
    latent: int = 256,
    decoder_channels=None,
    identities=("a", "b"),
    target: str = "b",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    residual: bool = True,
) -> FaceSwapper:
    return FaceSwapper(
        input_size=int(input_size),
        encoder_channels=tuple(int(c) for c in encoder_channels),
        latent=int(latent),
        decoder_channels=None if decoder_channels is None else tuple(int(c) for c in decoder_channels),
        identities=tuple(identities),
        target=target,
        mean=tuple(mean),
        std=tuple(std),
        residual=bool(residual),
    )


def build_discriminator(channels=(32, 64, 128)) -> PatchDiscriminator:
    return PatchDiscriminator(tuple(int(c) for c in channels))
