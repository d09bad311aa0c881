"""Bad input: one clear line on stderr, a non-zero exit, no traceback, no strays, no fake output."""
from __future__ import annotations

import socket
import uuid

import av
import pytest

from tests.conftest import needs_shared_data, processes_with_env, run_dfstream, shared

CLIP = "real/face_recognition_examples/short_hamilton_clip.mp4"


def assert_clean_failure(result, tmp_path, marker: str, expect: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expect in lines[0], lines[0]
    assert not any(tmp_path.glob("*.mp4")) and not any(tmp_path.glob(".*.partial")), list(tmp_path.iterdir())
    assert processes_with_env(marker) == []


def run_failing(tmp_path, *args):
    marker = f"DFSTREAM_TEST_RUN={uuid.uuid4().hex}"
    key, value = marker.split("=")
    result = run_dfstream("run", *args, "-o", tmp_path / "out.mp4", "--no-progress", env_extra={key: value}, timeout=60)
    return result, marker


def test_missing_file_is_one_clear_line(tmp_path, tiny_detector):
    result, marker = run_failing(tmp_path, "-s", tmp_path / "nope.mp4", "-m", tiny_detector)
    assert_clean_failure(result, tmp_path, marker, "no such file")


def test_a_file_that_is_not_video_is_refused(tmp_path, tiny_detector):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not the frames you are looking for\n" * 50)
    result, marker = run_failing(tmp_path, "-s", fake, "-m", tiny_detector)
    fake.unlink()
    assert_clean_failure(result, tmp_path, marker, "not a video file")


@needs_shared_data
def test_a_truncated_mp4_without_its_index_is_refused(tmp_path, tiny_detector):
    data = shared(CLIP).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # this clip keeps its index (moov) at the end
    result, marker = run_failing(tmp_path, "-s", cut, "-m", tiny_detector)
    cut.unlink()
    assert_clean_failure(result, tmp_path, marker, "truncated")


@needs_shared_data
def test_a_truncated_mp4_found_mid_stream_leaves_no_output(tmp_path, tiny_detector):
    # index first (faststart), then cut: opens fine, runs out of frames half way
    whole = tmp_path / "whole.mp4"
    with av.open(str(shared(CLIP))) as src, av.open(str(whole), "w", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    result, marker = run_failing(tmp_path, "-s", cut, "-m", tiny_detector)
    cut.unlink()
    assert_clean_failure(result, tmp_path, marker, "truncated")


def test_an_unknown_url_scheme_is_refused(tmp_path, tiny_detector):
    result, marker = run_failing(tmp_path, "-s", "gopher://example/cam", "-m", tiny_detector)
    assert_clean_failure(result, tmp_path, marker, "gopher://")


def test_an_rtsp_url_with_nothing_listening_fails_fast(tmp_path, tiny_detector):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the run: nothing listens there
    result, marker = run_failing(tmp_path, "-s", f"rtsp://127.0.0.1:{port}/cam", "-m", tiny_detector,
                                 "--open-timeout", "3")
    assert_clean_failure(result, tmp_path, marker, f"rtsp://127.0.0.1:{port}/cam")


@needs_shared_data
def test_a_missing_model_file_is_one_clear_line(tmp_path):
    result, marker = run_failing(tmp_path, "-s", shared(CLIP), "-m", tmp_path / "missing.onnx")
    assert_clean_failure(result, tmp_path, marker, "not found")


@needs_shared_data
def test_a_model_of_the_wrong_kind_is_refused(tmp_path):
    # the YuNet face detector is an ONNX model, but not a dfstream deepfake detector
    yunet = shared("models/face/libfacedetection_train/face_detection_yunet_2023mar.onnx")
    result, marker = run_failing(tmp_path, "-s", shared(CLIP), "-m", yunet)
    assert_clean_failure(result, tmp_path, marker, "metadata")


@needs_shared_data
def test_a_model_file_that_is_not_a_model_is_refused(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 100)
    result, marker = run_failing(tmp_path, "-s", shared(CLIP), "-m", junk)
    junk.unlink()
    assert_clean_failure(result, tmp_path, marker, "junk.onnx")


@pytest.mark.parametrize("output", ["out.txt", "out"])
@needs_shared_data
def test_an_output_with_an_unknown_container_is_refused(tmp_path, tiny_detector, output):
    result = run_dfstream("run", "-s", shared(CLIP), "-m", tiny_detector, "-o", tmp_path / output)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "container" in result.stderr
    assert not (tmp_path / output).exists()


@needs_shared_data
def test_a_file_with_fewer_frames_than_its_container_claims_is_processed_with_a_warning(tmp_path, tiny_detector):
    short = shared("real/mead_eamm/sad.mp4")  # claims 157 frames, holds 110 (all its bytes are there)
    result = run_dfstream("run", "-s", short, "-m", tiny_detector, "-o", tmp_path / "out.mp4", "--no-progress", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "claims 157 frames but 110 decoded" in result.stderr
    with av.open(str(tmp_path / "out.mp4")) as out:
        assert sum(1 for _ in out.decode(video=0)) == 110
