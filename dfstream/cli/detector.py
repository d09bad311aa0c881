"""Click commands for the deepfake detector: ``dfstream train detector``, ``dfstream eval``, ``dfstream predict``.

:mod:`dfstream.cli.main` adds these command objects to the ``dfstream`` group.
Every user mistake (missing file, not an image/video, a model of the wrong kind)
ends in one ``click.ClickException`` line and a non-zero exit.
"""
from __future__ import annotations

import json
import sys

import click

from dfstream.cli.common import device_option, one_line_error, progress_bars, user_errors, verbose_logging
from engines.loader import ENGINE_CHOICES
from pipeline.config import CLASSIFY_EVERY
from train.recon import EDGE_WEIGHT, PATCH, UPSAMPLING
from train.settings import DetectorTraining
from train.sharpness import GRADE_SETTINGS as SHARPNESS_GRADES


def webcam_grade_options(function):
    """--low-light, --frame-scale or --face-height, --jpeg-quality and --h264-kbps: score frames as a video call
    would deliver them. The command receives them as one ``degradation`` (stages.faces.Degradation)."""
    import functools

    @functools.wraps(function)  # keeps the options declared below it (click's __click_params__)
    def command(*args, frame_scale, jpeg_quality, h264_kbps, low_light, face_height, **kwargs):
        from stages.faces import Degradation

        try:
            degradation = Degradation(frame_scale, jpeg_quality, h264_kbps, low_light, face_height)
        except ValueError as exc:
            raise one_line_error(exc) from None
        return function(*args, degradation=degradation, **kwargs)

    command = click.option("--face-height", type=click.IntRange(min=16), default=None, metavar="PX",
                           help="Webcam-grade input, instead of --frame-scale: shrink each file so that its largest face "
                                "(in its first frame) is at most PX tall -- faces of one resolution, whatever their "
                                "files' resolution.")(command)
    command = click.option("--low-light", type=click.FloatRange(0.005, 1.0), default=None, metavar="SHARE",
                           help="Webcam-grade input: a dim room -- this share of the light (0.1: ten times darker), "
                                "brought back up by the camera's gain with the sensor noise that comes with it "
                                "(before --frame-scale and the codec).")(command)
    command = click.option("--h264-kbps", type=click.IntRange(min=10), default=None, metavar="KBIT/S",
                           help="Webcam-grade input: re-encode each video's frames, in order, with H.264 at this "
                                "bitrate (after --frame-scale), as a stream delivers them; photos are only "
                                "scaled. Not with --jpeg-quality.")(command)
    command = click.option("--jpeg-quality", type=click.IntRange(1, 100), default=None,
                           help="Webcam-grade input: JPEG-compress every frame at this quality (a per-frame "
                                "stand-in for a stream's codec).")(command)
    return click.option("--frame-scale", type=click.FloatRange(0.05, 1.0), default=1.0, show_default=True,
                        help="Webcam-grade input: shrink every frame to this share of its sides before faces are "
                             "found (smaller faces, as a call's video delivers them).")(command)


@click.command("detector")
@click.option("--data", multiple=True, help="Labelled folder (real/ and fake/ inside) or list file of 'path<TAB>label' lines. Repeatable.")
@click.option("--real", multiple=True, help="Folder or file of real images/videos. Repeatable.")
@click.option("--fake", multiple=True, help="Folder or file of fake images/videos. Repeatable.")
@click.option("--pack", multiple=True, help="Face pack (`dfstream train pack`): media already cut into faces, for a "
              "machine without the media or a video decoder. Repeatable; with or instead of --data/--real/--fake.")
@click.option("--extra-fakes", multiple=True, help="Folder of already aligned fake face crops (e.g. `dfstream train gan "
              "--samples-out`, our swapper's output) added to the training fakes, without face detection. Repeatable.")
@click.option("--extra-fakes-margin", type=float, default=DetectorTraining.extra_fakes_margin, show_default=True,
              help="Alignment margin the --extra-fakes crops were cut with.")
@click.option("--exclude", multiple=True, help="Glob of media to leave out (e.g. held-out clips). Repeatable.")
@click.option("--sbi/--no-sbi", default=DetectorTraining.sbi, show_default=True, help="Synthesise fakes from real faces by self-blending.")
@click.option("--sbi-landmarks", default=DetectorTraining.sbi_landmarks, show_default=True, metavar="MODEL|auto|none",
              help="Landmark model whose 68 points shape the self-blending masks (registry name, e.g. pfld68); "
                   "auto: pfld68 when installed; none (or auto without it): a polygon from the face detector's 5 points.")
@click.option("--sbi-curriculum", type=click.IntRange(min=0), default=DetectorTraining.sbi_curriculum, show_default=True, metavar="STEPS",
              help="Easier self-blends first: the source's colour change, shift and blend ratio start twice as strong "
                   "and ease to normal over this many steps (set per epoch), so training leaves chance sooner; 0: off.")
