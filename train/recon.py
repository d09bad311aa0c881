"""Reconstruction fakes: real faces redrawn whole by a decoder, as generators draw their frames.

A talking-head or diffusion generator renders every pixel of its frame -- face and
surroundings alike -- through a decoder that upsamples, and the upsampling leaves its
traces everywhere it draws. Self-blends and swap blends teach a detector the seam of a
pasted face, which a frame generated whole does not have. An autoencoder trained only to
redraw real faces has a decoder of the same kind; its redrawings of real crops are fakes
"generated whole" with no seam at all (the simulator of Zhang, Karaman and Chang, 2019,
"Detecting and simulating artifacts in GAN fake images"). ``dfstream train recon`` trains
it on real faces; ``dfstream train detector --recon-fakes AE.pt --recon-share S`` makes that
share of the synthesised fakes with it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RECON_SIZE = 224  # the cached wide crops' size (train.datasets.CACHE_SIZE): the AE redraws face and surroundings
PATCH = 112  # training sees random patches: the network is convolutional, and a 112 px patch costs a quarter of a crop
EDGE_WEIGHT = 1.0  # weight of the image-gradient term: without it the redrawings are blurred, and blur becomes the cue


UPSAMPLING = ("transposed", "nearest")


def build_autoencoder(width: int = 32, upsample: str = "transposed"):
    """Three stride-2 convolutions down (224 -> 28), three upsampling steps back: transposed
    convolutions (GAN generators, most face swappers' decoders) or nearest-neighbour doubling and
    a 3x3 convolution (the decoder of Stable Diffusion's VAE, behind diffusion video and most
    diffusion talking heads). Each leaves its own periodic traces."""
    import torch.nn as nn

    if upsample not in UPSAMPLING:
        raise ValueError(f"upsample {upsample!r}: one of {', '.join(UPSAMPLING)}")

    def down(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]

    def up(c_in, c_out):
        if upsample == "nearest":
            scale = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
        else:
            scale = [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
        return [*scale, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        *down(w, 2 * w), *down(2 * w, 4 * w), *down(4 * w, 8 * w),
        *up(8 * w, 4 * w), *up(4 * w, 2 * w), *up(2 * w, w),
        nn.Conv2d(w, 3, 3, padding=1), nn.Tanh(),
    )


def _to_tensor(crops_bgr: np.ndarray):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops_bgr[..., ::-1])).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _to_images(x) -> np.ndarray:
    out = ((x.clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(out[..., ::-1])


def _gradients(x):
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def reconstruction_loss(redrawn, target, edge_weight: float = EDGE_WEIGHT):
    """L1 on the pixels plus ``edge_weight`` times L1 on their horizontal and vertical differences.

    Pixel L1 alone lets the decoder draw a soft average face; a detector trained on such
    redrawings learns "soft = fake" and flags every blurred real clip (seen with recipe D)."""
    import torch.nn.functional as F

    loss = F.l1_loss(redrawn, target)
    if edge_weight:
        (ry, rx), (ty, tx) = _gradients(redrawn), _gradients(target)
        loss = loss + edge_weight * (F.l1_loss(ry, ty) + F.l1_loss(rx, tx))
    return loss


def train_recon(crops: np.ndarray, output: str | Path, steps: int = 1500, batch_size: int = 16, lr: float = 2e-3,
                width: int = 32, seed: int = 0, minutes: float | None = None, patch: int = PATCH,
                edge_weight: float = EDGE_WEIGHT, upsample: str = "transposed", device: str = "auto",
                progress=None) -> dict:
    """Train the autoencoder on random ``patch``-px patches of real wide crops (N x 224 x 224 x 3 uint8
    BGR; ``patch`` a multiple of 8, at most the crop) on ``device`` (train.common.training_device); save it
    to ``output``, its weights on the CPU, where the detector's data loading redraws with it."""
    import torch

    from train.common import device_name, training_device

    device = training_device(device)
    if len(crops) < batch_size:
        raise ValueError(f"{len(crops)} real faces: too few to train the reconstruction autoencoder")
    size = crops.shape[1]
    if patch % 8 or not 8 <= patch <= size:
        raise ValueError(f"--patch {patch}: must be a multiple of 8 between 8 and the crop size {size}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_autoencoder(width, upsample).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    started, losses = time.monotonic(), []
    iterator = progress(range(steps), desc="recon autoencoder") if progress else range(steps)
    for step in iterator:
        pick = rng.integers(len(crops), size=batch_size)
        top, left = rng.integers(size - patch + 1, size=2)
        batch = crops[pick, top:top + patch, left:left + patch]
        flip = rng.random(batch_size) < 0.5
        batch[flip] = batch[flip][:, :, ::-1]
        x = _to_tensor(batch).to(device)
        loss = reconstruction_loss(model(x), x, edge_weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if minutes is not None and time.monotonic() - started > 60 * minutes:
            log.warning("recon: time limit reached at step %d of %d", step + 1, steps)
            break
    record = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "width": width, "size": RECON_SIZE,
              "steps": len(losses), "final_loss": float(np.mean(losses[-50:])), "seed": seed, "patch": patch,
              "edge_weight": edge_weight, "upsample": upsample, "device": device_name(device)}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, output)
    return {k: v for k, v in record.items() if k != "state_dict"}


class Reconstructor:
    """A trained autoencoder that redraws wide crops (one thread: it runs inside data loading).

    ``colour_match``: the redrawing takes the input's LAB mean and spread, as a generator's
    output is colour-matched to its frame; otherwise an autoencoder's slightly washed-out
    colours would be the easiest cue to learn."""

    def __init__(self, path: str | Path, colour_match: bool = True):
        import torch

        record = torch.load(path, map_location="cpu", weights_only=False)
        self.model = build_autoencoder(int(record["width"]), record.get("upsample", "transposed"))
        self.model.load_state_dict(record["state_dict"])
        self.model.eval()
        self.size = int(record["size"])
        self.colour_match = colour_match

    def __call__(self, wide_bgr: np.ndarray) -> np.ndarray:
        import torch

        if wide_bgr.shape[:2] != (self.size, self.size):
            raise ValueError(f"the autoencoder redraws {self.size} px crops, not {wide_bgr.shape[:2]}")
        with torch.inference_mode():
            redrawn = _to_images(self.model(_to_tensor(wide_bgr[None])))[0]
        if self.colour_match:
            from engines.blending import color_transfer

            redrawn = color_transfer(redrawn, wide_bgr)
        return redrawn


class AnyReconstructor:
    """One or more autoencoders (e.g. one of each upsampling): each redrawing by one drawn at random."""

    def __init__(self, paths: list[str | Path]):
        self.members = [Reconstructor(path) for path in paths]

    def __call__(self, wide_bgr: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        pick = (rng or np.random.default_rng()).integers(len(self.members))
        return self.members[pick](wide_bgr)


def fit(real: list[str], output: str | Path, exclude: tuple[str, ...] = (), face_detector: str = "auto",
        cache_dir: str | Path | None = None, max_faces_used: int = 6000, packs: tuple[str, ...] = (), progress=None,
        **train_options) -> dict:
    """``dfstream train recon``: the real media's cached wide crops (as the detector caches them) and the real
    faces of face ``packs`` (train.pack), then :func:`train_recon` on at most ``max_faces_used`` of them."""
    from train import common
    from train.datasets import cache_faces, gather, load_cached
    from train.pack import unpack_all
    from train.settings import DetectorTraining

    if train_options.get("device") is not None:
        common.training_device(train_options["device"])  # a GPU asked for must be there, before minutes of caching
    items = gather(real, default_label=0, exclude=exclude)
    defaults = DetectorTraining()
    cache = Path(cache_dir) if cache_dir else common.cache_root() / "faces"
    packed = [r for r in unpack_all(packs, cache, exclude) if r["label"] == 0]
    if not items and not packed:
        raise ValueError("no real media: give --real or --pack")
    records = packed + cache_faces(items, cache, defaults.every_n_frames, defaults.max_frames, defaults.max_faces,
                                   face_detector, progress=progress)
    crops = load_cached(records)["crops"]
    if len(crops) > max_faces_used:
        crops = crops[np.random.default_rng(0).choice(len(crops), max_faces_used, replace=False)]
    result = train_recon(crops, output, progress=progress, **train_options)
    return {**result, "faces": int(len(crops)), "files": len(records), "output": str(output)}
