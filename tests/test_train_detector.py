"""Detector training: the loss falls, checkpoints and TensorBoard events appear, --resume continues."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import SHARED_DATA, needs_shared_data
from train.common import RunDir, load_checkpoint, save_checkpoint

DATA = SHARED_DATA
needs_data = needs_shared_data


pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ["--backbone", "mobilenetv3_small_050", "--input-size", "64", "--batch-size", "8", "--workers", "0",
        "--threads", "1", "--log-every", "1", "--checkpoint-every", "2", "--val-fraction", "0.25", "--max-faces", "1"]


def _real_photos(tmp_path, *names) -> Path:
    """A folder of real photos (links into ../shared/data, never copies) for a short training run."""
    images = tmp_path / "real"
    images.mkdir()
    for name in names:
        (images / name).symlink_to(DATA / "real/face_recognition_examples" / name)
    return images


def test_loss_falls_on_a_fixed_batch():
    from train.detector import DEFAULTS, make_metadata
    from train.datasets import FaceDataset, to_tensor
    from engines.networks import build_model
    from engines.alignment import template_points

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cached = {"crops": rng.integers(0, 256, (8, 96, 96, 3), dtype=np.uint8),
              "landmarks": np.repeat(template_points((96, 96), 2.0)[None], 8, 0).astype(np.float32),
              "labels": np.zeros(8, np.int64), "source": np.arange(8), "frames": np.zeros(8, np.int64)}
    ds = FaceDataset(cached, (48, 48), 1.4, sbi=True, train=False)
    crops, labels = zip(*[ds[i] for i in range(len(ds))])
    assert sorted(labels) == [0] * 8 + [1] * 8
    meta = make_metadata(dict(DEFAULTS, input_size=48))
    x, y = to_tensor(np.stack(crops), meta), torch.tensor(labels, dtype=torch.float32)
    model = build_model({"family": "detector", "backbone": "mobilenetv3_small_050", "drop_rate": 0.0})
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def _noise_faces(n: int) -> dict:
    from engines.alignment import template_points

    rng = np.random.default_rng(1)
    return {"crops": rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8),
            "landmarks": np.repeat(template_points((96, 96), 2.0)[None], n, 0).astype(np.float32),
            "labels": np.zeros(n, np.int64), "source": np.arange(n), "frames": np.zeros(n, np.int64)}


@pytest.mark.parametrize("pairs", [True, False])
def test_a_real_face_and_its_blend_share_one_view_and_one_batch_when_paired(pairs):
    from train.datasets import FaceDataset

    ds = FaceDataset(_noise_faces(6), (48, 48), 1.4, sbi=True, train=True, seed=3, pairs=pairs)
    ds.epoch = 2
    batches = ds.batches(4, np.random.default_rng(0))
    assert sorted(i for b in batches for i in b) == list(range(12))
    same_view = []
    for batch in batches:
        faces = [ds.index[i][0] for i in batch]
        if pairs:  # each face twice, side by side: once real, once blended
            assert faces[0::2] == faces[1::2] and [ds.index[i][1] for i in batch] == [0, 2, 0, 2]
        for first, second in zip(batch[0::2], batch[1::2]):
            (a, la), (b, lb) = ds[first], ds[second]
            if pairs:
                assert (la, lb) == (0, 1) and not np.array_equal(a, b)  # the blend is there
            corner = np.abs(a[:8, :8].astype(int) - b[:8, :8].astype(int)).mean()
            same_view.append(corner < 1.0)  # outside the face mask only the view could differ
    assert all(same_view) if pairs else not any(same_view)


def test_a_second_run_caching_the_same_file_at_once_leaves_a_whole_file(tmp_path):
    from engines.registry import write_atomically

    target = tmp_path / "faces.npy"

    def slow_writer(f):  # another run writes the same cache file while this one is half way through
        f.write(b"partial")
        write_atomically(target, lambda g: np.save(g, np.arange(3)))
        f.seek(0)
        np.save(f, np.arange(5))

    write_atomically(target, slow_writer)
    assert np.load(target).tolist() == list(range(5))
    assert [p.name for p in tmp_path.iterdir()] == ["faces.npy"]  # no temporary left behind

    def failing_writer(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, failing_writer)
    assert np.load(target).tolist() == list(range(5)) and len(list(tmp_path.iterdir())) == 1


def test_checkpoint_round_trips_through_weights_only_load(tmp_path):
    from engines.networks import build_model, load_checkpoint as rebuild

    arch = {"family": "detector", "backbone": "mobilenetv3_small_050", "drop_rate": 0.0}
    model = build_model(arch).eval()
    opt = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path / "c.pt", model, arch, {"kind": "detector", "name": "t", "input_size": [32, 32]}, opt, step=7)
    raw = torch.load(path, weights_only=True)  # must not need unpickling of arbitrary objects
    assert raw["format"] == "dfstream-checkpoint-v1" and raw["step"] == 7 and "optimizer" in raw
    again, _ = rebuild(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), again(x))


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path):
    run = RunDir.create(tmp_path / "run", {"seed": 1})
    (run.checkpoint_dir / "last.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--resume"):
        RunDir.create(tmp_path / "run", {"seed": 1})
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1


@needs_data
def test_training_writes_checkpoints_and_events_and_resume_continues(tmp_path):
    from dfstream.cli.detector import train_detector_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__obama__obama.jpg", "train__biden__biden.jpg", "test__alex_lacamoire1.jpg",
                                  "train__rose_leslie__img1.jpg", "train__kit_harington__john1.jpeg", "two_people.jpg", "obama_partial_face.jpg")
    run = tmp_path / "run"
    common = ["--real", str(images), "--run-dir", str(run), "--cache-dir", str(tmp_path / "cache"), "--no-progress"] + TINY
    result = CliRunner().invoke(train_detector_command, common + ["--steps", "4"])
    assert result.exit_code == 0, result.output
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "step00000002.pt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "mobilenetv3_small_050" and config["steps"] == 4
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4

    again = CliRunner().invoke(train_detector_command, common + ["--steps", "6"])
    assert again.exit_code != 0 and "--resume" in again.output  # never silently overwritten

    resumed = CliRunner().invoke(train_detector_command, common + ["--steps", "6", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 6 and (run / "config.resume-1.json").is_file()
    assert ckpt["metadata"]["kind"] == "detector" and ckpt["metadata"]["crop_margin"] > 1
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"  # --device auto
    assert ckpt["metadata"]["training"]["device"] == expected


def test_the_training_device_is_the_gpu_when_torch_sees_one_and_a_missing_gpu_is_an_error():
    from train.common import training_device

    assert training_device("cpu").type == "cpu"
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for wrong in ("tpu", "gpu0", "mps"):
        with pytest.raises(ValueError, match="use cpu, cuda, cuda:N or auto"):
            training_device(wrong)
    with pytest.raises(ValueError, match="CUDA GPU"):
        training_device(f"cuda:{torch.cuda.device_count()}")  # one past the last (here: any, without CUDA)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_training_on_a_gpu_that_is_not_there_fails_in_one_line_before_any_run_folder(tmp_path):
    from dfstream.cli.detector import train_detector_command

    run = tmp_path / "run"
    result = CliRunner().invoke(train_detector_command, ["--real", str(tmp_path), "--run-dir", str(run), "--device", "cuda",
                                                         "--no-progress"] + TINY)
    assert result.exit_code != 0
    assert "no CUDA GPU" in result.output and len(result.output.strip().splitlines()) == 1
    assert not run.exists()


@needs_data
def test_the_same_seed_trains_the_same_weights(tmp_path):
    from dfstream.cli.detector import train_detector_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__obama__obama.jpg", "train__biden__biden.jpg", "test__alex_lacamoire1.jpg")
    common = ["--real", str(images), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--val-fraction", "0",
              "--steps", "3"] + TINY

    def weights(name, seed):
        result = CliRunner().invoke(train_detector_command, common + ["--run-dir", str(tmp_path / name), "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        return load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["state_dict"]

    first, again, other = weights("a", 5), weights("b", 5), weights("c", 6)
    assert all(torch.equal(first[k], again[k]) for k in first)  # crops, blends, augmentation and order all follow the seed
    assert not all(torch.equal(first[k], other[k]) for k in first)


def _short_runs(tmp_path):
    """``run(name, *options)``: a short seeded training run on four real photos in ``tmp_path/name``; returns its
    checkpoints folder (``succeed=False``: the CLI result of a run expected to fail)."""
    from dfstream.cli.detector import train_detector_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__obama__obama.jpg", "train__biden__biden.jpg", "test__alex_lacamoire1.jpg")
    common = ["--real", str(images), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--val-fraction", "0",
              "--seed", "3"] + TINY

    def run(name, *options, succeed=True):
        result = CliRunner().invoke(train_detector_command, common + ["--run-dir", str(tmp_path / name), *options])
        if not succeed:
            return result
        assert result.exit_code == 0, result.output
        return tmp_path / name / "checkpoints"

    return run


@needs_data
def test_ema_keeps_a_moving_average_beside_unchanged_training_and_resume_carries_it(tmp_path):
    run = _short_runs(tmp_path)
    plain = load_checkpoint(run("plain", "--steps", "4") / "last.pt")["state_dict"]
    folder = run("ema", "--steps", "4", "--ema", "0.5")
    trained, averaged = load_checkpoint(folder / "last.pt"), load_checkpoint(folder / "ema.pt")
    # the average only watches: the trained weights are those of the same seed without it
    assert all(torch.equal(plain[k], trained["state_dict"][k]) for k in plain)
    assert averaged["step"] == 4 and averaged["architecture"] == trained["architecture"]
    weights = [k for k in plain if k.endswith(".weight")]
    assert any(not torch.equal(averaged["state_dict"][k], plain[k]) for k in weights)
    assert set(trained["extra_state"]["ema"]) == {f"module.{k}" for k in plain}

    folder = run("ema", "--steps", "6", "--ema", "0.5", "--resume")
    assert load_checkpoint(folder / "ema.pt")["step"] == 6
    wrong = run("bad", "--ema", "1.5", succeed=False)
    assert wrong.exit_code != 0 and "--ema" in wrong.output and "1.5" in wrong.output


@needs_data
def test_sam_steps_take_the_gradient_uphill_and_resume_keeps_the_radius(tmp_path):
    run = _short_runs(tmp_path)
    plain = load_checkpoint(run("plain", "--steps", "3") / "last.pt")
    sam = load_checkpoint(run("sam", "--steps", "3", "--sam", "0.05") / "last.pt")
    # the same seed, data and first gradients: only the uphill second pass can make the weights differ
    assert not all(torch.equal(plain["state_dict"][k], sam["state_dict"][k]) for k in plain["state_dict"])
    assert sam["optimizer"]["param_groups"][0]["rho"] == 0.05
    assert sam["metadata"]["training"]["sam"] == 0.05
    assert all(torch.isfinite(v).all() for v in sam["state_dict"].values() if v.is_floating_point())

    # the radius comes back from the run's config
    resumed = load_checkpoint(run("sam", "--steps", "5", "--resume") / "last.pt")
    assert resumed["step"] == 5 and resumed["optimizer"]["param_groups"][0]["rho"] == 0.05
    wrong = run("bad", "--sam", "0", succeed=False)
    assert wrong.exit_code != 0 and "--sam" in wrong.output


@needs_data
def test_temporal_model_trains_on_video_sequences_and_scores_a_sequence(tmp_path):
    from train.detector import DEFAULTS, make_metadata
    from engines.networks import build_model
    from train.temporal import load_temporal, train_temporal

    arch = {"family": "detector", "backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.0}
    det = save_checkpoint(tmp_path / "det.pt", build_model(arch), arch, make_metadata(dict(DEFAULTS, input_size=48)))
    last = train_temporal(det, [str(DATA / "real/liveportrait_driving_videos/d0.mp4")], tmp_path / "trun", seq_len=3,
                          steps=2, batch_size=2, hidden=8, every_n_frames=10, max_frames=4, cache_dir=str(tmp_path / "cache"),
                          checkpoint_every=1, threads=1, progress=False)
    assert load_checkpoint(last)["step"] == 2
    scorer = load_temporal(last, expect_input=(48, 48))
    assert scorer.every_n_frames == 10  # the stride it learnt on, for eval to compare with its own
    score = scorer.score_sequence(np.zeros((5, 48, 48, 3), np.uint8))
    assert 0.0 <= score <= 1.0


@needs_data
def test_temporal_training_refuses_a_detector_whose_backbone_weights_are_incomplete(tmp_path):
    from train.detector import DEFAULTS, make_metadata
    from engines.networks import build_model
    from train.temporal import train_temporal

    arch = {"family": "detector", "backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.0}
    det = save_checkpoint(tmp_path / "det.pt", build_model(arch), arch, make_metadata(dict(DEFAULTS, input_size=48)))
    checkpoint = torch.load(det, weights_only=True)
    first_backbone_weight = next(k for k in checkpoint["state_dict"] if k.startswith("backbone."))
    del checkpoint["state_dict"][first_backbone_weight]
    torch.save(checkpoint, det)
    with pytest.raises(ValueError, match="lacks 1 weights"):
        train_temporal(det, [str(DATA / "real/liveportrait_driving_videos/d0.mp4")], tmp_path / "trun", seq_len=3,
                       steps=1, batch_size=2, hidden=8, every_n_frames=10, max_frames=4, cache_dir=str(tmp_path / "cache"),
                       threads=1, progress=False)


@needs_data
def test_init_from_warm_starts_weights_with_a_fresh_schedule(tmp_path):
    """--init-from: a new run that starts from another run's weights, at step 0, with its own optimiser and LR schedule."""
    from dfstream.cli.detector import train_detector_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__obama__obama.jpg", "train__biden__biden.jpg", "test__alex_lacamoire1.jpg")
    common = ["--real", str(images), "--cache-dir", str(tmp_path / "cache"), "--no-progress"] + TINY
    first = CliRunner().invoke(train_detector_command, common + ["--run-dir", str(tmp_path / "a"), "--steps", "4"])
    assert first.exit_code == 0, first.output
    source = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert source["step"] == 4

    # lr 0: the weights cannot move, so the new run's parameters must be exactly the source's
    second = CliRunner().invoke(train_detector_command, common + [
        "--run-dir", str(tmp_path / "b"), "--steps", "2", "--lr", "0",
        "--init-from", str(tmp_path / "a" / "checkpoints" / "last.pt")])
    assert second.exit_code == 0, second.output
    warm = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert warm["step"] == 2  # counted from 0, not continued from 4
    assert warm["scheduler"]["last_epoch"] == 2  # a fresh schedule (warm-up starts again)
    assert warm["metadata"]["training"]["init_from"].endswith("last.pt")
    params = [k for k in source["state_dict"] if "running_" not in k and "num_batches_tracked" not in k]
    assert params and all(torch.equal(source["state_dict"][k], warm["state_dict"][k]) for k in params)


