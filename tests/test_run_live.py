"""Live sources never build latency; Ctrl-C and crashed stages are handled cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path


from stages.source import _NewestFrameSlot
from tests.conftest import REPO, needs_shared_data, processes_with_env, run_dfstream, shared
from tests.video_helpers import video_facts

LONG_CLIP = "real/liveportrait_driving_videos/d6.mp4"  # 480x480, 30 fps, 33 s, audio


def test_newest_frame_slot_keeps_only_the_newest_and_counts_the_rest():
    slot = _NewestFrameSlot()
    for item in ("a", "b", "c"):
        slot.put(item)
    assert slot.take(timeout=0) == "c"
    assert slot.dropped == 2
    assert slot.take(timeout=0.01) is None
    slot.finish()
    assert slot.take(timeout=1.0) is None  # finished: returns at once


@needs_shared_data
def test_a_live_file_is_paced_and_fully_accounted_for(tmp_path, tiny_detector):
    clip = shared("real/liveportrait_driving_videos/d0.mp4")  # 78 frames at 25 fps: about 3 s live
    started = time.monotonic()
    result = run_dfstream("run", "-s", clip, "--live", "-m", tiny_detector, "-o", tmp_path / "out.mp4",
                          "--metrics-json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 3.0  # read at its own frame rate, not as fast as possible
    stream = json.loads((tmp_path / "m.json").read_text())["streams"][0]
    assert stream["live"] is True
    assert stream["frames_decoded"] == video_facts(clip).frames
    assert stream["frames_written"] + stream["dropped"] == stream["frames_decoded"]
    assert video_facts(tmp_path / "out.mp4").frames == stream["frames_written"]
    assert stream["latency_ms"]["p99_ms"] is not None


def test_a_live_stream_is_encoded_without_b_frames_with_the_fastest_preset(tmp_path, tiny_detector):
    """x264's zerolatency tune for live sources: every frame leaves the encoder at once; and its
    ultrafast preset, which (unlike the files' superfast) turns CABAC off."""
    import av

    clip = shared("real/liveportrait_driving_videos/d0.mp4")
    for mode in ("--live", None):
        output = tmp_path / f"{mode or 'file'}.mp4"
        result = run_dfstream("run", "-s", clip, *([mode] if mode else []), "-m", tiny_detector, "-o", output)
        assert result.returncode == 0, result.stderr

    def picture_types(path):
        with av.open(str(path)) as container:
            return {av.video.frame.PictureType(frame.pict_type) for frame in container.decode(video=0)}

    b_frame = av.video.frame.PictureType.B
    assert b_frame in picture_types(tmp_path / "file.mp4")  # files keep the preset's B-frames
    assert b_frame not in picture_types(tmp_path / "--live.mp4")
    # x264 writes the settings it used into the stream
    assert b"cabac=1" in (tmp_path / "file.mp4").read_bytes()
    assert b"cabac=0" in (tmp_path / "--live.mp4").read_bytes()


@needs_shared_data
def test_a_live_source_faster_than_the_pipeline_drops_frames_instead_of_queueing(tmp_path, tiny_detector):
    # 1080p at 25 fps encoded with x264 "medium" (about 6 fps here), face detection on every
    # full-size frame: two cores cannot keep up
    clip = shared("real/facenet_pytorch/video.mp4")  # 105 frames, 4.2 s
    result = run_dfstream("run", "-s", clip, "--live", "-m", tiny_detector, "--detect-every", "1",
                          "--detect-size", "1920", "--preset", "medium", "--max-latency-ms", "500",
                          "-o", tmp_path / "out.mp4", "--metrics-json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    stream = metrics["streams"][0]
    assert stream["dropped"] > 0.3 * stream["frames_decoded"]
    assert stream["frames_written"] + stream["dropped"] == stream["frames_decoded"]
    # no frame waits in front of face detection: latency is the work itself, not a queue
    assert metrics["wait_ms"]["detect"]["p99"] < 0.5 * metrics["stage_ms"]["detect"]["p50"]
    # had every frame queued, the last ones would come out 10 s or more after capture
    assert stream["latency_ms"]["p99_ms"] < 4000
    # and frames do not queue behind the encoder either: the source sends a new one only when
    # the pipeline can finish it within the latency budget (about 2 s for half the frames without)
    assert stream["latency_ms"]["p50_ms"] < 1000
    assert 0 < stream["dropped_over_latency_budget"] <= stream["dropped"]
    assert "while the pipeline was behind its latency budget" in result.stderr


def _start_run(tmp_path, *args) -> tuple[subprocess.Popen, str]:
    marker = uuid.uuid4().hex
    env = dict(os.environ, DFSTREAM_TEST_RUN=marker)
    process = subprocess.Popen([sys.executable, "-m", "dfstream", "run", *map(str, args), "--no-progress"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, f"DFSTREAM_TEST_RUN={marker}"


def _stage_pid(marker: str, name: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in processes_with_env(marker):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                    return pid
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no {name} process appeared")


def _wait_for_frames(path_hint: Path, process: subprocess.Popen, seconds: float) -> None:
    time.sleep(seconds)
    assert process.poll() is None, process.communicate()[1]


@needs_shared_data
def test_ctrl_c_stops_every_stage_and_leaves_a_playable_file(tmp_path, tiny_detector):
    process, marker = _start_run(tmp_path, "-s", shared(LONG_CLIP), "--live", "-m", tiny_detector,
                                 "-o", tmp_path / "out.mp4", "--events", tmp_path / "ev.jsonl")
    _stage_pid(marker, "dfs-sink0")
    _wait_for_frames(tmp_path, process, 6.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    facts = video_facts(tmp_path / "out.mp4")
    assert 0 < facts.frames < video_facts(shared(LONG_CLIP)).frames
    assert facts.audio_packets > 0
    assert (tmp_path / "ev.jsonl").read_text().strip()
    assert processes_with_env(marker) == []


@needs_shared_data
def test_a_crashed_stage_stops_a_file_run_with_a_clear_error(tmp_path, tiny_detector):
    process, marker = _start_run(tmp_path, "-s", shared(LONG_CLIP), "-m", tiny_detector, "-o", tmp_path / "out.mp4")
    os.kill(_stage_pid(marker, "dfs-detect0"), signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "detect[0] crashed" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*.partial"))
    assert processes_with_env(marker) == []


@needs_shared_data
def test_a_crashed_stage_is_restarted_in_a_live_run(tmp_path, tiny_detector):
    process, marker = _start_run(tmp_path, "-s", shared(LONG_CLIP), "--live", "-m", tiny_detector,
                                 "-o", tmp_path / "out.mp4", "--metrics-json", tmp_path / "m.json")
    old = _stage_pid(marker, "dfs-infer0")
    _wait_for_frames(tmp_path, process, 6.0)
    os.kill(old, signal.SIGKILL)
    new = _stage_pid(marker, "dfs-infer0")
    deadline = time.monotonic() + 20
    while new == old and time.monotonic() < deadline:
        time.sleep(0.2)
        new = _stage_pid(marker, "dfs-infer0")
    assert new != old
    _wait_for_frames(tmp_path, process, 4.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "infer[0] crashed" in stderr and "restarting" in stderr
    assert process.returncode == 130, stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["restarts"] == 1
    infer = next(r for r in metrics["stages"] if r["stage"] == "infer")
    assert infer["frames"] > 0  # the new infer process took over the stream
    assert video_facts(tmp_path / "out.mp4").frames == metrics["streams"][0]["frames_written"]
    assert processes_with_env(marker) == []


@needs_shared_data
def test_four_live_streams_all_reach_the_end_and_the_run_exits(tmp_path, tiny_detector):
    # Regression: a stage that exited right after its last send could lose that send
    # (an end-of-stream marker) inside ZeroMQ, and the run then waited for ever.
    clip = shared("real/liveportrait_driving_videos/d0.mp4")
    for attempt in range(2):
        out = tmp_path / str(attempt)
        result = run_dfstream("run", *[a for _ in range(4) for a in ("-s", clip)], "--live", "-m", tiny_detector,
                              "-o", out / "{index}.mp4", "--metrics-json", out / "m.json", timeout=90)
        assert result.returncode == 0, result.stderr
        streams = json.loads((out / "m.json").read_text())["streams"]
        assert len(streams) == 4
        for stream in streams:
            assert stream["frames_written"] + stream["dropped"] == stream["frames_decoded"]
            assert video_facts(out / f"{stream['stream_id']}.mp4").frames == stream["frames_written"]


def _schedule(config_overrides: dict, detector_answers: list[bool], frames: int) -> tuple[list, list, object]:
    """Which of the first ``frames`` frames of a clip a source sends to detection and classification."""
    from pipeline.config import SourceConfig
    from stages.source import SourceStage, probe

    source = SourceStage(SourceConfig(probe(str(shared("real/liveportrait_driving_videos/d0.mp4"))), **config_overrides))
    answers = iter(detector_answers)
    source.detector_free = lambda: next(answers)
    source.open()
    try:
        messages = [source.process(None)[0][0] for _ in range(frames)]
    finally:
        source.close()
    detected = [m.seq for m in messages if m.to_detect]
    classified = [m.seq for m in messages if m.to_classify]
    assert all(m.image is not None for m in messages if m.to_detect)
    return detected, classified, source


@needs_shared_data
def test_a_due_frame_goes_round_a_busy_detector_and_the_next_frame_is_detected():
    # frame 3 is due but finds the detector busy: it is sent round it, and frame 4 is detected
    detected, classified, source = _schedule(
        {"detect_every": 3, "classify_every": 6, "detect_when_free": True, "all_pixels": False},
        [True, False, True, True, True], frames=12)
    assert detected == [0, 4, 7, 10]
    assert classified == [0, 7]  # every 2nd detection, whichever frames they fell on
    assert source.detections_postponed == 1 and source.frames_to_detect == 4
    assert source.pictures_sent == 4  # events only: pixels only for the detector


@needs_shared_data
def test_without_detect_when_free_the_schedule_is_every_nth_frame():
    detected, classified, source = _schedule({"detect_every": 3, "classify_every": 6}, [True] * 12, frames=12)
    assert detected == [0, 3, 6, 9] and classified == [0, 6]
    assert source.detections_postponed == 0 and source.pictures_sent == 12


@needs_shared_data
def test_a_live_stream_keeps_its_frames_when_the_face_detector_cannot_keep_up(tmp_path, tiny_detector):
    # 1080p at 25 fps with detection asked on every full-size frame: the detector takes several
    # frame times per frame, so most due frames go round it, tracked instead of dropped
    clip = shared("real/facenet_pytorch/video.mp4")
    result = run_dfstream("run", "-s", clip, "--live", "-m", tiny_detector, "--detect-every", "1",
                          "--detect-size", "1920", "--events", tmp_path / "events.jsonl",
                          "--metrics-json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    stream = metrics["streams"][0]
    source = [row for row in metrics["stages"] if row["stage"] == "source"][0]["extra"]
    detect = [row for row in metrics["stages"] if row["stage"] == "detect"][0]
    assert stream["frames_written"] + stream["dropped"] == stream["frames_decoded"]
    assert 0 < source["to_detect"] == detect["frames"] < 0.5 * stream["frames_decoded"]
    assert source["detections_postponed"] > stream["dropped"]


def test_only_swapping_sources_wait_for_the_face_detector():
    """Detection runs as often as it can for detection runs; a swap must see every face on every frame."""
    from pipeline.config import InferConfig, RunConfig, StreamInfo
    from runtime.graph import build_graph
    from pipeline.transport import EndpointAllocator

    camera = StreamInfo(stream_id=0, url="rtsp://127.0.0.1/cam", kind="rtsp", live=True, name="cam",
                        width=1280, height=720, fps=30.0, time_base=(1, 90000), frame_count=None)
    endpoints = EndpointAllocator("ipc")
    try:
        for mode, waits in (("detect", False), ("swap", True)):
            specs = build_graph(RunConfig(streams=[camera], infer=InferConfig(mode=mode)), endpoints,
                                "ipc://control", "ipc://report")
            source = next(s for s in specs if s.stage == "source")
            assert source.config.detect_when_free is not waits
            assert source.credit_inbox  # either way, a frame goes to detect only when a replica asked for one
    finally:
        endpoints.cleanup()


def test_one_live_stream_infers_with_every_core_other_runs_with_one_thread_unless_told():
    from pipeline.config import InferConfig, RunConfig, StreamInfo
    from runtime.graph import build_graph
    from pipeline.transport import EndpointAllocator

    def stream(live, stream_id=0):
        return StreamInfo(stream_id=stream_id, url=f"x{stream_id}", kind="rtsp" if live else "file", live=live,
                          name=f"x{stream_id}", width=64, height=64, fps=30.0, time_base=(1, 30), frame_count=None)

    endpoints = EndpointAllocator("ipc")
    try:
        for live, count, chosen, expected in ((False, 1, None, 1), (True, 1, None, None), (True, 1, 1, 1),
                                              (False, 1, 2, 2), (True, 4, None, 1), (True, 4, 2, 2)):
            streams = [stream(live, i) for i in range(count)]
            specs = build_graph(RunConfig(streams=streams, infer=InferConfig(threads=chosen)), endpoints,
                                "ipc://control", "ipc://report")
            assert [s.config.threads for s in specs if s.stage == "infer"] == [expected]
    finally:
        endpoints.cleanup()
