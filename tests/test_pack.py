"""Face packs: the faces a detector trains on, carried without the media, and trained from where there is no decoder."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import REPO, SHARED_DATA, needs_shared_data
from train.datasets import CACHE_SIZE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cached_record(folder, name: str, label: int, faces: int, seed: int) -> dict:
    """A cache record as train.datasets.cache_faces writes one: smooth crops (JPEG keeps them close), 5 and 68 points."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:CACHE_SIZE, 0:CACHE_SIZE]
    crops = np.array([np.dstack([(x * (k + 1) + y) % 256, (y * 2 + k * 40) % 256, np.full_like(x, 90 + k)])
                      for k in range(faces)], np.uint8).reshape(faces, CACHE_SIZE, CACHE_SIZE, 3)
    landmarks = rng.uniform(60, 160, (faces, 5, 2)).astype(np.float32)
    frames = np.arange(faces, dtype=np.int64) * 4
    file = folder / f"{name}.npz"
    np.savez(file, crops=crops, landmarks=landmarks, frames=frames)
    dense = folder / f"{name}-dense.npy"
    np.save(dense, rng.uniform(40, 180, (faces, 68, 2)).astype(np.float32))
    return {"path": f"/media/elsewhere/{name}.mp4", "label": label, "file": str(file), "dense": str(dense)}


def test_a_pack_brings_back_the_faces_it_was_made_of(tmp_path):
    from train.datasets import load_cached
    from train.pack import read_pack_header, unpack, write_pack

    (tmp_path / "cache").mkdir()
    records = [_cached_record(tmp_path / "cache", "a", 0, 3, 0), _cached_record(tmp_path / "cache", "b", 1, 2, 1),
               _cached_record(tmp_path / "cache", "empty", 0, 0, 2)]  # a file whose faces were all missed
    summary = write_pack(records, tmp_path / "faces.npz", quality=95, landmark_model="pfld68")
    assert (summary["files"], summary["faces"], summary["dense_landmarks"]) == (3, 5, "pfld68")
    assert read_pack_header(tmp_path / "faces.npz")["landmark_model"] == "pfld68"

    back = unpack(tmp_path / "faces.npz", tmp_path / "elsewhere")
    assert [(r["path"], r["label"]) for r in back] == [(r["path"], r["label"]) for r in records]
    before, after = load_cached(records), load_cached(back)
    for key in ("landmarks", "labels", "source", "frames", "dense"):
        np.testing.assert_array_equal(after[key], before[key])
    assert after["crops"].shape == before["crops"].shape
    assert np.abs(after["crops"].astype(int) - before["crops"].astype(int)).mean() < 3  # JPEG at 95
    assert unpack(tmp_path / "faces.npz", tmp_path / "elsewhere") == back  # decoded once, found again


def test_a_file_that_is_not_a_pack_is_refused_in_one_line(tmp_path):
    from train.pack import unpack

    (tmp_path / "notes.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a dfstream face pack"):
        unpack(tmp_path / "notes.npz", tmp_path)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a dfstream face pack"):
        unpack(tmp_path / "other.npz", tmp_path)
    with pytest.raises(FileNotFoundError, match="--pack"):
        unpack(tmp_path / "missing.npz", tmp_path)