@needs_data
def test_extra_fakes_are_aligned_crops_used_without_face_detection(tmp_path):
    import cv2

    from dfstream.cli.detector import train_detector_command
    from train.datasets import cache_aligned_fakes, load_cached

    fakes = tmp_path / "gan_samples"
    fakes.mkdir()
    noise = np.random.default_rng(0)
    for i in range(5):  # blobs no face detector would accept: they must be used all the same
        cv2.imwrite(str(fakes / f"{i}.png"), noise.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    record = cache_aligned_fakes(fakes, tmp_path / "cache", margin=1.3)
    cached = load_cached([record])
    assert len(cached["crops"]) == 5 and set(cached["labels"]) == {1}

    images = _real_photos(tmp_path, "obama3.jpg", "train__biden__biden.jpg", "two_people.jpg")
    run = tmp_path / "run"
    result = CliRunner().invoke(train_detector_command, ["--real", str(images), "--extra-fakes", str(fakes),
                                                         "--run-dir", str(run), "--cache-dir", str(tmp_path / "cache"),
                                                         "--no-progress", "--steps", "2", "--val-fraction", "0"] + TINY)
    assert result.exit_code == 0, result.output
    faces = json.loads((run / "faces.json").read_text())
    assert any(r["path"] == str(fakes) and r["label"] == 1 for r in faces["train"])


@needs_data
def test_sbi_landmarks_option_trains_with_dense_masks_and_records_it(tmp_path):
    from dfstream.cli.detector import train_detector_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__biden__biden.jpg", "train__rose_leslie__img1.jpg", "two_people.jpg")
    run, cache = tmp_path / "run", tmp_path / "cache"
    result = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(run), "--cache-dir", str(cache),
                                                         "--no-progress", "--sbi-landmarks", "pfld68", "--steps", "2"] + TINY)
    assert result.exit_code == 0, result.output
    assert len(list(cache.glob("*-pfld68-*.npy"))) == 4  # one per media file, beside its faces
    assert json.loads((run / "config.json").read_text())["sbi_landmarks"] == "pfld68"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["metadata"]["training"]["sbi_landmarks"] == "pfld68"

    unknown = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(tmp_path / "run2"),
                                                          "--cache-dir", str(cache), "--sbi-landmarks", "nope", "--steps", "2"] + TINY)
    assert unknown.exit_code != 0 and "nope" in unknown.output and not (tmp_path / "run2").exists()


