"""The settings of each trainer, with their defaults: written once, here.

The trainers start from these (``DEFAULTS`` in each trainer module is the dict of one),
and the ``dfstream train`` commands (:mod:`dfstream.cli`) take their options' defaults
from them.  This module imports nothing heavy, so the command line can read it at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DetectorTraining:
    """``dfstream train detector`` (:mod:`train.detector`)."""

    data: list[str] = field(default_factory=list)  # labelled folders (real/, fake/) or list files (path<TAB>label)
    real: list[str] = field(default_factory=list)  # folders / files of real media
    fake: list[str] = field(default_factory=list)  # folders / files of fake media
    pack: list[str] = field(default_factory=list)  # face packs (train.pack): media already cut into faces, e.g. on a GPU machine
    extra_fakes: list[str] = field(default_factory=list)  # folders of already aligned fake face crops (our DCGAN samples, our swaps): training only
    extra_fakes_margin: float = 1.3  # the alignment margin those crops were cut with
    exclude: list[str] = field(default_factory=list)  # glob patterns of media to leave out (held-out evaluation clips)
    sbi: bool = True
    sbi_landmarks: str | None = "auto"  # landmark model for the self-blending masks: auto (pfld68 if installed), a name, or none
    sbi_curriculum: int = 1020  # steps over which the self-blends ease from twice as strong to normal (0: off); 1020: as measured
    sbi_inside: bool = False  # self-blend seams kept inside the face hull (none across the contour into hair or background)
    swap_blend: float = 0.0  # share of the synthesised fakes made as real-time swappers make them (train.swapblend), not self-blends
    smooth_augment: bool = False  # edge-preserving smoothing (denoisers, beauty filters, codecs) among the augmentations
    recon_fakes: tuple[str, ...] = ()  # reconstruction autoencoders (dfstream train recon): whole-redrawn fakes
    recon_share: float = 0.0  # share of the synthesised fakes redrawn by it (train.recon), before swap blends
    recon_paste: bool = False  # keep only the redrawing's inner face, rendered in as a live swapper does (train.swapblend)
    warp_fakes: float = 0.0  # share of the synthesised fakes made as one-shot talking heads make them (train.warpfake): another frame of the clip warped to this one
    webcam_augment: bool = False  # half the crops degraded as a call delivers a face: shrunk to 30-70 %, JPEG 30-60
    blend_map: float = 0.0  # weight of a second loss: where in the crop the self-blend mixes two images (Face X-ray's boundary); 0: off
    sbi_pairs: bool = False  # a real face and its blend: cut and augmented alike, in the same batch (learns sooner, generalised worse here)
    backbone: str = "auto"  # the UltraFace detector's trunk when installed (steadier across seeds, research log), else mobilenetv3_small_100
    stem: str = "rgb"  # rgb, or srm: fixed high-pass residuals beside the colours (engines.networks.detector)
    pretrained: bool = False
    drop_rate: float = 0.2
    input_size: int = 128
    margin: float = 1.4
    batch_size: int = 32
    steps: int = 2000
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    ema: float | None = None  # decay of an exponential moving average of the weights (0.999 ...), kept in checkpoints/ema.pt; None: off
    sam: float | None = None  # sharpness-aware minimisation's radius rho (the SBI paper's 0.05); None: plain AdamW steps
    seed: int = 0
    device: str = "auto"  # where the network trains: cpu, cuda, cuda:N, or auto (the GPU when torch sees one)
    threads: int | None = None
    workers: int = 1
    val_fraction: float = 0.1
    val_max: int = 256
    every_n_frames: int = 4
    max_frames: int = 100
    max_faces: int = 2
    face_detector: str = "auto"
    cache_dir: str | None = None
    log_every: int = 20
    checkpoint_every: int = 250
    time_limit: float | None = None  # minutes: stop (and checkpoint) after this much wall time
    init_from: str | None = None  # checkpoint whose weights start this run (fresh optimiser, schedule and step count)
    name: str = "dfstream-detector"


@dataclass
class SwapperTraining:
    """``dfstream train swapper`` (:mod:`train.swapper`)."""

    input_size: int = 64
    crop_margin: float = 1.1
    every_n_frames: int = 2
    max_frames: int | None = None
    holdout: float = 0.15
    batch_size: int = 16
    steps: int = 5000
    minutes: float | None = None
    lr: float = 2e-4
    ssim_weight: float = 1.0
    adv_weight: float = 0.1
    warp: bool = True
    colour: bool = True
    sample_every: int = 100
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # where the networks train: cpu, cuda, cuda:N, or auto (the GPU when torch sees one)
    threads: int | None = None
    target: str = "b"
    face_detector: str = "auto"
    latent: int = 256
    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)


@dataclass
class GanTraining:
    """``dfstream train gan`` (:mod:`train.gan`)."""

    image_size: int = 64
    crop_margin: float = 1.3
    every_n_frames: int = 5
    max_frames: int | None = None
    batch_size: int = 128
    epochs: int = 25
    minutes: float | None = None
    lr: float = 2e-4
    beta1: float = 0.5
    z_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    flip: bool = True
    seed: int = 0
    device: str = "auto"  # where the networks train: cpu, cuda, cuda:N, or auto (the GPU when torch sees one)
    threads: int | None = None
    face_detector: str = "auto"
    log_every: int = 1