@click.option("--sbi-pairs/--no-sbi-pairs", default=DetectorTraining.sbi_pairs, show_default=True,
              help="Cut and augment each real face and its blend alike, in the same batch (as the SBI paper), so the "
                   "blend is their only difference. The loss falls about twice as soon, but from scratch on "
                   "../shared it generalised worse to unseen videos (README); off: drawn independently.")
@click.option("--sbi-inside/--no-sbi-inside", default=DetectorTraining.sbi_inside, show_default=True,
              help="Keep each self-blend's soft edge inside the face's landmark hull (no forehead hull, the mask eroded "
                   "by its blur), so no seam crosses the face contour into hair or background, as in most face swaps.")
@click.option("--swap-blend", type=click.FloatRange(0, 1), default=DetectorTraining.swap_blend, show_default=True, metavar="SHARE",
              help="This share of the synthesised fakes are made as real-time swappers make a frame: a face of "
                   "another source, warped onto the target, resampled to a generator's resolution, colour-matched "
                   "and blended inside the inner face (train.swapblend); the rest are self-blends.")
@click.option("--smooth-augment/--no-smooth-augment", default=DetectorTraining.smooth_augment, show_default=True,
              help="Add edge-preserving smoothing (what camera denoising, beauty filters and low-bitrate codecs do to "
                   "skin) to the augmentations of real and fake crops alike.")
@click.option("--recon-fakes", multiple=True, default=DetectorTraining.recon_fakes, metavar="AE.pt",
              help="A reconstruction autoencoder (dfstream train recon): with --recon-share, real faces redrawn "
                   "whole by it are fakes too (a frame generated whole has no seam to find). Repeatable: each "
                   "redrawing by one of them at random (e.g. one of each --upsample).")
@click.option("--recon-share", type=click.FloatRange(0, 1), default=DetectorTraining.recon_share, show_default=True,
              metavar="SHARE", help="This share of the synthesised fakes are --recon-fakes redrawings.")
@click.option("--recon-paste", is_flag=True, default=DetectorTraining.recon_paste,
              help="Keep only each redrawing's inner face, rendered into the real frame as a live swapper renders its "
                   "generator's face: low resolution, colour-matched, a soft mask (the swap blends' way, the "
                   "autoencoder as the generator).")
@click.option("--warp-fakes", type=click.FloatRange(0, 1), default=DetectorTraining.warp_fakes, show_default=True,
              metavar="SHARE", help="This share of the synthesised fakes are made as one-shot talking heads make a "
                   "frame: another frame of the same clip warped by a smooth field (thin-plate spline through the "
                   "landmarks) to this frame's pose and expression, then kept whole, pasted back, or given this frame's own "
                   "inner face (train.warpfake).")
@click.option("--webcam-augment/--no-webcam-augment", default=DetectorTraining.webcam_augment, show_default=True,
              help="Degrade half the crops, real and fake alike, as a video call delivers a face: shrunk to 30-70 % "
                   "of its side and JPEG-compressed at quality 30-60.")
@click.option("--blend-map", type=click.FloatRange(min=0), default=DetectorTraining.blend_map, show_default=True, metavar="WEIGHT",
              help="Also teach where each self-blend mixes two images (Face X-ray's boundary map, on the backbone's "
                   "last feature grid; zero for real faces), with this weight beside the real/fake loss; a "
                   "training-only head, not in the exported model. 0: off (here it scored unseen clips lower, research log).")
@click.option("--backbone", default=DetectorTraining.backbone, show_default=True,
              help="ultraface_rfb320: the trunk of the UltraFace face detector, its graph read from the registry model "
                   "ultraface-rfb320 (steadiest across seeds here, see the research log); dlib_face_resnet: dlib's "
                   "face-recognition ResNet up to its 128-channel level (registry model dlib-face-resnet; with "
                   "--pretrained its early levels stay frozen and the rest learns at 0.03 x --lr); or any timm model name "
                   "(mobilenetv3_small_100, efficientnet_b0, xception41, resnet18, resnext50_32x4d ...); "
                   "auto: ultraface_rfb320 when installed, else mobilenetv3_small_100.")
@click.option("--stem", type=click.Choice(["rgb", "srm"]), default=DetectorTraining.stem, show_default=True,
              help="srm: give the backbone fixed high-pass (SRM) residuals of each colour beside the colours.")
@click.option("--pretrained", is_flag=True,
              help="Start from pretrained weights: timm's (must be in the local timm/HF cache), for ultraface_rfb320 "
                   "the face detector's own (WIDER FACE), for dlib_face_resnet dlib's face recogniser's; the last two "
                   "need no internet.")