@needs_data
def test_sbi_inside_smooth_and_webcam_augment_are_recorded_in_the_run_and_the_model(tmp_path):
    from dfstream.cli.detector import train_detector_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__biden__biden.jpg")
    run = tmp_path / "run"
    result = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(run), "--cache-dir",
                                                         str(tmp_path / "cache"), "--no-progress", "--sbi-inside",
                                                         "--smooth-augment", "--webcam-augment", "--steps", "2"] + TINY)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["sbi_inside"] is True and config["smooth_augment"] is True
    training = load_checkpoint(run / "checkpoints" / "last.pt")["metadata"]["training"]
    assert training["sbi_inside"] is True and training["smooth_augment"] is True and training["webcam_augment"] is True


def test_edge_preserving_smoothing_flattens_texture_and_keeps_edges():
    from train.datasets import edge_preserving_smooth

    rng = np.random.default_rng(0)
    crop = np.full((64, 64, 3), 60, np.uint8)
    crop[:, 32:] = 200  # a strong edge, like hair against a wall
    textured = np.clip(crop + rng.normal(0, 6, crop.shape), 0, 255).astype(np.uint8)  # fine skin-like texture
    out = edge_preserving_smooth(textured, np.random.default_rng(1)).astype(np.float32)
    assert out[:, 4:28].std() < textured[:, 4:28].astype(np.float32).std() / 2
    assert out[:, 36:].mean() - out[:, :28].mean() > 0.9 * 140


