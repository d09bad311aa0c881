"""Click commands for the generative models: ``dfstream train swapper``, ``dfstream train gan``,
``dfstream eval-swap``.

:mod:`dfstream.cli.main` adds these command objects to the ``dfstream`` group.  Every
user mistake (missing file, no faces found, a run folder that already holds a run,
a model of the wrong kind) ends in one ``click.ClickException`` line and a non-zero exit.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from dfstream.cli.common import device_option, one_line_error, user_errors, verbose_logging
from engines.loader import ENGINE_CHOICES
from train.settings import GanTraining, SwapperTraining


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _json_default(value):
    if isinstance(value, float) and value != value:  # NaN
        return None
    return str(value)


def _write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
        _echo(f"wrote {path}")


_face_detector_option = click.option(
    "--face-detector", default="auto", show_default=True, metavar="auto|yunet|yunet-opencv|scrfd|haar|PATH",
    help="Face detector used to cut the crops (the pipeline's detect stage).")
_threads_option = click.option("--threads", type=click.IntRange(1), default=None,
                               help="torch CPU threads (default: the cores this process may use).")


@click.command("swapper")
@click.option("--faces-a", required=True, metavar="DIR|VIDEO", help="Images or videos of person A.")
@click.option("--faces-b", required=True, metavar="DIR|VIDEO", help="Images or videos of person B.")
@click.option("--name-a", help="Name of person A (default: the file or folder name).")
@click.option("--name-b", help="Name of person B (default: the file or folder name).")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False), help="Run folder: config, TensorBoard events, samples, checkpoints.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--steps", type=click.IntRange(1), default=SwapperTraining.steps, show_default=True, help="Total optimiser steps (a resumed run continues up to this).")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=SwapperTraining.minutes, help="Stop after this much wall time (and save).")
@click.option("--batch-size", type=click.IntRange(1), default=SwapperTraining.batch_size, show_default=True, help="Crops of each person per step.")
@click.option("--input-size", type=click.IntRange(32), default=SwapperTraining.input_size, show_default=True, help="Square crop size (a multiple of 16).")
@click.option("--crop-margin", type=click.FloatRange(0.5, 3.0), default=SwapperTraining.crop_margin, show_default=True, help="Alignment margin of the crops (1.0 = ArcFace layout).")
@click.option("--every-n-frames", type=click.IntRange(1), default=SwapperTraining.every_n_frames, show_default=True, help="Use every n-th video frame.")
@click.option("--max-frames", type=click.IntRange(1), default=SwapperTraining.max_frames, help="Sampled frames per video at most.")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=SwapperTraining.holdout, show_default=True, help="Share of each person's crops (the last ones) held back for PSNR/SSIM.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=SwapperTraining.lr, show_default=True, help="Adam learning rate (betas 0.5, 0.999).")
@click.option("--ssim-weight", type=click.FloatRange(0), default=SwapperTraining.ssim_weight, show_default=True, help="Weight of the structural (1 - SSIM) term.")
@click.option("--adv-weight", type=click.FloatRange(0), default=SwapperTraining.adv_weight, show_default=True, help="Weight of the adversarial term (0: no discriminator).")
@click.option("--warp/--no-warp", default=SwapperTraining.warp, show_default=True, help="Random warps of the input faces.")
@click.option("--colour/--no-colour", default=SwapperTraining.colour, show_default=True, help="Random colour changes.")
@click.option("--target", type=click.Choice(["a", "b"]), default=SwapperTraining.target, show_default=True, help="Whose decoder the exported swapper draws with (b: faces become B).")
@click.option("--latent", type=click.IntRange(16), default=SwapperTraining.latent, show_default=True, help="Bottleneck width of the shared encoder.")
@click.option("--encoder-channels", default=",".join(map(str, SwapperTraining.encoder_channels)), show_default=True, metavar="C1,C2,...",
              help="Channels of the encoder's strided convs (one per halving; decoders mirror them).")
@click.option("--sample-every", type=click.IntRange(1), default=SwapperTraining.sample_every, show_default=True, help="Steps between sample-swap grids.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=SwapperTraining.checkpoint_every, show_default=True, help="Steps between checkpoints (also written at the end).")
@click.option("--seed", type=int, default=SwapperTraining.seed, show_default=True)
@device_option(SwapperTraining.device)
@_threads_option
@_face_detector_option
@click.option("--json", "json_path", metavar="PATH", help="Write the run summary (losses, PSNR/SSIM) as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def train_swapper_command(faces_a, faces_b, name_a, name_b, run_dir, resume, steps, minutes, batch_size, input_size,
                          crop_margin, every_n_frames, max_frames, holdout, lr, ssim_weight, adv_weight, warp, colour,
                          target, latent, encoder_channels, sample_every, checkpoint_every, seed, device, threads, face_detector,
                          json_path, verbose):
    """Train a face swapper (shared encoder, a decoder per person, reconstruction + adversarial loss).

    \b
    Example:
      dfstream train swapper --faces-a ../shared/data/real/liveportrait_driving_videos/d3.mp4 \\
          --faces-b ../shared/data/real/liveportrait_driving_videos/d10.mp4 --run-dir runs/swap --minutes 5
      dfstream eval-swap runs/swap/checkpoints/last.pt --detector detector.onnx
      dfstream export runs/swap/checkpoints/last.pt swapper.onnx
    """
    from train.swapper import train_swapper

    verbose_logging(verbose)
    try:
        channels = [int(c) for c in encoder_channels.split(",") if c.strip()]
    except ValueError:
        channels = []
    if not channels or min(channels) < 4:
        raise click.BadParameter("comma-separated channel counts (each >= 4), e.g. 32,64,128,256", param_hint="--encoder-channels")
    if input_size % (2 ** len(channels)):
        raise click.BadParameter(f"must be a multiple of {2 ** len(channels)} with {len(channels)} encoder levels",
                                 param_hint="--input-size")
    try:
        summary = train_swapper(
            faces_a, faces_b, run_dir, name_a=name_a, name_b=name_b, resume=resume, echo=_echo, steps=steps,
            minutes=minutes, batch_size=batch_size, input_size=input_size, crop_margin=crop_margin,
            every_n_frames=every_n_frames, max_frames=max_frames, holdout=holdout, lr=lr, ssim_weight=ssim_weight,
            adv_weight=adv_weight, warp=warp, colour=colour, target=target, latent=latent, encoder_channels=channels, sample_every=sample_every,
            checkpoint_every=checkpoint_every, seed=seed, device=device, threads=threads, face_detector=face_detector)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    _write_json(json_path, summary)
    click.echo(summary["checkpoint"])


@click.command("gan")
@click.option("--faces", metavar="DIR|VIDEO", help="Images or videos of real faces to learn from.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder: config, TensorBoard events, sample grids, checkpoints.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--epochs", type=click.IntRange(1), default=GanTraining.epochs, show_default=True, help="Total epochs (a resumed run continues up to this).")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=GanTraining.minutes, help="Stop after this much wall time (and save).")
@click.option("--batch-size", type=click.IntRange(2), default=GanTraining.batch_size, show_default=True)
@click.option("--image-size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True)
@click.option("--crop-margin", type=click.FloatRange(0.5, 3.0), default=GanTraining.crop_margin, show_default=True,
              help="Alignment margin of the crops; the exported discriminator is run on crops cut like this.")
@click.option("--every-n-frames", type=click.IntRange(1), default=GanTraining.every_n_frames, show_default=True, help="Use every n-th video frame.")
@click.option("--max-frames", type=click.IntRange(1), default=GanTraining.max_frames, help="Sampled frames per video at most.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=GanTraining.lr, show_default=True)
@click.option("--beta1", type=click.FloatRange(0, 1), default=GanTraining.beta1, show_default=True)
@click.option("--z-dim", type=click.IntRange(1), default=GanTraining.z_dim, show_default=True)
@click.option("--ngf", type=click.IntRange(4), default=GanTraining.ngf, show_default=True, help="Generator width (the paper: 64; smaller is faster on CPU).")
@click.option("--ndf", type=click.IntRange(4), default=GanTraining.ndf, show_default=True, help="Discriminator width.")
@click.option("--seed", type=int, default=GanTraining.seed, show_default=True)
@device_option(GanTraining.device)
@_threads_option
@_face_detector_option
@click.option("--samples-out", nargs=2, type=(click.Path(file_okay=False), click.IntRange(1)), default=None,
              metavar="DIR N", help="Write N generated faces as PNGs to DIR (after training, or from --checkpoint).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="With --samples-out and no --faces: generate from this DCGAN checkpoint.")
@click.option("--samples-scale", type=click.IntRange(1, 8), default=4, show_default=True, help="Enlarge written samples this many times.")
@click.option("--samples-pad", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Border (share of the size, edge pixels replicated) around written samples, so a face detector finds them.")
@click.option("--samples-seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", metavar="PATH", help="Write the run summary as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def train_gan_command(faces, run_dir, resume, epochs, minutes, batch_size, image_size, crop_margin, every_n_frames,
                      max_frames, lr, beta1, z_dim, ngf, ndf, seed, device, threads, face_detector, samples_out, checkpoint,
                      samples_scale, samples_pad, samples_seed, json_path, verbose):
    """Train a DCGAN on face crops; the discriminator is saved as a detector model.

    \b
    Examples:
      dfstream train gan --faces ../shared/data/real/liveportrait_driving_videos --run-dir runs/gan --ngf 32 --ndf 32
      dfstream export runs/gan/checkpoints/last.pt gan-discriminator.onnx
      dfstream train gan --checkpoint runs/gan/checkpoints/last.pt --samples-out fakes/dcgan 500
    """
    from train.gan import train_gan, write_samples

    verbose_logging(verbose)
    if not faces and not (checkpoint and samples_out):
        raise click.UsageError("give --faces (to train), or --checkpoint with --samples-out (to generate)")
    if faces and not run_dir:
        raise click.UsageError("--run-dir is required for training")
    if faces and checkpoint:
        raise click.UsageError("--checkpoint is for generating only; to continue a run use --run-dir with --resume")
    summary = {}
    try:
        if faces:
            summary = train_gan(faces, run_dir, resume=resume, echo=_echo, epochs=epochs, minutes=minutes,
                                batch_size=batch_size, image_size=int(image_size), crop_margin=crop_margin,
                                every_n_frames=every_n_frames, max_frames=max_frames, lr=lr, beta1=beta1, z_dim=z_dim,
                                ngf=ngf, ndf=ndf, seed=seed, device=device, threads=threads, face_detector=face_detector)
            checkpoint = summary["checkpoint"]
        if samples_out:
            out_dir, count = samples_out
            written = write_samples(checkpoint, out_dir, count, seed=samples_seed, scale=samples_scale, pad=samples_pad,
                                    echo=_echo)
            summary["samples_out"] = {"dir": str(out_dir), "count": len(written)}
    except user_errors() as exc:
        raise one_line_error(exc) from None
    _write_json(json_path, summary)
    if faces:
        click.echo(summary["checkpoint"])


@click.command("eval-swap")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--faces-a", metavar="DIR|VIDEO", help="Person A's media (default: what the checkpoint was trained on).")
@click.option("--faces-b", metavar="DIR|VIDEO", help="Person B's media (default: what the checkpoint was trained on).")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=None, help="Held-back share (default: the training run's).")
@click.option("--detector", "detector_path", metavar="MODEL",
              help="Detector model (file or registry name): report the share of swapped frames it flags at its threshold.")
@click.option("--engine", default="auto", show_default=True, type=click.Choice(ENGINE_CHOICES),
              help="Runtime for the detector.")
@click.option("--samples-out", type=click.Path(file_okay=False), help="Write the swapped held-back frames here as JPEGs.")
@click.option("--json", "json_path", metavar="PATH", help="Write all figures as JSON.")
@_threads_option
@_face_detector_option
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def swapper_eval_command(checkpoint, faces_a, faces_b, holdout, detector_path, engine, samples_out, json_path, threads,
                         face_detector, verbose):
    """Judge a swapper checkpoint: PSNR/SSIM of held-back reconstructions, and how often a detector catches its swaps.

    \b
    Example:
      dfstream eval-swap runs/swap/checkpoints/last.pt --detector detector.onnx --json swap-eval.json
    """
    from train.swapper import evaluate_swapper

    verbose_logging(verbose)
    try:
        result = evaluate_swapper(checkpoint, faces_a=faces_a, faces_b=faces_b, detector_path=detector_path, engine=engine,
                                  holdout=holdout, samples_out=samples_out, threads=threads,
                                  face_detector=None if face_detector == "auto" else face_detector, echo=_echo)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    _write_json(json_path, result)
    rec = result["reconstruction"]
    line = f"psnr {rec.get('psnr', float('nan')):.2f} ssim {rec.get('ssim', float('nan')):.3f}"
    if "swapped" in result:
        line += f" flagged_swapped {result['swapped']['all']['flagged_share']:.3f} flagged_original {result['original']['flagged_share']:.3f}"
    click.echo(line)
