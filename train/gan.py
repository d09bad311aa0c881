"""Train a DCGAN on face crops: ``dfstream train gan --faces DIR|VIDEO``.

As Radford et al.: 64 x 64 images, z ~ N(0, 1) of 100 dimensions, transposed-conv
generator with batch norm, strided-conv discriminator with LeakyReLU(0.2), binary
cross-entropy, Adam(2e-4, betas 0.5/0.999), batch 128.  Faces are aligned crops cut
by the pipeline's own source and detect stages (:mod:`stages.faces`).

Label convention: the discriminator is trained with 1 = *generated*, so the same
network, exported, is a dfstream detector (crop -> P(fake)).  The checkpoint
(``checkpoints/last.pt``) is a dfstream-checkpoint-v1 of family
``dcgan_discriminator`` with detector metadata; the generator and both optimisers
ride along for ``--resume`` and ``--samples-out``.  So::

    dfstream train gan --faces ../shared/data/real/liveportrait_driving_videos --run-dir runs/gan
    dfstream export runs/gan/checkpoints/last.pt gan_disc.onnx    # a detector model
    dfstream eval -m gan_disc.onnx ...                              # judged like any detector
    dfstream train gan --checkpoint runs/gan/checkpoints/last.pt --samples-out fakes/gan 500

Each epoch TensorBoard gets both losses (per step), D(x) and D(G(z)), and a grid of
64 samples from a fixed noise batch (also saved as ``samples/epoch_NNN.png``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from train.settings import GanTraining

log = logging.getLogger("dfstream.train.gan")

DEFAULTS = asdict(GanTraining())  # the settings a run starts from (train/settings.py)
# settings a resumed run takes from its checkpoint whatever the command line says: they fix the data and the network
RESUME_KEEPS = ("image_size", "crop_margin", "every_n_frames", "max_frames", "z_dim", "ngf", "ndf", "face_detector")

FIXED_SAMPLES = 64


def _detector_metadata(config: dict, faces: int, epoch: int, step: int, metrics: dict, device: str = "cpu"):
    from train.common import p_fake_metadata

    size = int(config["image_size"])
    return p_fake_metadata(
        f"dcgan-discriminator-{Path(str(config['faces']).rstrip('/')).stem}", size, config["crop_margin"],
        f"dcgan_discriminator:ndf={config['ndf']},image_size={size}",
        training={
            "faces": str(config["faces"]),
            "crops": int(faces),
            "every_n_frames": config["every_n_frames"],
            "epochs": int(epoch),
            "steps": int(step),
            "batch_size": config["batch_size"],
            "lr": config["lr"],
            "betas": [config["beta1"], 0.999],
            "z_dim": config["z_dim"],
            "seed": config["seed"],
            "device": device,
            "fakes": "DCGAN generator samples (trained jointly); P(fake) = P(generated)",
            "command": config.get("command", ""),
        },
        metrics=metrics,
        extra={"generator": {"z_dim": config["z_dim"], "ngf": config["ngf"], "image_size": size}},
    )


def _grid(images, nrow: int = 8) -> np.ndarray:
    """[-1, 1] RGB NCHW tensor -> uint8 RGB H x W x 3 grid."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().cpu(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    return (grid.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def _face_tensor(faces, config: dict, size: int, echo, threads_note: str):
    """The faces found in ``faces`` as one N x 3 x size x size tensor in [-1, 1] (the generator's tanh range)."""
    from train.swapper import collect_faces, to_tensor

    started = time.time()
    found = collect_faces(faces, size, float(config["crop_margin"]), int(config["every_n_frames"]), config["max_frames"],
                          config["face_detector"], desc="faces")
    if len(found) < 2:
        raise ValueError(f"found {len(found)} face(s) in {faces}; a GAN needs many")
    crops = np.stack([f.crop for f in found])
    echo(f"faces: {len(crops)} crops {size}x{size} (margin {config['crop_margin']}) in {time.time() - started:.1f}s; {threads_note}")
    return to_tensor(crops, "RGB").mul_(2).sub_(1)


def _train_step(generator, discriminator, opt_g, opt_d, real, z_dim: int, bce) -> dict:
    """One discriminator step and one generator step on a batch of real faces; the step's losses."""
    import torch

    # discriminator: real -> 0 (not generated), G(z) -> 1 (generated)
    fake = generator(torch.randn(len(real), z_dim, device=real.device))
    real_logits = discriminator.logits(real)
    fake_logits = discriminator.logits(fake.detach())
    loss_d = bce(real_logits, torch.zeros_like(real_logits)) + bce(fake_logits, torch.ones_like(fake_logits))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    # generator: wants D to call its images real (the non-saturating loss of the paper)
    gen_logits = discriminator.logits(fake)
    loss_g = bce(gen_logits, torch.zeros_like(gen_logits))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
            "d_real": torch.sigmoid(real_logits).mean().item(),  # P(fake) on real faces: low is right
            "d_fake": torch.sigmoid(fake_logits).mean().item()}  # P(fake) on generated: high is right