def test_the_dataset_smooths_only_when_asked():
    from train.datasets import FaceDataset

    plain, smooth = (FaceDataset(_noise_faces(4), (48, 48), 1.4, sbi=True, train=True, seed=3, smooth=flag)
                     for flag in (False, True))
    differs = [not np.array_equal(plain[i][0], smooth[i][0]) for i in range(len(plain))]
    assert any(differs)


def test_sbi_landmarks_auto_uses_the_68_point_model_only_when_it_is_installed(tmp_path, monkeypatch, caplog):
    from train.datasets import sbi_landmark_model

    assert sbi_landmark_model("none") is None
    if (SHARED_DATA / "models").is_dir():
        assert sbi_landmark_model("auto") == "pfld68"
    monkeypatch.setenv("DFSTREAM_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with caplog.at_level("WARNING"):
        assert sbi_landmark_model("auto") is None
    assert "5-point polygon" in caplog.text and "pfld68" in caplog.text
    with pytest.raises(Exception, match="pfld68"):
        sbi_landmark_model("pfld68")  # asked for by name: not installed is an error, not a fallback


def test_a_backbone_whose_model_file_is_missing_fails_at_once_with_how_to_fetch_it(tmp_path, monkeypatch):
    from dfstream.cli.detector import train_detector_command

    monkeypatch.setenv("DFSTREAM_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    images = tmp_path / "real"
    images.mkdir()
    (images / "face.png").write_bytes(b"never read: the backbone is checked before any face caching")
    run = tmp_path / "run"
    result = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(run), "--no-progress",
                                                         "--sbi-landmarks", "none", "--backbone", "ultraface_rfb320"])
    assert result.exit_code != 0
    assert "ultraface-rfb320" in result.output and "dfstream models fetch" in result.output
    assert not run.exists() and not (tmp_path / "cache" / "dfstream" / "faces").exists()


