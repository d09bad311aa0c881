"""End to end against a real RTSP server on 127.0.0.1 (GStreamer, tests/rtsp_server.py).

An RTSP source is live: the source keeps only the newest frame, so a slow machine
drops frames, but every decoded frame is either written or counted as dropped, the
run (with --no-reconnect; by default a camera whose stream ends is reconnected, see
test_reconnect.py) ends by itself when the served clip ends, and the output keeps the stream's
size and sane, increasing timestamps.  A URL that does not answer fails with one
line, within --open-timeout, leaving no process behind.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.live_helpers import (
    CameraProxy,
    decode_frames,
    free_port,
    read_index,
    reencode_clip,
    run_cli,
    shared_file,
)
from tests.rtsp_server import rtsp_server

TALKING_HEAD = "real/liveportrait_driving_videos/d3.mp4"  # 512x512, 30 fps, one frontal face (YuNet: every frame)
OBAMA = "real/deepfacelive_sample_videos/Obama_speaking.mp4"  # 512x388, 30 fps, one frontal face
CLIP_FRAMES = 90  # 3 s at 30 fps: served in real time, so a run takes about that plus start-up
FPS = 30
STARTUP_MARGIN_S = 10.0  # interpreter, imports and the stage processes on 2 busy cores
RUN_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Short clips re-encoded with one slice per frame (the recipe's pitfall), each frame
    carrying its index as a barcode on its right edge, in a temp dir."""
    folder = tmp_path_factory.mktemp("rtsp-clips")
    return {
        "head": reencode_clip(shared_file(TALKING_HEAD), folder / "head.mp4", CLIP_FRAMES, barcode=True),
        "obama": reencode_clip(shared_file(OBAMA), folder / "obama.mp4", CLIP_FRAMES, barcode=True),
    }


@pytest.fixture(scope="module")
def single_run(rtsp_ready, tiny_detector, clips, tmp_path_factory):
    """One RTSP stream through the whole pipeline; the assertions below share it."""
    out = tmp_path_factory.mktemp("rtsp-run")
    with rtsp_server({"cam": clips["head"]}) as server:
        url = server.url("cam")
        run = run_cli(["run", "-s", url, "-m", tiny_detector, "-o", out / "out.mp4", "--events", out / "events.jsonl",
                       "--metrics-json", out / "metrics.json", "--no-progress", "--no-reconnect"], timeout=RUN_TIMEOUT_S)
    return url, out, run


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_rtsp_run_ends_by_itself_when_the_served_clip_ends(single_run):
    _, out, run = single_run
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    # served in real time: about the clip's length plus start-up, not a hang until a read timeout
    assert run.elapsed < CLIP_FRAMES / FPS + STARTUP_MARGIN_S + 10, f"took {run.elapsed:.1f} s"
    assert run.strays == [], f"processes left behind: {run.strays}"
    assert _metrics(out)["stopped_by_user"] is False


def test_rtsp_output_decodes_at_the_streams_resolution(single_run, clips):
    _, out, run = single_run
    assert run.returncode == 0, run.stderr[-3000:]
    images, _ = decode_frames(out / "out.mp4")
    assert images, "the output has no frames"
    source, _ = decode_frames(clips["head"])
    assert images[0].shape == source[0].shape  # 512x512x3


def test_rtsp_every_decoded_frame_is_written_or_counted_as_dropped(single_run):
    _, out, run = single_run
    assert run.returncode == 0, run.stderr[-3000:]
    (stream,) = _metrics(out)["streams"]
    assert stream["live"] is True
    # over TCP nothing is lost on the wire: the source decodes the whole clip
    assert CLIP_FRAMES - 2 <= stream["frames_decoded"] <= CLIP_FRAMES
    assert stream["frames_written"] + stream["dropped"] == stream["frames_decoded"]
    assert stream["frames_written"] >= CLIP_FRAMES // 10, "nearly everything was dropped"
    images, _ = decode_frames(out / "out.mp4")
    assert len(images) == stream["frames_written"]
    latency = stream["latency_ms"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]