@click.option("--input-size", type=int, default=DetectorTraining.input_size, show_default=True, help="Square crop size in pixels.")
@click.option("--margin", type=float, default=DetectorTraining.margin, show_default=True, help="Crop margin (>1 keeps the face boundary in the crop).")
@click.option("--batch-size", type=int, default=DetectorTraining.batch_size, show_default=True)
@click.option("--steps", type=int, default=DetectorTraining.steps, show_default=True, help="Optimiser steps in total.")
@click.option("--lr", type=float, default=DetectorTraining.lr, show_default=True)
@click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DetectorTraining.ema, metavar="DECAY",
              help="Also keep an exponential moving average of the weights with this decay (0.999: about the last "
                   "thousand steps), validated beside them and written to checkpoints/ema.pt for export and eval.")
@click.option("--sam", type=click.FloatRange(0, min_open=True), default=DetectorTraining.sam, metavar="RHO",
              help="Sharpness-aware minimisation with this radius (the SBI paper's 0.05): seeks flat minima; each step "
                   "costs two passes. Off by default: it scored unseen clips lower here (research log).")
@click.option("--seed", type=int, default=DetectorTraining.seed, show_default=True)
@device_option(DetectorTraining.device, "Self-blending runs in the --workers on the CPU either way.")
@click.option("--threads", type=int, default=DetectorTraining.threads, help="torch CPU threads (default: usable cores).")
@click.option("--workers", type=int, default=DetectorTraining.workers, show_default=True, help="Data-loading processes (self-blending runs there).")
@click.option("--every-n-frames", type=int, default=DetectorTraining.every_n_frames, show_default=True, help="Video frame sampling for face crops.")
@click.option("--max-frames", type=int, default=DetectorTraining.max_frames, show_default=True, help="Sampled frames per video at most.")
@click.option("--max-faces", type=int, default=DetectorTraining.max_faces, show_default=True, help="Faces per frame at most.")
@click.option("--face-detector", default=DetectorTraining.face_detector, show_default=True)
@click.option("--cache-dir", default=DetectorTraining.cache_dir, help="Face-crop cache (default ~/.cache/dfstream/faces).")
@click.option("--val-fraction", type=float, default=DetectorTraining.val_fraction, show_default=True, help="Fraction of media files held out for validation.")
@click.option("--checkpoint-every", type=int, default=DetectorTraining.checkpoint_every, show_default=True)
@click.option("--log-every", type=int, default=DetectorTraining.log_every, show_default=True)
@click.option("--time-limit", type=float, default=DetectorTraining.time_limit, help="Minutes of wall time; stop and checkpoint after it.")
@click.option("--name", default=DetectorTraining.name, show_default=True, help="Model name written into its metadata.")
@click.option("--run-dir", required=True, help="Run folder: config.json, checkpoints/, TensorBoard events.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--init-from", default=DetectorTraining.init_from, help="Checkpoint whose weights start a new run (fresh optimiser, learning-rate "
              "schedule and step count; unlike --resume, which continues the old schedule).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("-v", "--verbose", is_flag=True)
def train_detector_command(run_dir, resume, progress, verbose, **options):
    """Train the frame-level deepfake detector (self-blended images by default)."""
    verbose_logging(verbose)
    from train.detector import train

    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    try:
        last = train(options, run_dir, resume=resume, progress=progress)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    click.echo(f"checkpoint: {last}")
    click.echo(f"export:     dfstream export {last} -o detector.onnx")


@click.command("pack")
@click.option("--data", multiple=True, help="Labelled folder (real/ and fake/ inside) or list file of 'path<TAB>label' lines. Repeatable.")
@click.option("--real", multiple=True, help="Folder, file or list file of real images/videos. Repeatable.")
@click.option("--fake", multiple=True, help="Folder, file or list file of fake images/videos. Repeatable.")
@click.option("--exclude", multiple=True, help="Glob of media to leave out. Repeatable.")
@click.option("--every-n-frames", type=click.IntRange(1), default=DetectorTraining.every_n_frames, show_default=True)
@click.option("--max-frames", type=click.IntRange(1), default=DetectorTraining.max_frames, show_default=True,
              help="Sampled frames per video at most.")
@click.option("--max-faces", type=click.IntRange(1), default=DetectorTraining.max_faces, show_default=True)
@click.option("--face-detector", default=DetectorTraining.face_detector, show_default=True)
@click.option("--sbi-landmarks", default=DetectorTraining.sbi_landmarks, show_default=True,
              help="Landmark model whose 68 points go into the pack for the self-blending masks (none: leave them out).")
@click.option("--quality", type=click.IntRange(50, 100), default=90, show_default=True, help="JPEG quality of the crops.")
@click.option("--cache-dir", default=None, help="Face-crop cache (default ~/.cache/dfstream/faces).")
@click.option("-o", "--output", required=True, help="The pack to write (.npz).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("-v", "--verbose", is_flag=True)
def train_pack_command(data, real, fake, exclude, every_n_frames, max_frames, max_faces, face_detector, sbi_landmarks,
                       quality, cache_dir, output, progress, verbose):
    """Cut the training media into faces and pack them in one file (`train detector --pack`): training on a
    machine that has neither the media nor a video decoder, such as a lent GPU."""
    verbose_logging(verbose)
    from train.pack import pack_media

    try:
        result = pack_media({"data": list(data), "real": list(real), "fake": list(fake)}, output, exclude=tuple(exclude),
                            every_n_frames=every_n_frames, max_frames=max_frames, max_faces=max_faces,
                            face_detector=face_detector, landmark_model=sbi_landmarks, cache_dir=cache_dir,
                            quality=quality, progress=progress_bars(progress))
    except user_errors() as exc:
        raise one_line_error(exc) from None
    dense = f", {result['dense_landmarks']} landmarks" if result["dense_landmarks"] else ", no dense landmarks"
    click.echo(f"packed {result['faces']} faces of {result['files']} files{dense}: {result['path']} "
               f"({result['bytes'] / 2**20:.1f} MiB)")
    click.echo(f"train:  dfstream train detector --pack {result['path']} --run-dir RUN")


@click.command("sharpness")
@click.option("--real", multiple=True, required=True, help="Folder, file or list file of real images/videos. Repeatable.")
@click.option("--exclude", multiple=True, help="Glob of media to leave out (held-out people). Repeatable.")
@click.option("--sided", type=click.Choice(["smoother", "both"]), default="smoother", show_default=True,
              help="smoother: only a face smoother than real faces' surroundings is suspect (a pasted, re-rendered "
                   "face); both: a sharper one too (but a real photo with a blurred background looks sharper).")
@click.option("--name", default="dfstream-sharpness-contrast", show_default=True, help="Model name written into its metadata.")
@click.option("--grade", "grades", multiple=True, type=click.Choice(list(SHARPNESS_GRADES)), default=("recorded",),
              show_default=True, help="A quality to measure the real faces at (repeatable; the reference pools them): "
                                      "recorded; call (0.35 of each side, H.264 300 kbit/s); dim-call (the same in a "
                                      "tenth of the light); face100 (largest face at most 100 px).")
@click.option("--conditional", is_flag=True, help="Reference as a line in the detail around the face: a real face is "
                                                  "compared with real faces that kept as much detail around them.")
@click.option("--face-detector", default="auto", show_default=True)
@click.option("--cache-dir", default=None, help="Face-crop cache (default ~/.cache/dfstream/faces).")
@click.option("-o", "--output", required=True, help="Checkpoint to write (export it with `dfstream export`).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("-v", "--verbose", is_flag=True)
def train_sharpness_command(real, exclude, sided, name, grades, conditional, face_detector, cache_dir, output, progress,
                            verbose):
    """Measure the sharpness-contrast detector's reference on real faces (no fakes needed, nothing to learn)."""
    verbose_logging(verbose)
    from train.sharpness import fit

    try:
        result = fit(list(real), output, sided=sided, exclude=tuple(exclude), name=name, face_detector=face_detector,
                     cache_dir=cache_dir, progress=progress_bars(progress), grades=tuple(grades), conditional=conditional)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    slope = f", slope {result['slope']:.3f} per unit of log detail around the face" if conditional else ""
    click.echo(f"reference: log contrast {result['mean']:.3f} +- {result['std']:.3f}{slope} over {result['faces']} faces "
               f"of {result['files']} files")
    click.echo(f"checkpoint: {result['checkpoint']}")
    click.echo(f"export:     dfstream export {result['checkpoint']} -o sharpness.onnx")


@click.command("recon")
@click.option("--real", multiple=True, help="Folder, file or list file of real images/videos. Repeatable.")
@click.option("--pack", multiple=True, help="Face pack (`dfstream train pack`): its real faces, with or instead of --real. "
              "Repeatable.")
@click.option("--exclude", multiple=True, help="Glob of media to leave out (held-out people). Repeatable.")
@click.option("--steps", type=click.IntRange(min=1), default=1500, show_default=True)
@click.option("--minutes", type=click.FloatRange(min=0.1), default=None, help="Stop after this much wall time.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--patch", type=click.IntRange(min=8), default=PATCH, show_default=True,
              help="Train on random patches this many px wide (a multiple of 8; 224 = whole crops).")
@click.option("--upsample", type=click.Choice(UPSAMPLING), default=UPSAMPLING[0], show_default=True,
              help="The decoder's upsampling: transposed convolutions (GANs, swappers) or nearest doubling + "
                   "convolution (Stable Diffusion's VAE: diffusion video and talking heads).")
@click.option("--edge-weight", type=click.FloatRange(min=0), default=EDGE_WEIGHT, show_default=True,
              help="Weight of the image-gradient loss beside pixel L1 (0 = pixel L1 only: blurred redrawings).")
@click.option("--face-detector", default="auto", show_default=True)
@click.option("--cache-dir", default=None, help="Face-crop cache (default ~/.cache/dfstream/faces).")
@click.option("-o", "--output", required=True, help="The autoencoder to write (.pt), for train detector --recon-fakes.")
@device_option("auto", "Its weights are saved for the CPU, where the detector's data loading redraws with them.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("-v", "--verbose", is_flag=True)
def train_recon_command(real, pack, exclude, steps, minutes, seed, patch, upsample, edge_weight, face_detector, cache_dir,
                        output, device, progress, verbose):
    """Train the reconstruction autoencoder: real faces redrawn whole, fakes with no seam (train.recon)."""
    verbose_logging(verbose)
    from train.recon import fit

    try:
        result = fit(list(real), output, exclude=tuple(exclude), face_detector=face_detector, cache_dir=cache_dir,
                     packs=tuple(pack), steps=steps, minutes=minutes, seed=seed, patch=patch, upsample=upsample,
                     edge_weight=edge_weight, device=device, progress=progress_bars(progress))
    except user_errors() as exc:
        raise one_line_error(exc) from None
    click.echo(f"autoencoder: {result['steps']} steps on {result['faces']} faces of {result['files']} files, "
               f"final loss {result['final_loss']:.4f}: {result['output']}")


@click.command("ensemble")
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Checkpoint to write (export it with `dfstream export`).")
@click.option("--name", default="dfstream-detector-ensemble", show_default=True, help="Model name written into its metadata.")
def train_ensemble_command(checkpoints, output, name):
    """Combine detector checkpoints (e.g. several training seeds) into one model: the mean of their P(fake)."""
    from train.ensemble import combine

    try:
        path = combine(list(checkpoints), output, name=name)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    click.echo(f"checkpoint: {path} ({len(checkpoints)} members)")
    click.echo(f"export:     dfstream export {path} -o ensemble.onnx")


@click.command("fusion")
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("--real", "real", multiple=True, required=True,
              help="Real media (folders, files or list files) on which each member's logit is standardised; repeatable.")
@click.option("--exclude", multiple=True, help="Glob patterns of media to leave out; repeatable.")
@click.option("-o", "--output", required=True, help="Checkpoint to write (export it with `dfstream export`).")
@click.option("--name", default="dfstream-detector-fusion", show_default=True, help="Model name written into its metadata.")
@click.option("--cache-dir", default=None, help="Face-crop cache (default ~/.cache/dfstream/faces).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
def train_fusion_command(checkpoints, real, exclude, output, name, cache_dir, progress):
    """Fuse detectors that see the face differently (e.g. the sharpness contrast on a wide crop and a CNN on a
    tighter one) into one model: P(fake) = sigmoid of the mean of their logits, each standardised on real faces.
    The fused model takes the widest member's crop and cuts each member's own from it."""
    from train.fusion import combine

    try:
        result = combine(list(checkpoints), list(real), output, name=name, exclude=tuple(exclude), cache_dir=cache_dir,
                         progress=progress_bars(progress))
    except user_errors() as exc:
        raise one_line_error(exc) from None
    spreads = ", ".join(f"{m:+.3f} ± {s:.3f}" for m, s in zip(result["z_mean"], result["z_std"]))
    click.echo(f"checkpoint: {result['checkpoint']} ({len(checkpoints)} members; real logits {spreads} "
               f"on {result['faces']} faces of {result['files']} files)")
    click.echo(f"export:     dfstream export {result['checkpoint']} -o fusion.onnx, then dfstream calibrate")


@click.command("eval")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-m", "--model", default="detector", show_default=True, help="Detector model: .onnx, checkpoint, or registry name.")
@click.option("--engine", default="auto", show_default=True, type=click.Choice(ENGINE_CHOICES))
@click.option("--temporal", default=None, help="Temporal (CNN+LSTM) checkpoint: video scores from it instead of frame averages.")
@click.option("--threshold", type=float, default=None, help="P(fake) threshold (default: the model's).")
@click.option("--every-n-frames", type=int, default=10, show_default=True)
@click.option("--max-frames", type=int, default=32, show_default=True, help="Sampled frames per video at most.")
@click.option("--max-faces", type=int, default=4, show_default=True)
@click.option("--video-agg", type=click.Choice(["mean", "topk"]), default="mean", show_default=True,
              help="Video score: mean of frame scores, or mean of the top quarter.")
@click.option("--threads", type=int, default=None)
@click.option("-o", "--output", default="eval.json", show_default=True, help="JSON file for the metrics and per-item scores.")
@click.option("--plot", "plot_dir", default=None, help="Folder for ROC curve and score histogram PNGs.")
@click.option("--blinks/--no-blinks", default=None, help="Count each video's blinks (68 landmarks over its first "
              "minute, the eyes read at the cadence the model's blink counts were fitted at, else a run's: every "
              f"{CLASSIFY_EVERY} frames). Default: when they are part of the model's video score (its metadata; the "
              "default detector's are). --blinks also reports the blink rate alone as a video score (fewer = fake) beside the model's; "
              "--no-blinks scores with the model's frames alone.")
@click.option("--ci-resamples", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Bootstrap resamples for the ROC-AUCs' 95 % confidence intervals (frames resampled by whole "
                   "videos); 0: none.")
@webcam_grade_options
@click.option("-v", "--verbose", is_flag=True)
def eval_command(inputs, model, engine, temporal, threshold, every_n_frames, max_frames, max_faces, video_agg, threads, output,
                 plot_dir, blinks, ci_resamples, degradation, verbose):
    """Measure a detector on labelled images/videos: folders with real/ and fake/, or list files (path<TAB>label)."""
    verbose_logging(verbose)
    from train.evaluate import evaluate

    try:
        report = evaluate(list(inputs), model=model, engine=engine, temporal=temporal, threshold=threshold,
                          every_n_frames=every_n_frames, max_frames=max_frames, max_faces=max_faces,
                          video_agg=video_agg, threads=threads, output=output, plot_dir=plot_dir,
                          ci_resamples=ci_resamples, degradation=degradation, blinks=blinks)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    click.echo(report["text"])
    click.echo(f"written: {output}" + (f", plots in {plot_dir}" if plot_dir else ""))


@click.group("lofo")
def lofo_group():
    """Leave-one-family-out: the protocol detector choices are made on (train/lofo.py)."""


@lofo_group.command("folds")
@click.option("--manifest", default=None, help="List file with family and group columns (default: train/data/shared_clips.tsv, "
              "the clips of ../shared/data).")
@click.option("-o", "--output", required=True, help="Folder: one sub-folder per held-out family (and final/) with "
              "train.tsv, val.tsv and test.tsv.")
def lofo_folds_command(manifest, output):
    """Write the split of every fold: train on the other families, test on the held-out one and on people no fold trains on."""
    from pathlib import Path

    from train import lofo
    from train.datasets import read_list_file

    try:
        items = read_list_file(manifest or lofo.DEFAULT_MANIFEST)
        for family in lofo.families(items) + [None]:
            fold = lofo.fold(items, family)
            lofo.Fold.write(fold, Path(output) / (family or "final"))
            click.echo(f"{family or 'final':<16} train {len(fold.train):>4}  val {len(fold.val):>4}  test {len(fold.test):>4}"
                       f"  -> {Path(output) / (family or 'final')}")
        reals = lofo.untied_train_reals(items)
        lofo.Fold(None, train=reals).write(Path(output) / "real-only")
        click.echo(f"{'real-only':<16} train {len(reals):>4}  (real files tied to no family: for models that learn "
                   f"from real faces alone, fit for every fold) -> {Path(output) / 'real-only'}")
    except user_errors() as exc:
        raise one_line_error(exc) from None


def _write_lofo_table(result: dict, output: str) -> None:
    """A lofo table: its JSON to ``output``, its text to stdout."""
    from pathlib import Path

    from train.lofo import format_table

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, indent=1))
    click.echo(format_table(result))
    click.echo(f"written: {output}")


@lofo_group.command("score")
@click.option("-m", "--model", "models", multiple=True, required=True,
              help="A model of the recipe, once per seed (file or registry name); with {family} in the path, one "
                   "model per fold, trained without that family.")
@click.option("--temporal", "temporal_models", multiple=True,
              help="A temporal (CNN+LSTM) checkpoint per seed, in the order of -m: video scores from it instead of frame "
                   "averages; {family} as in -m.")
@click.option("--manifest", default=None, help="List file with family and group columns (default: the ../shared manifest).")
@click.option("--family", "families", multiple=True, help="Held-out families to score (default: all). Repeatable.")
@click.option("--engine", default="auto", show_default=True, type=click.Choice(ENGINE_CHOICES))
@click.option("--every-n-frames", type=int, default=10, show_default=True)
@click.option("--max-frames", type=int, default=32, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--ci-resamples", type=click.IntRange(min=0), default=2000, show_default=True)
@webcam_grade_options
@click.option("-o", "--output", default="lofo.json", show_default=True, help="JSON file for the table and every seed's scores.")
@click.option("-v", "--verbose", is_flag=True)
def lofo_score_command(models, temporal_models, manifest, families, engine, every_n_frames, max_frames, threads, ci_resamples,
                       degradation, output, verbose):
    """Score a recipe (its seeds' models) on every held-out family: ROC-AUC per family, mean and spread over seeds."""
    verbose_logging(verbose)
    from train import lofo

    try:
        result = lofo.score(list(models), manifest or lofo.DEFAULT_MANIFEST, list(families) or None,
                            ci_resamples=ci_resamples, temporal=list(temporal_models) or None, engine=engine, every_n_frames=every_n_frames,
                            max_frames=max_frames, threads=threads, degradation=degradation,
                            progress=lambda done, total: click.echo(f"scored {done}/{total} model(s)", err=True))
    except user_errors() as exc:
        raise one_line_error(exc) from None
    _write_lofo_table(result, output)


@lofo_group.command("baselines")
@click.option("--manifest", default=None, help="List file with family and group columns (default: the ../shared manifest).")
@click.option("--family", "families", multiple=True, help="Held-out families (default: all). Repeatable.")
@click.option("-o", "--output", default="lofo-baselines.json", show_default=True, help="JSON file for the table and each file's facts.")
def lofo_baselines_command(manifest, families, output):
    """Each held-out family's video ROC-AUC when a file's frame size or bitrate is the score: what a detector must
    beat before its figure means more than how the fakes were filed."""
    from pathlib import Path

    from train import lofo

    try:
        result = lofo.capture_baselines(manifest or lofo.DEFAULT_MANIFEST, list(families) or None)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, indent=1))
    click.echo(lofo.format_baselines(result))
    click.echo(f"written: {output}")


@lofo_group.command("blinks")
@click.option("--manifest", default=None, help="List file with family and group columns (default: the ../shared manifest).")
@click.option("--family", "families", multiple=True, help="Held-out families (default: all). Repeatable.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--every-n-frames", type=click.IntRange(min=1), default=1, show_default=True,
              help=f"Read the eyes on every n-th frame only ({CLASSIFY_EVERY}: a run's classify cadence, at which the "
              "default detector's blink counts are fitted).")
@webcam_grade_options
@click.option("-o", "--output", default="lofo-blinks.json", show_default=True,
              help="JSON file for the table and each video's blinks (`dfstream lofo fuse` reads it like a model's).")
def lofo_blinks_command(manifest, families, progress, every_n_frames, degradation, output):
    """Each held-out family's video ROC-AUC with the blink rate as the score (fewer blinks = more fake; the first
    minute of each video, 68 landmarks a reading): a cue with no training, measured like a model."""
    from pathlib import Path

    from train import lofo

    try:
        result = lofo.blink_cue(manifest or lofo.DEFAULT_MANIFEST, list(families) or None,
                                progress=progress_bars(progress), degradation=degradation,
                                every_n_frames=every_n_frames)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, indent=1))
    click.echo(lofo.format_baselines(result, title="video ROC-AUC of minus the blinks per minute (fewer = fake)"))
    click.echo(f"written: {output}")


