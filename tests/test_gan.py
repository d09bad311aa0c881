"""DCGAN: models, training (`dfstream train gan`), `--resume`, samples out, discriminator as a detector."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dfstream.cli.generate import train_gan_command
from engines.networks import build_model
from engines.networks.dcgan import build_generator

DATA = Path(os.environ.get("DFSTREAM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CLIP = DATA / "real" / "liveportrait_driving_videos" / "d0.mp4"
needs_data = pytest.mark.skipif(not CLIP.is_file(), reason="needs ../shared/data (or $DFSTREAM_DATA) with real/liveportrait_driving_videos/d0.mp4")

TINY = ["--image-size", "32", "--batch-size", "16", "--ngf", "8", "--ndf", "8", "--every-n-frames", "2", "--threads", "1"]


@pytest.fixture(autouse=True)
def _models_env(monkeypatch):
    if (DATA / "models").is_dir() and not os.environ.get("DFSTREAM_MODELS"):
        monkeypatch.setenv("DFSTREAM_MODELS", str(DATA / "models"))


def test_generator_maps_100d_noise_to_tanh_images_and_discriminator_gives_p_fake():
    g = build_generator(z_dim=100, ngf=8, image_size=64).eval()
    with torch.no_grad():
        images = g(torch.randn(3, 100))
    assert images.shape == (3, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    d = build_model({"family": "dcgan_discriminator", "ndf": 8, "image_size": 64}).eval()
    with torch.no_grad():
        p = d(images)
    assert p.shape == (3,) and float(p.min()) >= 0 and float(p.max()) <= 1


def test_gan_needs_faces_or_a_checkpoint_to_sample_from(tmp_path):
    result = CliRunner().invoke(train_gan_command, ["--run-dir", str(tmp_path / "r")])
    assert result.exit_code != 0 and "--faces" in result.output
    result = CliRunner().invoke(train_gan_command, ["--checkpoint", str(tmp_path / "missing.pt"), "--samples-out", str(tmp_path / "o"), "3"])
    assert result.exit_code != 0 and "checkpoint not found" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """3 epochs of a tiny DCGAN on one talking-head clip (39 crops, batch 16: 2 steps an epoch)."""
    if not CLIP.is_file():
        pytest.skip("needs ../shared/data")
    if (DATA / "models").is_dir() and not os.environ.get("DFSTREAM_MODELS"):
        os.environ["DFSTREAM_MODELS"] = str(DATA / "models")
    run_dir = tmp_path_factory.mktemp("gan") / "run"
    summary = run_dir.parent / "summary.json"
    result = CliRunner().invoke(train_gan_command, ["--faces", str(CLIP), "--run-dir", str(run_dir), "--epochs", "3",
                                                   "--json", str(summary), *TINY])
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(summary.read_text())


@needs_data
def test_gan_training_writes_checkpoint_tensorboard_losses_and_sample_grids_each_epoch(gan_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, summary = gan_run
    assert summary["epoch"] == 3 and summary["step"] == 6
    for epoch in (1, 2, 3):
        grid = cv2.imread(str(run_dir / "samples" / f"epoch_{epoch:03d}.png"))
        assert grid is not None and grid.shape[0] > 32
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert {"loss/discriminator", "loss/generator"} <= set(events.Tags()["scalars"])
    assert len(events.Images("samples/generated")) == 3
    d_losses = [e.value for e in events.Scalars("loss/discriminator")]
    assert len(d_losses) == 6 and all(np.isfinite(d_losses))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["architecture"]["family"] == "dcgan_discriminator"
    assert checkpoint["metadata"]["kind"] == "detector" and checkpoint["metadata"]["output"] == "p_fake"
    assert "generator" in checkpoint["extra_state"]
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"  # --device auto
    assert checkpoint["metadata"]["training"]["device"] == expected


@needs_data
def test_gan_discriminator_learns_in_a_few_steps(gan_run):
    _, summary = gan_run
    first, last = summary["losses"]["loss_d"]
    assert last < first, f"discriminator loss did not fall: {first} -> {last}"


@needs_data
def test_gan_resume_continues_from_the_saved_epoch(gan_run):
    run_dir, _ = gan_run
    result = CliRunner().invoke(train_gan_command, ["--faces", str(CLIP), "--run-dir", str(run_dir), "--epochs", "4", "--resume", *TINY])
    assert result.exit_code == 0, result.output
    assert re.search(r"resumed .*last\.pt at epoch 3, step 6", result.output)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 4 and checkpoint["step"] == 8
    assert (run_dir / "samples" / "epoch_004.png").is_file()


@needs_data
def test_generated_samples_are_written_as_images(gan_run, tmp_path):
    run_dir, _ = gan_run
    out = tmp_path / "fakes"
    result = CliRunner().invoke(train_gan_command, ["--checkpoint", str(run_dir / "checkpoints" / "last.pt"),
                                                   "--samples-out", str(out), "5", "--samples-scale", "2", "--samples-pad", "0.25"])
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.png"))
    assert len(files) == 5
    image = cv2.imread(str(files[0]))
    assert image.shape == (96, 96, 3)  # 32 px x2, plus a quarter on each side


@needs_data
def test_exported_discriminator_is_a_detector_that_runs_in_onnxruntime(gan_run, tmp_path):
    from engines.export import export_checkpoint
    from engines.loader import load_engine
    from engines.metadata import MetadataError, read_onnx_metadata

    run_dir, _ = gan_run
    onnx_path = tmp_path / "dcgan_discriminator.onnx"
    export_checkpoint(run_dir / "checkpoints" / "last.pt", onnx_path)
    meta = read_onnx_metadata(onnx_path)
    assert meta.kind == "detector" and meta.output == "p_fake" and meta.input_size == (32, 32)
    engine = load_engine(onnx_path, engine="onnxruntime", kind="detector")
    crops = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    p = engine.run(crops)
    assert p.shape == (4,) and np.all((p >= 0) & (p <= 1))
    with pytest.raises(MetadataError):
        load_engine(onnx_path, kind="swapper")


@needs_data
def test_dfstream_eval_accepts_the_discriminator_as_a_detector(gan_run, tmp_path, monkeypatch):
    pytest.importorskip("train.evaluate", reason="dfstream eval (train/evaluate.py) is not in this checkout")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the checkpoint's ONNX export is cached there
    from dfstream.cli.detector import eval_command

    run_dir, _ = gan_run
    photos = DATA / "real" / "facenet_pytorch"
    listing = tmp_path / "labels.tsv"
    listing.write_text(f"{photos / 'angelina_jolie__1.jpg'}\treal\n{photos / 'paul_rudd__1.jpg'}\treal\n"
                       f"{photos / 'kate_siegel__1.jpg'}\tfake\n{photos / 'shea_whigham__1.jpg'}\tfake\n")
    result = CliRunner().invoke(eval_command, [str(listing), "-m", str(run_dir / "checkpoints" / "last.pt"),
                                               "-o", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval.json").is_file()


@needs_data
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gan_training_on_a_gpu_that_is_not_there_fails_in_one_line_before_any_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(train_gan_command, ["--faces", str(CLIP), "--run-dir", str(run_dir), "--device", "cuda", *TINY])
    assert result.exit_code != 0
    assert "no CUDA GPU" in result.output and len(result.output.strip().splitlines()) == 1
    assert not run_dir.exists()