def test_rtsp_output_timestamps_start_at_zero_and_match_the_served_pictures(single_run):
    """RTSP timestamps start at an arbitrary origin (and FFmpeg gives the first frame none):
    the output must start at 0, increase, and show each served frame at the time it had
    in the served clip, up to one constant offset (the first frame written)."""
    _, out, run = single_run
    assert run.returncode == 0, run.stderr[-3000:]
    images, times = decode_frames(out / "out.mp4")
    assert None not in times
    served = [read_index(image) for image in images]  # which served frame each written frame is
    assert served == sorted(set(served)), f"frames repeated or out of order: {served}"
    assert served[-1] < CLIP_FRAMES
    times = np.array(times)
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    assert np.all(np.diff(times) > 0), f"timestamps do not increase: {times.tolist()}"
    expected = (np.array(served) - served[0]) / FPS  # where those frames sit in the served clip
    assert np.allclose(times, expected, atol=0.5 / FPS), f"served frames {served} written at {times.tolist()}"


def test_rtsp_events_are_json_lines_with_the_face_found(single_run):
    url, out, run = single_run
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    # the camera's health: starting, then streaming (a clean end of stream is no change)
    assert [(r["state"], r["time"][-1]) for r in records if r["type"] == "health"] == [("starting", "Z"), ("streaming", "Z")]
    events = [r for r in records if r["type"] == "face"]
    assert events, "no events: the face in the clip was not found"
    (stream,) = _metrics(out)["streams"]
    for event in events:
        assert event["stream"] == stream["name"]
        x1, y1, x2, y2 = event["box"]
        assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
        assert (x2 - x1) > 100 and (y2 - y1) > 100  # the face fills much of the frame
        assert event["face_score"] >= 0.6
        assert event["track_id"] is not None
        assert event["verdict"] in ("real", "fake", "uncertain")
        assert event["time_s"] is not None and event["time_s"] >= 0
    frames = sorted({e["frame_index"] for e in events})
    assert len(frames) >= 3, f"faces on only {len(frames)} frames"
    # an event names the frame it was found on: the frame written at the event's time is that
    # frame (its barcode and the event's frame index differ only by where decoding started)
    images, times = decode_frames(out / "out.mp4")
    times = np.array(times)
    offsets = set()
    for event in events:
        nearest = int(np.argmin(np.abs(times - event["time_s"])))
        assert abs(times[nearest] - event["time_s"]) < 0.5 / FPS, f"no frame written at {event['time_s']}"
        offsets.add(event["frame_index"] - read_index(images[nearest]))
    assert len(offsets) == 1, f"events and written frames disagree: offsets {offsets}"
    # one person, one track (the tracker keeps the id across analysed frames)
    assert len({e["track_id"] for e in events}) <= 2