@lofo_group.command("fuse")
@click.argument("scored", nargs=-1, required=True)
@click.option("--rule", type=click.Choice(["mean", "max"]), default="mean", show_default=True,
              help="How the z-scores join: their mean, or the largest (a video as suspect as its most suspect cue: "
                   "for cues that aim at different fakes).")
@click.option("--ci-resamples", type=click.IntRange(min=0), default=2000, show_default=True)
@click.option("-o", "--output", default="lofo-fused.json", show_default=True, help="JSON file for the fused table.")
def lofo_fuse_command(scored, rule, ci_resamples, output):
    """Two or more recipes scored by `dfstream lofo score` (or `dfstream lofo blinks`; their JSON files) as one
    detector: per video the mean (or the largest) of each model's logit z-scored on the val people's real videos.
    Seeds pair up in order. Video level only."""
    from pathlib import Path

    from train import lofo

    try:
        results = []
        for path in scored:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no such file: {path}")
            try:
                results.append(json.loads(Path(path).read_text()))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not a dfstream lofo score JSON file ({exc.msg})") from None
        result = lofo.fuse(results, ci_resamples=ci_resamples, rule=rule)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    _write_lofo_table(result, output)


@click.command("calibrate")
@click.argument("model")
@click.option("-o", "--output", required=True, help="The calibrated copy (.onnx): the model with its Platt scaling and "
              "threshold in its metadata.")