@needs_shared_data
def test_a_detector_trains_from_a_pack_without_the_media_or_a_video_decoder(tmp_path):
    """What a lent GPU machine has: the pack, and no PyAV or ZeroMQ."""
    from dfstream.cli.detector import train_pack_command

    photos = tmp_path / "real"
    photos.mkdir()
    for name in ("obama3.jpg", "train__obama__obama.jpg", "train__biden__biden.jpg", "test__alex_lacamoire1.jpg",
                 "train__rose_leslie__img1.jpg", "train__kit_harington__john1.jpeg"):
        (photos / name).symlink_to(SHARED_DATA / "real/face_recognition_examples" / name)
    pack = tmp_path / "faces.npz"
    result = CliRunner().invoke(train_pack_command, ["--real", str(photos), "-o", str(pack), "--max-faces", "1",
                                                     "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "packed 6 faces of 6 files" in result.output
    for link in photos.iterdir():
        link.unlink()  # the media are not there any more
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class NoDecoder(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("av", "zmq"):
                    raise ImportError("not on this machine: " + name)
        sys.meta_path.insert(0, NoDecoder())
        from train.detector import train
        last = train({{"pack": [{str(pack)!r}], "backbone": "mobilenetv3_small_050", "input_size": 64, "batch_size": 4,
                      "workers": 0, "threads": 1, "steps": 2, "checkpoint_every": 2, "val_fraction": 0.34,
                      "cache_dir": {str(tmp_path / "unpacked")!r}}}, {str(tmp_path / "run")!r}, progress=False)
        print(last)
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["pack"] == [str(pack)]
    from train.common import load_checkpoint

    training = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["metadata"]["training"]
    assert len(training["data"]) == 6 and all(p.startswith(str(photos)) for p in training["data"])
    assert training["sbi_landmarks"] == json.loads(json.dumps(config["sbi_landmarks"]))


def test_the_reconstruction_autoencoder_trains_from_a_packs_real_faces(tmp_path):
    from train.pack import write_pack
    from train.recon import fit

    (tmp_path / "cache").mkdir()
    records = [_cached_record(tmp_path / "cache", "real", 0, 12, 0), _cached_record(tmp_path / "cache", "fake", 1, 12, 1),
               _cached_record(tmp_path / "cache", "real2", 0, 8, 2)]
    write_pack(records, tmp_path / "faces.npz")
    result = fit([], tmp_path / "ae.pt", packs=(str(tmp_path / "faces.npz"),), cache_dir=tmp_path / "unpacked", steps=2,
                 device="cpu")
    assert (result["faces"], result["files"], result["steps"], result["device"]) == (20, 2, 2, "cpu")  # no fake face
    with pytest.raises(ValueError, match="--real or --pack"):
        fit([], tmp_path / "none.pt", packs=(), cache_dir=tmp_path / "unpacked")


def test_the_temporal_head_trains_from_a_packs_real_videos_at_a_multiple_of_its_stride(tmp_path):
    from engines.networks import build_model
    from train.common import load_checkpoint, save_checkpoint
    from train.detector import DEFAULTS, make_metadata
    from train.pack import unpack, write_pack
    from train.temporal import _largest_face_sequences, train_temporal

    (tmp_path / "cache").mkdir()
    records = [_cached_record(tmp_path / "cache", "real", 0, 12, 0), _cached_record(tmp_path / "cache", "fake", 1, 12, 1)]
    records.append(dict(_cached_record(tmp_path / "cache", "photo", 0, 1, 2), path="/media/elsewhere/photo.jpg"))
    write_pack(records, tmp_path / "faces.npz", every_n_frames=4)  # frames 0, 4, ..., 44
    back = unpack(tmp_path / "faces.npz", tmp_path / "unpacked")
    assert [len(s[0]) for s in _largest_face_sequences(back[:1], 8)] == [6]  # 0, 8, ..., 40

    arch = {"family": "detector", "backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.0}
    det = save_checkpoint(tmp_path / "det.pt", build_model(arch), arch, make_metadata(dict(DEFAULTS, input_size=48)))
    options = dict(seq_len=3, steps=2, batch_size=2, hidden=8, cache_dir=str(tmp_path / "unpacked"), checkpoint_every=1,
                   threads=1, progress=False)
    last = train_temporal(det, [], tmp_path / "run", packs=(str(tmp_path / "faces.npz"),), every_n_frames=8, **options)
    checkpoint = load_checkpoint(last)
    assert checkpoint["step"] == 2
    assert checkpoint["metadata"]["training"]["videos"] == ["/media/elsewhere/real.mp4"]  # no fake, no photo
    assert checkpoint["metadata"]["extra"]["every_n_frames"] == 8

    with pytest.raises(ValueError, match="every 4 frames.*--every-n-frames 10"):
        train_temporal(det, [], tmp_path / "run10", packs=(str(tmp_path / "faces.npz"),), every_n_frames=10, **options)
    write_pack(records, tmp_path / "old.npz")  # a pack that does not say its stride
    with pytest.raises(ValueError, match="does not say which frames"):
        train_temporal(det, [], tmp_path / "run_old", packs=(str(tmp_path / "old.npz"),), every_n_frames=8, **options)
