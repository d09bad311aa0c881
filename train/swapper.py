"""Train the face swapper: ``dfstream train swapper --faces-a A --faces-b B``.

The "deepfakes" recipe: aligned crops of two people (cut by the pipeline's own
source and detect stages, :mod:`stages.faces`), one shared encoder, one decoder per
person.  Each step, every decoder learns to rebuild its own person from a randomly
*warped* copy of the face (so the encoder must learn a face code, not copy pixels);
the loss is L1 plus a structural term (1 - SSIM) plus a small adversarial term from
a patch discriminator that judges reconstructions against real crops.  Adam at
2e-4 (betas 0.5, 0.999) for both networks, as the original.

The last ``--holdout`` share (default 15 %) of each person's crops -- for a video,
its last frames -- is never trained on: reconstruction PSNR/SSIM are measured there
(:func:`evaluate_reconstruction`, also ``dfstream eval-swap``).

A run folder holds ``config.json``, TensorBoard events (losses; sample swaps side
by side: A, A rebuilt, A as B, B, B rebuilt, B as A), PNGs of the same samples, and
``checkpoints/last.pt`` (dfstream-checkpoint-v1: the swapper whose forward swaps
into ``--target``, the discriminator and both optimisers for ``--resume``).
``dfstream export`` turns the checkpoint into an ONNX swapper for ``dfstream run --swap``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from train.settings import SwapperTraining

log = logging.getLogger("dfstream.train.swapper")

DEFAULTS = asdict(SwapperTraining())  # the settings a run starts from (train/settings.py)
# settings a resumed run takes from its checkpoint whatever the command line says: they fix the data and the network
RESUME_KEEPS = ("input_size", "crop_margin", "every_n_frames", "max_frames", "holdout", "face_detector")


# --------------------------------------------------------------------------- data
@dataclass
class IdentityFaces:
    """One person's aligned crops (uint8 BGR), split into training and held-back parts."""

    name: str
    source: str
    train: np.ndarray  # N x H x W x 3
    held: np.ndarray  # M x H x W x 3, the last share of the crops (last frames of a video)
    held_faces: list  # FaceCrop records of the held-back crops (frames kept when asked)


def collect_faces(path, size: int, margin: float, every_n_frames: int = 2, max_frames: int | None = None,
                  face_detector: str = "auto", keep_frames: bool = False, desc: str = "faces"):
    """FaceCrop records (largest face per image / sampled frame) from a file or folder, in order."""
    from train.common import progress
    from stages.faces import FaceCropper, default_detect_config, list_media

    files = list_media(path)
    if not files:
        raise FileNotFoundError(f"no images or videos in {path}")
    cropper = FaceCropper(default_detect_config((size, size), margin, face_detector))
    faces = []
    bar = progress(desc=desc, unit="face")
    for file in files:
        for face in cropper.crops_from(file, every_n_frames=every_n_frames, max_frames=max_frames, max_faces=1,
                                       keep_frames=keep_frames):
            faces.append(face)
            bar.update(1)
    bar.close()
    return faces


def load_identity(name: str, path, size: int, margin: float, holdout: float, every_n_frames: int = 2,
                  max_frames: int | None = None, face_detector: str = "auto", keep_held_frames: bool = False) -> IdentityFaces:
    """Crops of one person; the last ``holdout`` share is held back (frames kept for it when asked)."""
    faces = collect_faces(path, size, margin, every_n_frames, max_frames, face_detector, keep_frames=keep_held_frames,
                          desc=f"faces {name}")
    if len(faces) < 2:
        raise ValueError(f"found {len(faces)} face(s) in {path}; a swapper needs many crops of each person")
    n_held = int(round(len(faces) * holdout)) if holdout > 0 else 0
    n_held = min(max(n_held, 1 if holdout > 0 else 0), len(faces) - 1)
    split = len(faces) - n_held
    for face in faces[:split]:
        face.frame = None  # frames are only needed (for pasting) on held-back faces
    crops = np.stack([f.crop for f in faces])
    return IdentityFaces(name=name, source=str(path), train=crops[:split], held=crops[split:], held_faces=faces[split:])