@click.option("--false-alarm-rate", type=float, default=0.05, show_default=True,
              help="The share of real validation files the default threshold may call fake.")
@click.option("--manifest", default=None, help="List file with family and group columns (default: the ../shared manifest).")
@click.option("--trained-on", multiple=True, help="A fake family the model learnt from (its fakes are then not used to "
              "calibrate it). Repeatable; none for a model trained on real faces alone.")
@click.option("--min-face-px", type=click.IntRange(min=0), default=None,
              help="Set the size floor: faces shorter than this (frame pixels) are answered unscorable. "
              "Default: the model's own (0: none).")
@click.option("--detail-floor/--no-detail-floor", default=True, show_default=True,
              help="Also set the detail floors (min_face_detail, min_surroundings_detail): a face more blurred than "
              "nearly every val face shrunk to the model's size floor, in surroundings more blurred than theirs, is "
              "answered unscorable (a face smoother than a sharp frame around it is judged).")
@click.option("--blinks", is_flag=True, help="Make blinks part of the video score: real people's blink rates fitted on "
              "the train people's real videos, put on the model's scale on the val people's; a video's (a track's) "
              "score is raised to its blinks' where those are more surprising for a real person.")
@click.option("--blink-every", type=click.IntRange(min=1), default=CLASSIFY_EVERY, show_default=True,
              help="With --blinks: read the eyes on every n-th frame, for the fit and for every count compared with it "
              "(kept in the model: eval, predict and runs read at it; a run's classify cadence by default).")