def train_gan(faces, run_dir, resume: bool = False, echo=print, **options) -> dict:
    """Train (or ``resume``) a DCGAN on the faces in ``faces``; returns a summary."""
    import cv2
    import torch

    from train.common import (LossWindow, device_name, open_run, resume_from, save_checkpoint, seed_everything, set_threads,
                              training_device)
    from train.loop import LoopConfig, TrainingLoop, tensorboard_writer
    from engines.networks.dcgan import build, build_generator

    config = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    config.update(faces=str(faces), run_dir=str(run_dir))
    from stages.faces import list_media

    if not list_media(faces):  # before the run folder is made: a typo must not leave one behind
        raise FileNotFoundError(f"no images or videos in {faces}")
    device = training_device(config["device"])  # likewise: a GPU asked for must be there
    run, checkpoint = open_run(run_dir, config, resume, kept=RESUME_KEEPS)
    seed_everything(int(config["seed"]))
    threads = set_threads(config["threads"])
    size = int(config["image_size"])

    started = time.time()
    data = _face_tensor(faces, config, size, echo, f"{threads} threads, training on {device_name(device)}").to(device)

    z_dim = int(config["z_dim"])
    generator = build_generator(z_dim=z_dim, ngf=int(config["ngf"]), image_size=size)
    discriminator = build(ndf=int(config["ndf"]), image_size=size)
    generator.to(device)  # before the optimisers take their parameters
    discriminator.to(device)
    betas = (float(config["beta1"]), 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=float(config["lr"]), betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=float(config["lr"]), betas=betas)
    step, epoch = 0, 0
    if checkpoint is not None:
        step, epoch = resume_from(checkpoint, discriminator, opt_d, extra_state={"generator": generator, "optimizer_g": opt_g})
        echo(f"resumed {run.latest_checkpoint()} at epoch {epoch}, step {step}")
    fixed_noise = torch.randn(FIXED_SAMPLES, z_dim, generator=torch.Generator().manual_seed(int(config["seed"]))).to(device)
    architecture = {"family": "dcgan_discriminator", "ndf": int(config["ndf"]), "image_size": size, "channels": 3}
    generator_arch = {"z_dim": z_dim, "ngf": int(config["ngf"]), "image_size": size, "channels": 3}
    writer = tensorboard_writer(run.path, step)
    samples_dir = run.path / "samples"
    samples_dir.mkdir(exist_ok=True)
    if epoch == 0:
        real_grid = _grid(data[:FIXED_SAMPLES])
        writer.add_image("samples/real", real_grid, 0, dataformats="HWC")
        cv2.imwrite(str(samples_dir / "real.png"), real_grid[..., ::-1])

    bce = torch.nn.BCEWithLogitsLoss()
    batch_size = min(int(config["batch_size"]), len(data))
    epochs = int(config["epochs"])
    window = LossWindow(max(1, min(20, (epochs * max(1, len(data) // batch_size) - step) // 5)))
    first_losses = checkpoint["extra"].get("first_losses", {}) if checkpoint is not None else {}
    metrics = dict(checkpoint["metadata"].get("metrics", {})) if checkpoint is not None else {}
    steps_per_epoch = max(1, len(data) // batch_size)
    # an epoch cut short by --minutes is not counted (--resume redoes it): whole epochs are left from any start
    total = step + (epochs - epoch) * steps_per_epoch if epoch < epochs else step
    current = {"epoch": epoch, "order": None, "i": 0, "done": 0, "sums": {}}  # the epoch being trained

    def save(at: int) -> Path:
        summary = window.summary()
        firsts = {**{k: v[0] for k, v in summary.items()}, **first_losses}
        meta = _detector_metadata(config, len(data), current["epoch"], at, metrics, device_name(device))
        return save_checkpoint(run.checkpoint_path(), discriminator, architecture, meta, optimizer=opt_d, step=at,
                               epoch=current["epoch"], extra={"config": config, "generator_architecture": generator_arch,
                                                              "first_losses": firsts},
                               extra_state={"generator": generator, "optimizer_g": opt_g})

    def one_step(done: int) -> dict:
        if current["i"] == 0:  # an epoch starts
            generator.train()
            discriminator.train()
            current.update(order=torch.randperm(len(data)), done=0,
                           sums={"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0})
        i = current["i"]
        real = data[current["order"][i * batch_size:(i + 1) * batch_size]]
        if config["flip"]:
            flip = (torch.rand(len(real)) < 0.5).to(device)
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        losses = _train_step(generator, discriminator, opt_g, opt_d, real, z_dim, bce)
        window.add(losses)
        for k, v in losses.items():
            current["sums"][k] += v
        current["done"] += 1
        current["i"] = (i + 1) % steps_per_epoch
        if current["i"] == 0:
            current["epoch"] += 1
        return losses

    def end_epoch(at: int, final: bool) -> None:
        """At each epoch's end (and on a time stop inside one): the epoch's means, a sample grid, last.pt."""
        nonlocal metrics
        done = current["done"]
        if done:
            partial = current["i"] > 0
            name = f"epoch_{current['epoch'] + 1:03d}_partial.png" if partial else f"epoch_{current['epoch']:03d}.png"
            sums = current["sums"]
            for k, v in sums.items():
                writer.add_scalar(f"epoch/{k}", v / done, at)
            generator.eval()
            with torch.no_grad():
                grid = _grid(generator(fixed_noise))
            writer.add_image("samples/generated", grid, at, dataformats="HWC")
            cv2.imwrite(str(samples_dir / name), grid[..., ::-1])
            metrics = {"epoch": current["epoch"], "loss_d": round(sums["loss_d"] / done, 4),
                       "loss_g": round(sums["loss_g"] / done, 4), "p_fake_real": round(sums["d_real"] / done, 4),
                       "p_fake_generated": round(sums["d_fake"] / done, 4)}
        save(at)

    if epoch >= epochs:
        echo(f"nothing to do: the run has already trained {epoch} of --epochs {epochs}")
    tags = {"loss_d": "loss/discriminator", "loss_g": "loss/generator", "d_real": "p_fake/real", "d_fake": "p_fake/generated"}
    loop = TrainingLoop(
        LoopConfig(total=total, start=step, started=started,
                   time_limit_s=60.0 * float(config["minutes"]) if config["minutes"] else None,
                   log_every=int(config["log_every"]), checkpoint_every=steps_per_epoch, checkpoint_origin=step,
                   saved_at_start=checkpoint is not None, desc="dcgan", unit="step"),
        step=one_step, save=end_epoch, writer=writer,
        scalars=lambda at, values: {tag: values[-1][k] for k, tag in tags.items()},
        postfix=lambda v: {"d": f"{v['loss_d']:.3f}", "g": f"{v['loss_g']:.3f}"})
    result = loop.run()
    step, epoch = result.step, current["epoch"]
    if result.out_of_time:
        echo(f"stopping in epoch {epoch + 1} at step {step}: --minutes {config['minutes']} reached")
    writer.close()

    windows = window.summary()
    for k, v in first_losses.items():
        if k in windows:
            windows[k] = (v, windows[k][1])
    if windows:
        echo(f"losses (mean of first -> last {window.size} steps): " + ", ".join(f"{k} {a:.4f} -> {b:.4f}" for k, (a, b) in windows.items()))
    echo(f"checkpoint {run.checkpoint_path()} (epoch {epoch}, step {step}, {time.time() - started:.0f}s); "
         f"samples in {samples_dir}; TensorBoard: tensorboard --logdir {run.path}")
    return {"epoch": epoch, "step": step, "losses": windows, "metrics": metrics, "seconds": time.time() - started,
            "checkpoint": str(run.checkpoint_path()), "run_dir": str(run.path)}


def load_generator(checkpoint_path):
    """The generator saved beside a DCGAN discriminator checkpoint (weights_only load)."""
    from train.common import load_checkpoint
    from engines.networks.dcgan import build_generator

    checkpoint = load_checkpoint(checkpoint_path)
    arch = checkpoint.get("extra", {}).get("generator_architecture")
    state = checkpoint.get("extra_state", {}).get("generator")
    if arch is None or state is None:
        raise ValueError(f"{checkpoint_path} holds no DCGAN generator (was it written by `dfstream train gan`?)")
    generator = build_generator(**arch)
    generator.load_state_dict(state)
    generator.eval()
    return generator, checkpoint


def write_samples(checkpoint_path, out_dir, count: int, seed: int = 0, scale: int = 1, pad: float = 0.0,
                  batch_size: int = 64, echo=print) -> list[Path]:
    """Write ``count`` generated faces as PNGs (BGR, like any image) to ``out_dir``.

    The images are aligned crops at the GAN's geometry.  ``scale`` enlarges them and ``pad``
    adds that share of the size on each side (edge pixels replicated), which helps a face
    detector that does not expect a face filling the whole picture find them again --
    how they can serve as extra fakes for detector training."""
    import cv2
    import torch

    generator, _ = load_generator(checkpoint_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch_gen = torch.Generator().manual_seed(int(seed))
    written = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            images = generator(torch.randn(n, generator.z_dim, generator=torch_gen))
            images = ((images.permute(0, 2, 3, 1).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)[..., ::-1]
            for i, image in enumerate(images):
                if scale > 1:
                    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                if pad > 0:
                    p = int(round(pad * image.shape[0]))
                    image = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_REPLICATE)
                path = out / f"dcgan_{seed:04d}_{start + i:06d}.png"
                cv2.imwrite(str(path), np.ascontiguousarray(image))
                written.append(path)
    echo(f"wrote {len(written)} generated faces to {out}")
    return written
