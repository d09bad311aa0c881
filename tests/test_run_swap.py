"""`dfstream run --swap`: the swapper runs in the infer stage and faces are pasted back."""
from __future__ import annotations

import json

import numpy as np

from tests.conftest import needs_shared_data, run_dfstream, shared
from tests.video_helpers import small_frames, video_facts

pytestmark = needs_shared_data

TALKING_HEAD = "real/liveportrait_driving_videos/d0.mp4"  # one frontal face, 512x512


def test_swap_replaces_faces_and_keeps_frames_and_timestamps(tmp_path, tiny_swapper):
    result = run_dfstream("run", "-s", shared(TALKING_HEAD), "--swap", tiny_swapper, "--no-draw",
                          "-o", tmp_path / "swapped.mp4", "--events", tmp_path / "ev.jsonl")
    assert result.returncode == 0, result.stderr
    source, output = video_facts(shared(TALKING_HEAD)), video_facts(tmp_path / "swapped.mp4")
    assert output.frames == source.frames and (output.width, output.height) == (source.width, source.height)
    assert np.allclose(output.times, source.times, atol=1e-3)
    records = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert records and all(r["swapped"] for r in records)
    # pixels change inside the face box and (almost) nowhere else
    before = small_frames(shared(TALKING_HEAD), (128, 128))
    after = small_frames(tmp_path / "swapped.mp4", (128, 128))
    first = records[0]
    x1, y1, x2, y2 = (int(v * 128 / 512) for v in first["box"])
    index = first["frame_index"]
    inside = np.abs(after[index, y1:y2, x1:x2] - before[index, y1:y2, x1:x2]).mean()
    outside_mask = np.ones((128, 128), bool)
    outside_mask[max(0, y1 - 12):y2 + 12, max(0, x1 - 12):x2 + 12] = False
    outside = np.abs(after[index][outside_mask] - before[index][outside_mask]).mean()
    assert inside > 5 and inside > 4 * outside


def test_swap_with_a_detector_scores_each_swapped_face(tmp_path, tiny_swapper, tiny_detector):
    result = run_dfstream("run", "-s", shared(TALKING_HEAD), "--swap", tiny_swapper, "--detector", tiny_detector,
                          "--events", tmp_path / "ev.jsonl", "-o", tmp_path / "out.mp4")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert records and all(r["swapped"] and r["score"] is not None for r in records)


def test_a_detector_given_as_swapper_is_refused(tmp_path, tiny_detector):
    result = run_dfstream("run", "-s", shared(TALKING_HEAD), "--swap", tiny_detector, "-o", tmp_path / "out.mp4")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not a swapper model" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_a_one_shot_inswapper_style_model_runs_with_a_source_photo(tmp_path):
    from tests.test_inswapper import make_embedder, make_inswapper

    swapper = make_inswapper(tmp_path / "inswapper.onnx")
    embedder = make_embedder(tmp_path / "arcface.onnx")
    photo = shared("real/facenet_pytorch/angelina_jolie__1.jpg")
    result = run_dfstream("run", "-s", shared(TALKING_HEAD), "--swap", swapper, "--swap-source", photo,
                          "--embedder", embedder, "--events", tmp_path / "ev.jsonl", "-o", tmp_path / "out.mp4")
    assert result.returncode == 0, result.stderr
    assert video_facts(tmp_path / "out.mp4").frames == video_facts(shared(TALKING_HEAD)).frames
    records = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert records and all(r["swapped"] for r in records)


def test_a_one_shot_swapper_without_its_embedder_is_refused(tmp_path):
    from tests.test_inswapper import make_inswapper

    swapper = make_inswapper(tmp_path / "inswapper.onnx")
    result = run_dfstream("run", "-s", shared(TALKING_HEAD), "--swap", swapper, "--swap-source",
                          shared("real/facenet_pytorch/angelina_jolie__1.jpg"), "-o", tmp_path / "out.mp4")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--embedder" in result.stderr