@needs_data
def test_the_default_backbone_is_the_installed_face_detector_trunk_and_its_run_exports(tmp_path):
    from engines.export import export_checkpoint
    from dfstream.cli.detector import train_detector_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__biden__biden.jpg")
    run = tmp_path / "run"
    at = TINY.index("--backbone")
    no_backbone = TINY[:at] + TINY[at + 2:]
    result = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(run), "--cache-dir",
                                                         str(tmp_path / "cache"), "--no-progress", "--steps", "2",
                                                         "--val-fraction", "0"] + no_backbone)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["backbone"] == "ultraface_rfb320"  # what auto chose, recorded
    assert "UltraFace RFB-320" in load_checkpoint(run / "checkpoints" / "last.pt")["metadata"]["architecture"]
    export_checkpoint(run / "checkpoints" / "last.pt", tmp_path / "det.onnx")  # compared with torch inside


def test_augment_reports_whether_it_mirrored_the_crop():
    from train.datasets import augment

    crop = np.zeros((48, 48, 3), np.uint8)
    crop[:, 24:] = 255  # dark left, bright right: a mirror swaps them, no other augmentation does
    seen = set()
    for seed in range(16):
        out, flipped = augment(crop, np.random.default_rng(seed), return_flip=True)
        left_darker = out[:, :20].mean() < out[:, 28:].mean()
        assert left_darker != flipped
        seen.add(flipped)
    assert seen == {False, True}


