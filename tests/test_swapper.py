"""Face swapper: model, image-quality metrics, training (`dfstream train swapper`), `--resume`, `dfstream eval-swap`."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dfstream.cli.generate import swapper_eval_command, train_swapper_command
from train.image_quality import batch_quality, psnr, ssim, ssim_torch
from engines.networks import build_model

DATA = Path(os.environ.get("DFSTREAM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CLIPS = DATA / "real" / "liveportrait_driving_videos"
needs_data = pytest.mark.skipif(not (CLIPS / "d0.mp4").is_file() or not (CLIPS / "d20.mp4").is_file(),
                                reason="needs ../shared/data (or $DFSTREAM_DATA) with real/liveportrait_driving_videos/d0.mp4, d20.mp4")

TINY = ["--input-size", "32", "--batch-size", "8", "--every-n-frames", "4", "--max-frames", "20", "--lr", "1e-3",
        "--latent", "64", "--encoder-channels", "16,32,64,128", "--sample-every", "10", "--checkpoint-every", "10", "--threads", "1"]


@pytest.fixture(autouse=True)
def _models_env(monkeypatch):
    if (DATA / "models").is_dir() and not os.environ.get("DFSTREAM_MODELS"):
        monkeypatch.setenv("DFSTREAM_MODELS", str(DATA / "models"))


def test_swapper_forward_swaps_into_the_target_decoder_in_mean_std_space():
    model = build_model({"family": "swapper", "input_size": 32, "latent": 32, "target": "b"}).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = model(x)
        via_b = model.to_normalised(model.decoders["b"](model.encoder(x)))
        via_a = model.to_normalised(model.decoders["a"](model.encoder(x)))
    assert out.shape == x.shape
    assert torch.allclose(out, via_b) and not torch.allclose(out, via_a)
    assert out.min() >= -1 and out.max() <= 1  # sigmoid pixels mapped by mean/std 0.5
    assert set(model.decoders) == {"a", "b"}


def test_swapper_rejects_a_target_that_is_not_an_identity():
    with pytest.raises(ValueError):
        build_model({"family": "swapper", "input_size": 32, "target": "c"})


def test_psnr_of_identical_images_is_infinite_and_falls_with_noise():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert psnr(image, image) == math.inf and ssim(image, image) == pytest.approx(1.0)
    small = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    large = np.clip(image + rng.normal(0, 30, image.shape), 0, 255).astype(np.uint8)
    assert 30 < psnr(image, small) < math.inf
    assert psnr(image, large) < psnr(image, small)
    assert ssim(image, large) < ssim(image, small) < 1.0
    q = batch_quality(np.stack([image, image]), np.stack([small, large]))
    assert q["images"] == 2 and psnr(image, large) < q["psnr"] < psnr(image, small)


def test_differentiable_ssim_agrees_in_direction_with_skimage():
    x = torch.rand(2, 3, 32, 32)
    assert float(ssim_torch(x, x)) == pytest.approx(1.0, abs=1e-4)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert float(ssim_torch(x, noisy)) < 0.9


def test_augmentation_keeps_shape_and_range_and_warps_only_the_input():
    from train.swapper import augment

    x = torch.rand(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    inputs, target = augment(x, warp=True, colour=True, generator=g)
    assert inputs.shape == target.shape == x.shape
    assert 0 <= float(target.min()) and float(target.max()) <= 1
    assert not torch.allclose(inputs, target)
    inputs, target = augment(x, warp=False, colour=False, generator=g)
    assert torch.equal(inputs, target)


def test_missing_faces_path_is_one_clear_line_and_a_nonzero_exit(tmp_path):
    result = CliRunner().invoke(train_swapper_command, ["--faces-a", str(tmp_path / "nope.mp4"), "--faces-b", str(tmp_path / "x"),
                                                       "--run-dir", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "no such file or folder" in result.output and "Traceback" not in result.output


@needs_data
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_training_on_a_gpu_that_is_not_there_fails_in_one_line_before_any_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(train_swapper_command, ["--faces-a", str(CLIPS / "d0.mp4"), "--faces-b", str(CLIPS / "d20.mp4"),
                                                       "--run-dir", str(run_dir), "--device", "cuda"])
    assert result.exit_code != 0
    assert "no CUDA GPU" in result.output and len(result.output.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 20-step swapper run on two people (tiny crops): shared by the training, resume and eval tests."""
    if not (CLIPS / "d0.mp4").is_file():
        pytest.skip("needs ../shared/data")
    if (DATA / "models").is_dir() and not os.environ.get("DFSTREAM_MODELS"):
        os.environ["DFSTREAM_MODELS"] = str(DATA / "models")
    run_dir = tmp_path_factory.mktemp("swapper") / "run"
    summary = run_dir.parent / "summary.json"
    result = CliRunner().invoke(train_swapper_command, ["--faces-a", str(CLIPS / "d0.mp4"), "--faces-b", str(CLIPS / "d20.mp4"),
                                                       "--run-dir", str(run_dir), "--steps", "20", "--json", str(summary), *TINY])
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(summary.read_text()), result.output