@click.option("--every-n-frames", type=int, default=10, show_default=True)
@click.option("--max-frames", type=int, default=32, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--json", "json_out", default=None, help="Also write the fit and its measurements here.")
@click.option("-v", "--verbose", is_flag=True)
def calibrate_command(model, output, false_alarm_rate, manifest, trained_on, min_face_px, detail_floor, blinks,
                      blink_every, every_n_frames, max_frames, threads, json_out, verbose):
    """Calibrate a detector's P(fake) and set its threshold on validation data (leave-one-family-out's val split)."""
    verbose_logging(verbose)
    from train.calibrate import calibrate, format_result, write_report
    from train.common import progress

    try:
        result = calibrate(model, output, manifest=manifest, false_alarm_rate=false_alarm_rate, trained_on=tuple(trained_on),
                           set_detail_floor=detail_floor, min_face_px=min_face_px, blinks=blinks, blink_every=blink_every, progress=progress,
                           every_n_frames=every_n_frames,
                           max_frames=max_frames, threads=threads)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    if json_out:
        write_report(result, json_out)
    click.echo(format_result(result))


@click.command("predict")
@click.argument("media")
@click.option("-m", "--model", default="detector", show_default=True)
@click.option("--engine", default="auto", show_default=True, type=click.Choice(ENGINE_CHOICES))
@click.option("--threshold", type=float, default=None)
@click.option("--every-n-frames", type=int, default=5, show_default=True)
@click.option("--max-frames", type=int, default=60, show_default=True)
@click.option("--max-faces", type=int, default=8, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--blinks/--no-blinks", default=None, help="Count a video's blinks (68 landmarks over its first "
              "minute, read at the model's blink cadence). Default: when they are part of the model's score (the default detector's are).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("-v", "--verbose", is_flag=True)
def predict_command(media, model, engine, threshold, every_n_frames, max_frames, max_faces, threads, blinks, as_json,
                    verbose):
    """Score the faces of an image or a video and give a verdict."""
    verbose_logging(verbose)
    from train.predict import format_prediction, predict

    try:
        result = predict(media, model=model, engine=engine, threshold=threshold, every_n_frames=every_n_frames,
                         max_frames=max_frames, max_faces=max_faces, threads=threads, blinks=blinks)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(format_prediction(result))


@click.command("temporal")
@click.option("--detector", "detector_checkpoint", required=True, help="Frame detector checkpoint (.pt) whose backbone gives the features.")
@click.option("--real", multiple=True, help="Folder, file or list file of real videos. Repeatable.")
@click.option("--pack", "packs", multiple=True, help="Face pack (`dfstream train pack`, cut at a stride --every-n-frames "
              "is a multiple of): its real videos, with or instead of --real. Repeatable.")
@click.option("--exclude", multiple=True, help="Glob of videos to leave out. Repeatable.")
@click.option("--seq-len", type=int, default=8, show_default=True)
@click.option("--every-n-frames", type=click.IntRange(min=1), default=10, show_default=True,
              help="Sample every n-th frame, as `dfstream eval` / `lofo score` will (kept in the model's metadata).")
@click.option("--max-frames", type=click.IntRange(min=1), default=100, show_default=True, help="Sampled frames per video at most.")
@click.option("--warp-fakes", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of fake sequences made by freezing texture: one other frame of the clip warped to every frame's "
                   "landmarks, as one-shot talking-head generators animate one photo (the rest: self-blends).")
@click.option("--landmarks", default="auto", show_default=True,
              help="Landmark model for the warp's field (auto: the 68-point model when installed; none: the 5 points).")
@click.option("--steps", type=int, default=200, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--hidden", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--cache-dir", default=None)
@click.option("--checkpoint-every", type=int, default=50, show_default=True)
@click.option("--run-dir", required=True)
@click.option("--resume", is_flag=True)
@click.option("--progress/--no-progress", default=None)
@click.option("-v", "--verbose", is_flag=True)
def train_temporal_command(detector_checkpoint, real, packs, exclude, run_dir, verbose, **options):
    """Train the temporal (CNN features -> LSTM) detector on real videos and self-blended (or frozen-texture) sequences."""
    verbose_logging(verbose)
    from train.temporal import train_temporal

    try:
        last = train_temporal(detector_checkpoint, list(real), run_dir, exclude=tuple(exclude), packs=tuple(packs),
                              **options)
    except user_errors() as exc:
        raise one_line_error(exc) from None
    click.echo(f"checkpoint: {last}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_detector_command())