def test_blend_maps_are_zero_for_real_faces_and_lie_where_the_blend_changed_the_crop():
    from train.datasets import FaceDataset

    # pairs: a real face and its blend are cut, mirrored and JPEG-coded alike, so they differ only where the blend is
    ds = FaceDataset(_noise_faces(6), (64, 64), 1.4, sbi=True, train=True, seed=2, pairs=True, blend_map=True)
    twins = {}
    for i, (face, kind) in enumerate(ds.index):
        twins.setdefault(face, {})[kind] = ds[i]
    hits, changed, marked = 0, 0, 0
    for face, samples in twins.items():
        real_crop, real_label, real_map = samples[0]
        blend_crop, blend_label, blend_map = samples[2]
        assert (real_label, blend_label) == (0, 1)
        assert real_map.shape == (64, 64) and not real_map.any()
        assert blend_map.max() > 0.5 and blend_map.min() >= 0 and blend_map.max() <= 1
        differs = np.abs(blend_crop.astype(int) - real_crop.astype(int)).max(axis=2) > 8
        boundary = blend_map > 0.3
        hits += int((differs & boundary).sum())
        changed += int(differs.sum())
        marked += int(boundary.sum())
    assert hits > 0.6 * marked  # where the map says "two images mix", the crop did change
    assert marked < changed  # the boundary is a band inside what changed, not all of it


def test_the_blend_map_head_learns_on_a_fixed_batch_and_stays_out_of_the_forward_pass():
    from train.datasets import FaceDataset, to_tensor
    from train.detector import DEFAULTS, _blend_map_loss, _collate, make_metadata
    from engines.networks import build_model

    torch.manual_seed(0)
    ds = FaceDataset(_noise_faces(8), (64, 64), 1.4, sbi=True, train=False, blend_map=True)
    crops, labels, maps = _collate([ds[i] for i in range(len(ds))])
    x = to_tensor(crops, make_metadata(dict(DEFAULTS, input_size=64)))
    model = build_model({"family": "detector", "backbone": "mobilenetv3_small_050", "drop_rate": 0.0, "blend_map": True})
    logits, map_logits = model.logits_and_map(x)
    assert logits.shape == (16,) and map_logits.shape == (16, 2, 2)  # stride 32
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    losses = []
    for _ in range(12):
        loss = _blend_map_loss(model.logits_and_map(x)[1], torch.from_numpy(maps))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), torch.sigmoid(model.logits_and_map(x)[0]))
    plain = build_model({"family": "detector", "backbone": "mobilenetv3_small_050", "drop_rate": 0.0})
    with pytest.raises(RuntimeError, match="blend-map head"):
        plain.logits_and_map(x)


def test_a_labelled_fake_has_no_blend_map_and_adds_no_map_loss():
    from train.detector import _blend_map_loss

    target = torch.zeros(2, 64, 64)
    target[1] = float("nan")  # a labelled fake: where its generator blended is unknown
    map_logits = torch.zeros(2, 2, 2, requires_grad=True)
    loss = _blend_map_loss(map_logits, target)
    loss.backward()
    assert torch.isfinite(loss) and not map_logits.grad[1].any() and map_logits.grad[0].any()


@needs_data
def test_blend_map_training_is_recorded_and_exports_without_the_map_head(tmp_path):
    import onnx

    from dfstream.cli.detector import train_detector_command
    from dfstream.cli.models import export_command

    images = _real_photos(tmp_path, "obama3.jpg", "train__biden__biden.jpg")
    run, cache = tmp_path / "run", str(tmp_path / "cache")
    plain = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(tmp_path / "plain"),
                                                        "--cache-dir", cache, "--no-progress", "--steps", "2"] + TINY)
    assert plain.exit_code == 0, plain.output
    # a plain checkpoint may start a blend-map run: only the new head starts from scratch
    result = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(run), "--cache-dir", cache,
                                                         "--no-progress", "--blend-map", "1", "--steps", "2",
                                                         "--init-from", str(tmp_path / "plain/checkpoints/last.pt")] + TINY)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["blend_map"] == 1.0
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["metadata"]["training"]["blend_map"] == 1.0 and "blend_head.weight" in checkpoint["state_dict"]
    exported = tmp_path / "det.onnx"
    out = CliRunner().invoke(export_command, [str(run / "checkpoints" / "last.pt"), "-o", str(exported)])
    assert out.exit_code == 0, out.output
    assert not [t.name for t in onnx.load(str(exported)).graph.initializer if "blend_head" in t.name]

    no_sbi = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(tmp_path / "r3"), "--cache-dir",
                                                         cache, "--no-sbi", "--blend-map", "1", "--steps", "2"] + TINY)
    assert no_sbi.exit_code != 0 and "--blend-map" in no_sbi.output