def test_two_rtsp_streams_at_once_write_one_output_each(rtsp_ready, tiny_detector, clips, tmp_path):
    with rtsp_server({"head": clips["head"], "obama": clips["obama"]}) as server:
        run = run_cli(["run", "-s", server.url("head"), "-s", server.url("obama"), "-m", tiny_detector,
                       "-o", tmp_path / "out" / "{stream}.mp4", "--metrics-json", tmp_path / "metrics.json",
                       "--no-progress", "--no-reconnect"], timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.strays == []
    streams = json.loads((tmp_path / "metrics.json").read_text())["streams"]
    assert len(streams) == 2
    outputs = sorted((tmp_path / "out").glob("*.mp4"))
    assert len(outputs) == 2, outputs
    sizes = {}
    for stream in streams:
        assert stream["live"] is True
        assert stream["frames_written"] + stream["dropped"] == stream["frames_decoded"] >= CLIP_FRAMES - 2
        images, _ = decode_frames(stream["output"])
        assert len(images) == stream["frames_written"] > 0
        sizes[stream["url"].rsplit("/", 1)[1]] = images[0].shape[:2]
    # each output has its own stream's picture size: the streams were not mixed up
    assert sizes == {"head": (512, 512), "obama": (388, 512)}


def test_swap_runs_on_an_rtsp_source(rtsp_ready, tiny_swapper, tiny_detector, clips, tmp_path):
    with rtsp_server({"cam": clips["head"]}) as server:
        run = run_cli(["run", "-s", server.url("cam"), "--swap", tiny_swapper, "--detector", tiny_detector,
                       "-o", tmp_path / "swapped.mp4", "--events", tmp_path / "events.jsonl",
                       "--metrics-json", tmp_path / "metrics.json", "--no-progress", "--no-reconnect"],
                      timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.strays == []
    stream = json.loads((tmp_path / "metrics.json").read_text())["streams"][0]
    assert stream["frames_written"] + stream["dropped"] == stream["frames_decoded"]
    images, _ = decode_frames(tmp_path / "swapped.mp4")
    assert len(images) == stream["frames_written"] > 0
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    events = [e for e in events if e["type"] == "face"]
    assert events and all(e["swapped"] and e["score"] is not None for e in events)


def _assert_one_line_error(run, timeout: float) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr_lines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{run.stderr}"
    assert lines[0].startswith(("Error:", "dfstream:")), lines[0]
    assert run.elapsed < timeout + STARTUP_MARGIN_S, f"took {run.elapsed:.1f} s with --open-timeout {timeout:g}"
    assert run.strays == [], f"processes left behind: {run.strays}"
    return lines[0]


def test_rtsp_url_where_nothing_listens_fails_with_one_line(tiny_detector, tmp_path):
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/cam"
    run = run_cli(["run", "-s", url, "-m", tiny_detector, "-o", tmp_path / "out.mp4", "--open-timeout", "3"], timeout=60)
    line = _assert_one_line_error(run, 3)
    assert url in line
    assert not (tmp_path / "out.mp4").exists()


def test_rtsp_server_that_accepts_but_never_answers_fails_within_open_timeout(tiny_detector, tmp_path):
    with CameraProxy(modes=("silent",)) as listener:
        url = f"rtsp://127.0.0.1:{listener.port}/cam"
        run = run_cli(["run", "-s", url, "-m", tiny_detector, "-o", tmp_path / "out.mp4", "--open-timeout", "2"], timeout=60)
    # the client did connect and ask (so this is the answer timeout, not a refused connection) ...
    assert listener.connections >= 1
    assert listener.received.startswith(b"OPTIONS rtsp://") or b"RTSP/1.0" in listener.received
    # ... and gave up after about --open-timeout, not before and not much later
    line = _assert_one_line_error(run, 2)
    assert run.elapsed >= 2.0
    assert url in line
    assert not (tmp_path / "out.mp4").exists()


def test_rtsp_server_that_stops_answering_after_the_probe_fails_within_open_timeout(rtsp_ready, tiny_detector,
                                                                                      clips, tmp_path):
    """The launcher's probe gets an answer, the source stage's own connection does not: that
    connection must give up after the user's --open-timeout too, not after a built-in one."""
    with rtsp_server({"cam": clips["head"]}) as server, CameraProxy(server.port, ("relay", "silent")) as proxy:
        url = f"rtsp://127.0.0.1:{proxy.port}/cam"
        # (no periodic metrics table on stderr while the stages start: only the error line)
        run = run_cli(["run", "-s", url, "-m", tiny_detector, "-o", tmp_path / "out.mp4", "--open-timeout", "2",
                       "--no-progress", "--metrics-interval", "60"], timeout=60)
    assert proxy.connections >= 2 and proxy.failing_since is not None, "the source stage never connected"
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr_lines()
    assert len(lines) == 1 and lines[0].startswith(("Error:", "dfstream:")) and url in lines[0], run.stderr
    waited = run.ended - proxy.failing_since
    assert waited < 2 + 4, f"the unanswered connection was given up {waited:.1f} s after it was made"
    assert run.strays == []
    assert not (tmp_path / "out.mp4").exists()