# --------------------------------------------------------------------------- augmentation
def augment(batch, warp: bool = True, colour: bool = True, generator=None):
    """(input, target) from a batch in [0, 1] RGB NCHW: the same random affine (+ flip) and colour
    change on both; a smooth random warp on the input only, which the decoder must undo."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = batch.shape

    def rand(*shape):
        return torch.rand(*shape, generator=generator) * 2 - 1

    angle = rand(n) * math.radians(10)
    scale = 1 + rand(n) * 0.05
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = rand(n, 2) * 0.1  # 5 % of the crop (normalised coordinates span 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    target = F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if colour:
        brightness = rand(n, 1, 1, 1) * 0.08
        contrast = 1 + rand(n, 1, 1, 1) * 0.15
        saturation = 1 + rand(n, 1, 1, 1) * 0.2
        grey = target.mean(1, keepdim=True)
        target = grey + (target - grey) * saturation
        mean = target.mean((1, 2, 3), keepdim=True)
        target = ((target - mean) * contrast + mean + brightness).clamp(0, 1)
    inputs = target
    if warp:
        coarse = rand(n, 2, 5, 5) * 0.06  # displacement field on a 5 x 5 grid, up to 3 % of the crop
        coarse[:, :, [0, -1], :] = 0
        coarse[:, :, :, [0, -1]] = 0
        flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        identity = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), list(batch.shape), align_corners=False)
        inputs = F.grid_sample(target, identity + flow, mode="bilinear", padding_mode="reflection", align_corners=False)
    return inputs, target


def to_tensor(crops_bgr: np.ndarray, color_order: str = "RGB"):
    """uint8 BGR NHWC -> float [0, 1] NCHW in the model's colour order."""
    import torch

    x = crops_bgr[..., ::-1] if color_order == "RGB" else crops_bgr
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().div_(255.0)


# --------------------------------------------------------------------------- evaluation
def run_decoder(model, crops_bgr: np.ndarray, identity: str, metadata, batch_size: int = 64) -> np.ndarray:
    """uint8 BGR crops -> uint8 BGR crops decoded by ``identity``'s decoder (the exported path's maths)."""
    import torch

    from engines.base import postprocess_image, preprocess

    outs, device = [], next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(crops_bgr), batch_size):
            x = torch.from_numpy(preprocess(crops_bgr[i : i + batch_size], metadata)).to(device)
            y = model.to_normalised(model.decoders[identity](model.encoder(x)))
            outs.append(postprocess_image(y.cpu().numpy(), metadata))
    return np.concatenate(outs) if outs else np.zeros_like(crops_bgr)


def evaluate_reconstruction(model, identities: list[IdentityFaces], metadata) -> dict:
    """PSNR (dB) and SSIM of each person's held-back crops rebuilt by their own decoder."""
    from train.image_quality import batch_quality

    was_training = model.training
    model.eval()
    metrics, weights = {}, []
    for ident, key in zip(identities, ("a", "b")):
        if len(ident.held) == 0:
            continue
        q = batch_quality(ident.held, run_decoder(model, ident.held, key, metadata))
        metrics[f"psnr_{key}"], metrics[f"ssim_{key}"] = q["psnr"], q["ssim"]
        weights.append((q["images"], q["psnr"], q["ssim"]))
    if weights:
        total = sum(w[0] for w in weights)
        metrics["psnr"] = sum(w[0] * w[1] for w in weights) / total
        metrics["ssim"] = sum(w[0] * w[2] for w in weights) / total
        metrics["held_back_crops"] = total
    model.train(was_training)
    return metrics


def sample_grid(model, faces_a: np.ndarray, faces_b: np.ndarray, metadata) -> np.ndarray:
    """uint8 RGB H x W x 3 image: one row per sample, A | A rebuilt | A as B | B | B rebuilt | B as A."""
    import torch
    from torchvision.utils import make_grid

    was_training = model.training
    model.eval()
    n = min(len(faces_a), len(faces_b))
    a, b = faces_a[:n], faces_b[:n]
    columns = [a, run_decoder(model, a, "a", metadata), run_decoder(model, a, "b", metadata),
               b, run_decoder(model, b, "b", metadata), run_decoder(model, b, "a", metadata)]
    model.train(was_training)
    tiles = np.stack(columns, 1).reshape(n * 6, *a.shape[1:])[..., ::-1]  # BGR -> RGB for display
    grid = make_grid(torch.from_numpy(np.ascontiguousarray(tiles.transpose(0, 3, 1, 2))), nrow=6, padding=2)
    return grid.permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- training