def test_the_face_recognition_trunk_freezes_its_early_levels_and_learns_the_rest_slower(dlib_network):
    from train.detector import _optimizer
    from engines.networks import build_model

    model = build_model({"family": "detector", "backbone": "dlib_face_resnet", "pretrained": True})
    trunk = model.backbone.trunk
    assert not any(p.requires_grad for level in ("stem", "level4", "level3") for p in getattr(trunk, level).parameters())
    assert all(p.requires_grad for p in trunk.level2.parameters())
    optimizer = _optimizer(model, {"lr": 1e-3, "weight_decay": 0.05})
    head, learnt_trunk = optimizer.param_groups
    assert head["lr"] == pytest.approx(1e-3) and learnt_trunk["lr"] == pytest.approx(1e-3 * model.backbone.trunk_lr_scale)
    assert {id(p) for p in learnt_trunk["params"]} == {id(p) for p in trunk.level2.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in model.backbone.classifier.parameters()}

    scratch = build_model({"family": "detector", "backbone": "dlib_face_resnet", "pretrained": False})
    assert all(p.requires_grad for p in scratch.parameters())
    assert len(_optimizer(scratch, {"lr": 1e-3, "weight_decay": 0.05}).param_groups) == 1


@needs_data
def test_a_run_on_the_face_recognition_trunk_keeps_its_frozen_weights_and_exports(tmp_path, dlib_network):
    from engines.export import export_checkpoint
    from dfstream.cli.detector import train_detector_command
    from engines.networks.dlib_resnet import DlibFaceResNet

    images = _real_photos(tmp_path, "obama3.jpg", "train__biden__biden.jpg")
    run = tmp_path / "run"
    at = TINY.index("--backbone")
    options = TINY[:at] + ["--backbone", "dlib_face_resnet", "--pretrained"] + TINY[at + 2:]
    result = CliRunner().invoke(train_detector_command, ["--real", str(images), "--run-dir", str(run), "--cache-dir",
                                                         str(tmp_path / "cache"), "--no-progress", "--steps", "2",
                                                         "--val-fraction", "0", "--sbi-landmarks", "none"] + options)
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert "dlib's face-recognition ResNet" in checkpoint["metadata"]["architecture"]
    trained = checkpoint["state_dict"]
    original = DlibFaceResNet.from_dat(dlib_network, up_to="level2").state_dict()
    for name, value in original.items():
        learnt = trained[f"backbone.trunk.{name}"]
        if name.startswith(("stem.", "level4.", "level3.")):
            assert torch.equal(learnt, value), f"frozen {name} moved"
    assert any(not torch.equal(trained[f"backbone.trunk.{n}"], v) for n, v in original.items() if n.startswith("level2."))
    export_checkpoint(run / "checkpoints" / "last.pt", tmp_path / "det.onnx")  # compared with torch inside


def test_webcam_augment_takes_fine_detail_from_about_half_the_crops_and_only_when_asked():
    from engines.face_detail import face_detail
    from train.datasets import WEBCAM_SHARE, augment

    crop = np.clip(np.random.default_rng(0).normal(128, 40, (96, 96, 3)), 0, 255).astype(np.uint8)

    def degraded_share(webcam: bool) -> float:
        # the plain augmentations can soften a crop too; the call's degradation takes most of its detail
        details = [face_detail(augment(crop, np.random.default_rng(seed), webcam=webcam)) for seed in range(200)]
        return float(np.mean(np.array(details) < 0.25 * face_detail(crop)))

    plain, webcam = degraded_share(False), degraded_share(True)
    assert webcam - plain == pytest.approx(WEBCAM_SHARE * (1 - plain), abs=0.12)