@needs_data
def test_short_training_lowers_the_loss_and_writes_checkpoint_events_and_samples(trained_run):
    run_dir, summary, output = trained_run
    for key in ("rec_a", "rec_b"):
        first, last = summary["losses"][key]
        assert last < first, f"{key} did not fall: {first} -> {last}"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    meta = checkpoint["metadata"]
    assert checkpoint["format"] == "dfstream-checkpoint-v1" and checkpoint["step"] == 20
    assert meta["kind"] == "swapper" and meta["output"] == "image" and meta["input_size"] == [32, 32]
    assert meta["extra"]["identities"] == ["d0", "d20"] and meta["extra"]["target"] == "b"
    assert 0 < meta["metrics"]["psnr"] < 60 and 0 < meta["metrics"]["ssim"] <= 1
    assert "discriminator" in checkpoint["extra_state"] and "optimizer_d" in checkpoint["extra_state"]
    assert meta["training"]["device"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "samples" / "step0000020.png").is_file()
    assert "held-back reconstruction: PSNR" in output


@needs_data
def test_tensorboard_has_losses_and_sample_swaps(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = trained_run
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"loss/rec_a", "loss/rec_b", "loss/adv_g", "loss/d", "heldback/psnr"} <= set(tags["scalars"])
    assert any(t.startswith("samples/") for t in tags["images"])


@needs_data
def test_resume_continues_from_the_saved_step(trained_run):
    run_dir, _, _ = trained_run
    result = CliRunner().invoke(train_swapper_command, ["--faces-a", str(CLIPS / "d0.mp4"), "--faces-b", str(CLIPS / "d20.mp4"),
                                                       "--run-dir", str(run_dir), "--steps", "25", "--resume", *TINY])
    assert result.exit_code == 0, result.output
    assert re.search(r"resumed .*last\.pt at step 20", result.output)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["step"] == 25
    # a fresh run into the same folder is refused rather than overwriting it
    again = CliRunner().invoke(train_swapper_command, ["--faces-a", str(CLIPS / "d0.mp4"), "--faces-b", str(CLIPS / "d20.mp4"),
                                                      "--run-dir", str(run_dir), "--steps", "5", *TINY])
    assert again.exit_code != 0 and "--resume" in again.output


@needs_data
def test_swapper_checkpoint_exports_to_an_onnx_swapper(trained_run, tmp_path):
    from engines.export import export_checkpoint
    from engines.loader import load_engine

    run_dir, _, _ = trained_run
    export_checkpoint(run_dir / "checkpoints" / "last.pt", tmp_path / "swapper.onnx")
    engine = load_engine(tmp_path / "swapper.onnx", kind="swapper")
    crops = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert engine.run(crops).shape == (2, 32, 32, 3)


@needs_data
def test_eval_swap_prints_psnr_ssim_and_the_share_a_detector_flags(trained_run, tmp_path):
    from engines.export import export_checkpoint
    from engines.metadata import ModelMetadata
    from train.common import save_checkpoint
    from engines.networks.dcgan import build

    run_dir, _, _ = trained_run
    # any detector-kind model will do: an untrained DCGAN discriminator exported as a detector
    detector = build(ndf=8, image_size=32)
    meta = ModelMetadata(kind="detector", name="tiny-detector", input_size=(32, 32), crop_margin=1.3, threshold=0.5)
    save_checkpoint(tmp_path / "det.pt", detector, {"family": "dcgan_discriminator", "ndf": 8, "image_size": 32}, meta)
    export_checkpoint(tmp_path / "det.pt", tmp_path / "det.onnx")

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(swapper_eval_command, [str(run_dir / "checkpoints" / "last.pt"), "--detector", str(tmp_path / "det.onnx"),
                                                       "--json", str(out), "--samples-out", str(tmp_path / "swapped")])
    assert result.exit_code == 0, result.output
    assert re.search(r"psnr \d+\.\d+ ssim \d\.\d+ flagged_swapped \d\.\d+ flagged_original \d\.\d+", result.output)
    report = json.loads(out.read_text())
    rec = report["reconstruction"]
    assert rec["held_back_crops"] > 0 and 0 < rec["psnr"] < 60
    swapped = report["swapped"]["all"]
    assert swapped["frames"] == rec["held_back_crops"] and 0 <= swapped["flagged_share"] <= 1
    assert len(list((tmp_path / "swapped").glob("*.jpg"))) == swapped["frames"]


@needs_data
def test_eval_swap_refuses_a_detector_given_as_swapper(trained_run):
    run_dir, _, _ = trained_run
    ckpt = str(run_dir / "checkpoints" / "last.pt")
    result = CliRunner().invoke(swapper_eval_command, [ckpt, "--detector", ckpt])
    assert result.exit_code != 0 and "not a detector model" in result.output and "Traceback" not in result.output