def _metadata(architecture: dict, identities: list[IdentityFaces], config: dict, metrics: dict, step: int,
              device: str = "cpu"):
    from engines.metadata import KIND_SWAPPER, ModelMetadata

    a, b = identities
    target_name = a.name if architecture["target"] == "a" else b.name
    return ModelMetadata(
        kind=KIND_SWAPPER,
        name=f"swapper-{a.name}-{b.name}-to-{target_name}",
        input_size=(architecture["input_size"], architecture["input_size"]),
        color_order="RGB",
        mean=tuple(architecture["mean"]),
        std=tuple(architecture["std"]),
        crop_margin=float(config["crop_margin"]),
        output="image",
        labels=(),
        architecture="swapper:" + ",".join(f"{k}={v}" for k, v in architecture.items() if k != "family"),
        training={
            "faces_a": a.source,
            "faces_b": b.source,
            "identities": [a.name, b.name],
            "holdout": config["holdout"],
            "every_n_frames": config["every_n_frames"],
            "max_frames": config["max_frames"],
            "train_crops": [int(len(a.train)), int(len(b.train))],
            "held_back_crops": [int(len(a.held)), int(len(b.held))],
            "steps": int(step),
            "batch_size": config["batch_size"],
            "lr": config["lr"],
            "ssim_weight": config["ssim_weight"],
            "adv_weight": config["adv_weight"],
            "seed": config["seed"],
            "device": device,
            "command": config.get("command", ""),
        },
        metrics={k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
        extra={"identities": [a.name, b.name], "target": architecture["target"], "target_name": target_name},
    )


def _swapper_config(faces_a, faces_b, run_dir, name_a: str | None, name_b: str | None, options: dict) -> dict:
    """The run's settings: the defaults, the caller's, and the two people's names (from their
    file or folder names by default; made distinct when they are the same)."""
    config = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    config.update(faces_a=str(faces_a), faces_b=str(faces_b), run_dir=str(run_dir))
    if config["target"] not in ("a", "b"):
        raise ValueError(f"--target must be a or b, not {config['target']!r}")
    name_a = name_a or Path(str(faces_a).rstrip("/")).stem
    name_b = name_b or Path(str(faces_b).rstrip("/")).stem
    if name_a == name_b:
        name_a, name_b = f"{name_a}-a", f"{name_b}-b"
    config.update(name_a=name_a, name_b=name_b)
    return config


def _swapper_networks(checkpoint: dict | None, config: dict, size: int):
    """(swapper, its architecture, discriminator, the discriminator's channels): a resumed run's own
    architecture, or a new one from the config."""
    from engines.networks import build_model
    from engines.networks.swapper import build_discriminator

    if checkpoint is not None:
        architecture = dict(checkpoint["architecture"])
        disc_channels = checkpoint["extra"].get("discriminator_channels", [32, 64, 128])
    else:
        architecture = {"family": "swapper", "input_size": size, "encoder_channels": list(config["encoder_channels"]),
                        "latent": int(config["latent"]), "decoder_channels": None, "identities": ["a", "b"],
                        "target": config["target"], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "residual": True}
        disc_channels = [32, 64, 128]
    model = build_model(architecture)
    architecture["decoder_channels"] = list(model.decoder_channels)  # saved resolved: defaults may change
    return model, architecture, build_discriminator(disc_channels), disc_channels


def _train_step(model, discriminator, opt_g, opt_d, data, rng, aug_gen, config: dict, batch_size: int, bce) -> dict:
    """One optimiser step of the swapper (each person's batch rebuilt through its own decoder),
    then one of the discriminator; returns the step's losses."""
    import torch
    import torch.nn.functional as F

    from train.image_quality import ssim_torch

    targets, recons, losses = [], [], {}
    loss_g = 0.0
    device = next(model.parameters()).device
    for key, x in zip(("a", "b"), data):
        idx = torch.from_numpy(rng.integers(0, len(x), size=batch_size))
        # augmented on the CPU with the run's own random generator (the same draws on any device), then moved
        inputs, target = (t.to(device) for t in augment(x[idx], config["warp"], config["colour"], aug_gen))
        recon = model.autoencode(inputs, key)
        l1 = F.l1_loss(recon, target)
        structural = 1.0 - ssim_torch(recon, target)
        rec = l1 + config["ssim_weight"] * structural
        losses[f"rec_{key}"] = rec.item()
        losses[f"l1_{key}"] = l1.item()
        loss_g = loss_g + rec
        targets.append(target)
        recons.append(recon)
    fake = torch.cat(recons)
    real = torch.cat(targets)
    if config["adv_weight"] > 0:
        logits = discriminator(fake * 2 - 1)
        adv = bce(logits, torch.ones_like(logits))  # the swapper wants its faces judged real
        loss_g = loss_g + config["adv_weight"] * adv
        losses["adv_g"] = adv.item()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    if config["adv_weight"] > 0:
        real_logits = discriminator(real * 2 - 1)
        fake_logits = discriminator(fake.detach() * 2 - 1)
        loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        losses["d"] = loss_d.item()
    losses["total_g"] = loss_g.item()
    return losses


def train_swapper(faces_a, faces_b, run_dir, name_a: str | None = None, name_b: str | None = None, resume: bool = False,
                  echo=print, **options) -> dict:
    """Train (or ``resume``) a swapper; returns a summary with the loss windows and held-back metrics."""
    import torch

    from train.common import (LossWindow, device_name, open_run, resume_from, save_checkpoint, seed_everything, set_threads,
                              training_device)
    from train.loop import LoopConfig, TrainingLoop, tensorboard_writer

    config = _swapper_config(faces_a, faces_b, run_dir, name_a, name_b, options)
    name_a, name_b = config["name_a"], config["name_b"]

    from stages.faces import list_media

    for path in (faces_a, faces_b):  # before the run folder is made: a typo must not leave one behind
        if not list_media(path):
            raise FileNotFoundError(f"no images or videos in {path}")
    device = training_device(config["device"])  # likewise: a GPU asked for must be there
    run, checkpoint = open_run(run_dir, config, resume, kept=RESUME_KEEPS)
    seed_everything(int(config["seed"]))
    threads = set_threads(config["threads"])

    size, margin = int(config["input_size"]), float(config["crop_margin"])
    started = time.time()
    identities = [
        load_identity(name_a, faces_a, size, margin, config["holdout"], config["every_n_frames"], config["max_frames"], config["face_detector"]),
        load_identity(name_b, faces_b, size, margin, config["holdout"], config["every_n_frames"], config["max_frames"], config["face_detector"]),
    ]
    echo(f"faces: {name_a} {len(identities[0].train)} train + {len(identities[0].held)} held back, "
         f"{name_b} {len(identities[1].train)} train + {len(identities[1].held)} held back "
         f"({size}x{size}, margin {margin}, {time.time() - started:.1f}s, {threads} threads, "
         f"training on {device_name(device)})")

    model, architecture, discriminator, disc_channels = _swapper_networks(checkpoint, config, size)
    model.to(device)  # before the optimisers take their parameters
    discriminator.to(device)
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config["lr"], betas=betas)
    step = 0
    if checkpoint is not None:
        step, _ = resume_from(checkpoint, model, opt_g, extra_state={"discriminator": discriminator, "optimizer_d": opt_d})
        echo(f"resumed {run.latest_checkpoint()} at step {step}")

    metadata = _metadata(architecture, identities, config, {}, step, device_name(device))
    writer = tensorboard_writer(run.path, step)
    def spread(ident: IdentityFaces) -> np.ndarray:  # 4 held-back faces spread over the held-back frames
        pool = ident.held if len(ident.held) >= 4 else ident.train
        return pool[np.linspace(0, len(pool) - 1, min(4, len(pool))).astype(int)]

    fixed_a, fixed_b = spread(identities[0]), spread(identities[1])
    (run.path / "samples").mkdir(exist_ok=True)
    data = [to_tensor(ident.train, metadata.color_order) for ident in identities]
    rng = np.random.default_rng(int(config["seed"]) + step)
    aug_gen = torch.Generator().manual_seed(int(config["seed"]) + step)
    batch_size, total_steps = int(config["batch_size"]), int(config["steps"])
    window = LossWindow(max(1, min(20, (total_steps - step) // 5)))
    bce = torch.nn.BCEWithLogitsLoss()
    metrics: dict = dict(checkpoint["metadata"].get("metrics", {})) if checkpoint is not None else {}
    # the whole run's first-window losses survive a resume
    first_losses = checkpoint["extra"].get("first_losses", {}) if checkpoint is not None else {}

    def write_samples(at: int) -> None:
        grid = sample_grid(model, fixed_a, fixed_b, metadata)
        writer.add_image("samples/A_rebuilt_AasB_B_rebuilt_BasA", grid, at, dataformats="HWC")
        import cv2

        cv2.imwrite(str(run.path / "samples" / f"step{at:07d}.png"), grid[..., ::-1])

    def save(at: int) -> Path:
        nonlocal metrics, metadata
        metrics = {**metrics, **evaluate_reconstruction(model, identities, metadata), "step": at}
        for key in ("psnr", "ssim", "psnr_a", "psnr_b", "ssim_a", "ssim_b"):
            if key in metrics:
                writer.add_scalar(f"heldback/{key}", metrics[key], at)
        metadata = _metadata(architecture, identities, config, metrics, at, device_name(device))
        summary = window.summary()
        firsts = {**{k: v[0] for k, v in summary.items()}, **first_losses}
        return save_checkpoint(run.checkpoint_path(), model, architecture, metadata, optimizer=opt_g, step=at,
                               extra={"config": config, "discriminator_channels": disc_channels, "first_losses": firsts},
                               extra_state={"discriminator": discriminator, "optimizer_d": opt_d})

    if step >= total_steps:
        echo(f"nothing to do: the run is already at step {step} of --steps {total_steps}")
    else:
        write_samples(step)
    model.train()
    discriminator.train()

    def one_step(done: int) -> dict:
        losses = _train_step(model, discriminator, opt_g, opt_d, data, rng, aug_gen, config, batch_size, bce)
        window.add(losses)
        if (done + 1) % int(config["sample_every"]) == 0:
            write_samples(done + 1)
        return losses

    def save_at(at: int, final: bool) -> None:
        if final:
            write_samples(at)
        save(at)

    loop = TrainingLoop(
        LoopConfig(total=total_steps, start=step, started=started,
                   time_limit_s=60.0 * float(config["minutes"]) if config["minutes"] else None,
                   log_every=int(config["log_every"]), checkpoint_every=int(config["checkpoint_every"]),
                   saved_at_start=checkpoint is not None, desc="swapper", unit="step"),
        step=one_step, save=save_at, writer=writer,
        scalars=lambda at, values: {f"loss/{k}": v for k, v in values[-1].items()},
        postfix=lambda v: {"rec_a": f"{v['rec_a']:.3f}", "rec_b": f"{v['rec_b']:.3f}"})
    result = loop.run()
    step = result.step
    if result.out_of_time:
        echo(f"stopping at step {step}: --minutes {config['minutes']} reached")
    writer.close()

    windows = window.summary()
    for k, v in first_losses.items():  # a resumed run reports from where the whole run started
        if k in windows:
            windows[k] = (v, windows[k][1])
    summary = {"step": step, "seconds": time.time() - started, "losses": windows, "metrics": metrics,
               "checkpoint": str(run.checkpoint_path()), "run_dir": str(run.path)}
    _echo_summary(echo, summary, window.size, name_a, name_b)
    return summary


def _echo_summary(echo, summary: dict, window_size: int, name_a: str, name_b: str) -> None:
    windows, metrics = summary["losses"], summary["metrics"]
    if windows:
        echo(f"losses (mean of first -> last {window_size} steps): " + ", ".join(f"{k} {a:.4f} -> {b:.4f}" for k, (a, b) in windows.items()
                                                                    if k in ("rec_a", "rec_b", "adv_g", "d")))
    if "psnr" in metrics:
        echo(f"held-back reconstruction: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} "
             f"({name_a}: {metrics.get('psnr_a', float('nan')):.2f} dB / {metrics.get('ssim_a', float('nan')):.3f}, "
             f"{name_b}: {metrics.get('psnr_b', float('nan')):.2f} dB / {metrics.get('ssim_b', float('nan')):.3f}; "
             f"{metrics.get('held_back_crops', 0)} crops)")
    echo(f"checkpoint {summary['checkpoint']} (step {summary['step']}, {summary['seconds']:.0f}s); "
         f"TensorBoard: tensorboard --logdir {summary['run_dir']}")


# --------------------------------------------------------------------------- dfstream eval-swap
def swap_frames(model, ident: IdentityFaces, into: str, metadata) -> list[np.ndarray]:
    """``ident``'s held-back frames with their face swapped into identity ``into`` and pasted back."""
    from engines.alignment import alignment_matrix
    from engines.blending import paste_swapped_face

    swapped = run_decoder(model, ident.held, into, metadata)
    frames = []
    for face, crop, original in zip(ident.held_faces, swapped, ident.held):
        frame = face.frame.copy()
        matrix = alignment_matrix(face.landmarks, tuple(metadata.input_size), metadata.crop_margin)
        paste_swapped_face(frame, crop, matrix, original)
        frames.append(frame)
    return frames


def flag_frames(frames: list[np.ndarray], detector, face_detector: str = "auto") -> dict:
    """Run a detector engine on the largest face of each frame, cut as the detector wants it.

    Faces are found and aligned by the pipeline's detect stage (:mod:`stages.faces`) on the
    frames written losslessly (PNG) to a temporary folder."""
    import tempfile

    import cv2

    from stages.faces import FaceCropper, default_detect_config

    meta = detector.metadata
    cropper = FaceCropper(default_detect_config(tuple(meta.input_size), meta.crop_margin, face_detector))
    scores, missed = [], 0
    with tempfile.TemporaryDirectory(prefix="dfstream-evalswap-") as tmp:
        for i, frame in enumerate(frames):
            path = Path(tmp) / f"{i:06d}.png"
            cv2.imwrite(str(path), frame)
            crops = cropper.crops_from_image(path, max_faces=1)
            if not crops:
                missed += 1
                continue
            scores.append(float(detector.run(crops[0].crop[None])[0]))
    scores_arr = np.asarray(scores, np.float32)
    flagged = int((scores_arr >= meta.threshold).sum())
    return {
        "frames": len(frames),
        "faces_found": len(scores),
        "faces_missed": missed,
        "flagged": flagged,
        "flagged_share": flagged / len(frames) if frames else float("nan"),  # a frame with no face found is not flagged
        "mean_p_fake": float(scores_arr.mean()) if len(scores) else float("nan"),
        "threshold": float(meta.threshold),
    }


def _merge_flags(parts: list[dict]) -> dict:
    frames = sum(p["frames"] for p in parts)
    found = sum(p["faces_found"] for p in parts)
    flagged = sum(p["flagged"] for p in parts)
    mean = sum(p["mean_p_fake"] * p["faces_found"] for p in parts if p["faces_found"]) / found if found else float("nan")
    return {"frames": frames, "faces_found": found, "faces_missed": sum(p["faces_missed"] for p in parts),
            "flagged": flagged, "flagged_share": flagged / frames if frames else float("nan"), "mean_p_fake": mean,
            "threshold": parts[0]["threshold"]}


def evaluate_swapper(checkpoint_path, faces_a=None, faces_b=None, detector_path=None, engine: str = "auto",
                     holdout: float | None = None, samples_out=None, threads: int | None = None,
                     face_detector: str | None = None, echo=print) -> dict:
    """PSNR/SSIM of held-back reconstructions and, with a detector, the share of swapped frames it flags.

    Swaps go both ways (A's held-back frames made into B, B's into A), pasted back into the
    full frames with :func:`engines.blending.paste_swapped_face`, then judged by the detector
    at its own threshold, next to its verdicts on the same frames unswapped."""
    from engines.metadata import ModelMetadata
    from train.common import set_threads
    from engines.networks import load_checkpoint

    set_threads(threads)
    model, state = load_checkpoint(checkpoint_path)
    metadata = ModelMetadata.from_dict(state["metadata"])
    metadata.expect_kind("swapper", checkpoint_path)
    training = metadata.training
    saved = state.get("extra", {}).get("config", {})
    faces_a = faces_a or training.get("faces_a")
    faces_b = faces_b or training.get("faces_b")
    if not faces_a or not faces_b:
        raise ValueError("the checkpoint does not say which faces it was trained on: give --faces-a and --faces-b")
    holdout = training.get("holdout", 0.15) if holdout is None else holdout
    names = training.get("identities") or [Path(str(faces_a)).stem, Path(str(faces_b)).stem]
    every = training.get("every_n_frames", 2)
    max_frames = training.get("max_frames")
    face_detector = face_detector or saved.get("face_detector", "auto")
    size, margin = metadata.input_size[0], metadata.crop_margin
    keep = detector_path is not None or samples_out is not None
    detector = None
    if detector_path is not None:  # loaded first: a wrong model fails before any work is done
        from engines.loader import load_engine

        detector = load_engine(detector_path, engine=engine, threads=threads, kind="detector")
    identities = [load_identity(names[0], faces_a, size, margin, holdout, every, max_frames, face_detector, keep),
                  load_identity(names[1], faces_b, size, margin, holdout, every, max_frames, face_detector, keep)]
    result = {"checkpoint": str(checkpoint_path), "identities": names, "holdout": holdout,
              "reconstruction": evaluate_reconstruction(model, identities, metadata)}
    rec = result["reconstruction"]
    echo(f"held-back reconstruction ({rec.get('held_back_crops', 0)} crops, last {holdout:.0%} of each person): "
         f"PSNR {rec.get('psnr', float('nan')):.2f} dB, SSIM {rec.get('ssim', float('nan')):.3f} | "
         f"{names[0]} {rec.get('psnr_a', float('nan')):.2f} dB / {rec.get('ssim_a', float('nan')):.3f}, "
         f"{names[1]} {rec.get('psnr_b', float('nan')):.2f} dB / {rec.get('ssim_b', float('nan')):.3f}")

    if keep:
        swapped = {"a_as_b": swap_frames(model, identities[0], "b", metadata),
                   "b_as_a": swap_frames(model, identities[1], "a", metadata)}
        if samples_out is not None:
            import cv2

            out = Path(samples_out)
            out.mkdir(parents=True, exist_ok=True)
            for direction, frames in swapped.items():
                for i, frame in enumerate(frames):
                    cv2.imwrite(str(out / f"{direction}_{i:04d}.jpg"), frame)
            result["samples_out"] = str(out)
            echo(f"wrote {sum(len(f) for f in swapped.values())} swapped frames to {out}")
        if detector is not None:
            try:
                originals = [f.frame for ident in identities for f in ident.held_faces]
                result["detector"] = {"model": str(detector_path), "name": detector.metadata.name,
                                      "threshold": float(detector.metadata.threshold)}
                result["swapped"] = {d: flag_frames(frames, detector, face_detector) for d, frames in swapped.items()}
                result["swapped"]["all"] = _merge_flags(list(result["swapped"].values()))
                result["original"] = flag_frames(originals, detector, face_detector)
            finally:
                detector.close()
            s, o = result["swapped"]["all"], result["original"]
            echo(f"detector {detector.metadata.name} at threshold {s['threshold']:.2f}: flags {s['flagged']}/{s['frames']} "
                 f"swapped frames ({s['flagged_share']:.1%}; mean P(fake) {s['mean_p_fake']:.3f}) and "
                 f"{o['flagged']}/{o['frames']} of the same frames unswapped ({o['flagged_share']:.1%}; "
                 f"mean P(fake) {o['mean_p_fake']:.3f})")
    return result
