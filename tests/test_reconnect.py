"""Live sources that survive outages: reconnect with backoff, per-stream health, events as they happen.

End to end against a real RTSP server on 127.0.0.1 (GStreamer, tests/rtsp_server.py) that is
killed and restarted, and a TCP proxy in front of it that can cut its connections and then
answer with silence or garbage. The unit tests cover the backoff schedule, the timestamps
across a reconnect, the events file and the redaction of credentials in health records.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import signal
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import SOURCE_RTSP, ReconnectConfig, RunConfig, SourceConfig, StreamInfo
from pipeline.health import Health, HealthChange
from tests.live_helpers import CameraProxy, CliProcess, decode_frames, shared_file, wait_no_strays
from tests.rtsp_server import rtsp_server, stop_process

TALKING_HEAD = "real/liveportrait_driving_videos/d3.mp4"  # 512x512, 30 fps, 354 frames, one face
FPS = 30
CLIP_FRAMES = 330  # 11 s served in real time: longer than a test's run, so no stream ends by itself
SIZE = 256  # small pictures: two cameras on two busy cores
STARTUP_S = 60.0  # interpreter, imports and stage processes on a busy machine


# -- unit tests ----------------------------------------------------------------------------


def test_backoff_doubles_from_initial_up_to_the_maximum_with_jitter_below_each_ceiling():
    from stages.reconnect import Backoff

    config = ReconnectConfig(initial_s=0.5, max_s=4.0, jitter=0.5)
    backoff = Backoff(config, random.Random(1))
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for attempt in range(1, 12):
        delays = [backoff.delay(attempt) for _ in range(200)]
        top = backoff.ceiling(attempt)
        assert all(0.5 * top <= d <= top for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.2 * top  # jittered: cameras do not retry in lockstep
    assert backoff.ceiling(10_000) == 4.0  # no overflow for a camera that is down for days


def test_backoff_without_jitter_is_exact_and_attempts_run_out_only_when_limited():
    from stages.reconnect import Backoff

    exact = Backoff(ReconnectConfig(initial_s=1.0, max_s=8.0, jitter=0.0))
    assert [exact.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    limited = Backoff(ReconnectConfig(attempts=2))
    assert [limited.exhausted(n) for n in (1, 2, 3)] == [False, False, True]
    forever = Backoff(ReconnectConfig(attempts=0))
    assert not any(forever.exhausted(n) for n in (1, 100, 10_000))


def _camera(url: str = "rtsp://127.0.0.1:8554/cam", name: str | None = None) -> StreamInfo:
    from stages.source import _stream_name

    return StreamInfo(stream_id=0, url=url, kind=SOURCE_RTSP, live=True, name=name or _stream_name(url, SOURCE_RTSP, 0),
                      width=SIZE, height=SIZE, fps=30.0, time_base=(1, 90000), frame_count=None)


def test_health_records_and_stream_names_carry_no_credentials():
    from stages.reconnect import HealthTracker

    url = "rtsp://admin:hunter2@10.1.2.3:554/live?token=abc123&channel=1"
    stream = _camera(url)
    assert "hunter2" not in stream.name and "admin" not in stream.name and "abc123" not in stream.name
    assert "10.1.2.3" in stream.name
    tracker = HealthTracker(stream)
    tracker.set(Health.STARTING, f"opening {url}")
    tracker.set(Health.RECONNECTING, f"attempt 1 in 0.5 s: {url}: Connection refused\nsecond line")
    changes = tracker.drain()
    assert [c.state for c in changes] == [Health.STARTING, Health.RECONNECTING]
    assert changes[1].previous == Health.STARTING and changes[1].reconnects == 1
    for change in changes:
        record = change.record()
        text = json.dumps(record)
        assert "hunter2" not in text and "abc123" not in text and "admin:" not in text
        assert record["type"] == "health" and "\n" not in record["detail"]
        assert dt.datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ")  # UTC, as utc_time writes it
    assert tracker.drain() == []  # each change is handed over once


def test_metrics_document_shows_source_urls_without_credentials():
    from pipeline.metrics import RunMetrics

    stream = _camera("rtsp://admin:hunter2@10.1.2.3:554/live")
    metrics = RunMetrics(RunConfig(streams=[stream]))
    metrics.health_changed(HealthChange(0, stream.name, Health.RECONNECTING, Health.STREAMING,
                                        "attempt 1 in 0.5 s", reconnects=1, epoch_s=time.time()))
    document = metrics.document(1.0, None, False)
    assert "hunter2" not in json.dumps(document, default=str)
    (row,) = document["streams"]
    assert row["url"] == "rtsp://***@10.1.2.3:554/live"
    assert row["health"]["state"] == "reconnecting" and row["reconnects"] == 1


def test_timestamps_keep_moving_forward_across_a_reconnect_by_the_outage_gap():
    from stages.source import SourceStage

    source = SourceStage(SourceConfig(stream=_camera()))
    base = Fraction(1, 90000)
    step = 3000  # one frame at 30 fps in 1/90000
    first = [source._live_pts(500_000 + i * step, base, i, 100.0 + i / 30, 0) for i in range(3)]
    assert first == [0, step, 2 * step]
    # the camera comes back 4 s later with a new origin (and another time base)
    after = [source._live_pts(7 + i * 3, Fraction(1, 90), 3 + i, 104.0 + 2 / 30 + i / 30, 1) for i in range(3)]
    assert after[0] == 2 * step + 4 * 90000  # the gap in the output is the outage's
    assert after[1] - after[0] == step and after[2] - after[1] == step


def test_a_camera_whose_frames_the_pipeline_refuses_for_2_s_is_blocked_until_one_is_taken():
    from stages.source import SourceStage

    source = SourceStage(SourceConfig(stream=_camera()))
    source.health.set(Health.STREAMING)
    source.health_changes()
    source.note_refused(1.0)
    assert source.health_changes() == []  # a busy detector for a moment is normal
    source.note_refused(2.5)
    source.note_refused(3.0)
    (blocked,) = source.health_changes()
    assert (blocked.previous, blocked.state) == (Health.STREAMING, Health.BLOCKED)
    source.note_refused(0.0)
    (again,) = source.health_changes()
    assert (again.previous, again.state) == (Health.BLOCKED, Health.STREAMING)
    source.health.set(Health.RECONNECTING)
    source.note_refused(10.0)
    assert [c.state for c in source.health_changes()] == [Health.RECONNECTING]  # the camera's fault, not the pipeline's


def test_a_camera_back_at_another_size_has_its_frames_scaled_to_the_size_it_started_at():
    import av

    from pipeline import pictures
    from stages.source import SourceStage

    source = SourceStage(SourceConfig(stream=_camera()))  # probed at SIZE x SIZE
    frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 128, np.uint8), format="bgr24")
    frame.pts, frame.time_base = 0, Fraction(1, 90000)
    message = source._message(frame, time.time(), 0)
    assert pictures.frame_size(message.image, message.pixel_format) == (SIZE, SIZE)


def test_reconnect_settings_reach_each_camera_source_and_survive_a_plan_file(tmp_path):
    from pipeline.transport import EndpointAllocator
    from runtime.graph import build_graph
    from runtime.plan import RunPlan, load_plan, save_plan

    settings = ReconnectConfig(stall_timeout_s=2.0, initial_s=0.1, max_s=3.0, attempts=4)
    config = RunConfig(streams=[_camera()], reconnect=settings)
    endpoints = EndpointAllocator("tcp")
    plan = RunPlan(endpoints.endpoint("control"), endpoints.endpoint("report"), [])
    plan.specs = build_graph(config, endpoints, plan.control, plan.report)
    assert plan.spec("source[0]").config.reconnect == settings
    assert plan.spec("annotate+sink[0]").await_exited == ["source[0]"]  # the sink writes the sources' last health changes
    save_plan(tmp_path / "plan.json", config, plan)
    loaded_config, loaded = load_plan(tmp_path / "plan.json")
    assert loaded_config.reconnect == settings
    assert loaded.spec("source[0]").config.reconnect == settings
    assert loaded.spec("annotate+sink[0]").await_exited == ["source[0]"]


def test_events_file_lines_are_on_disk_as_soon_as_written(tmp_path):
    from stages.sink import EventsFile

    path = tmp_path / "sub" / "events.jsonl"
    events = EventsFile(path)
    events.write({"type": "health", "state": "starting"})
    assert path.read_text() == '{"type": "health", "state": "starting"}\n'  # no buffer to flush first
    events.write({"type": "face", "score": 0.5})
    assert [json.loads(line)["type"] for line in path.read_text().splitlines()] == ["health", "face"]
    events.close()
    EventsFile(path).close()
    assert path.read_text() == ""  # a new run starts a new file


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The talking head, small and 11 s long, one slice per frame (what the RTSP payloader needs)."""
    import av

    target = tmp_path_factory.mktemp("reconnect-clip") / "head.mp4"
    with av.open(str(shared_file(TALKING_HEAD))) as inp, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.thread_type = "FRAME"
        stream.options = {"preset": "ultrafast"}
        for index, frame in enumerate(inp.decode(video=0)):
            if index >= CLIP_FRAMES:
                break
            frame = frame.reformat(width=SIZE, height=SIZE, format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return target


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _health(path: Path, stream: str | None = None) -> list[dict]:
    return [r for r in _records(path) if r["type"] == "health" and (stream is None or r["stream"] == stream)]


def _wait_for(what: str, condition, run: CliProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if run.process.poll() is not None:
            _, stderr = run.process.communicate()
            raise AssertionError(f"dfstream ended (exit {run.process.returncode}) before {what}:\n{stderr[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:g} s")


def _epoch(record: dict) -> float:
    return dt.datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


def _states(records: list[dict]) -> list[str]:
    return [r["state"] for r in records]


def test_camera_that_goes_away_for_4_s_is_watched_again_when_it_returns_and_sigterm_keeps_the_output(
        rtsp_ready, tiny_detector, clip, tmp_path):
    events, output, metrics = tmp_path / "events.jsonl", tmp_path / "out.mp4", tmp_path / "metrics.json"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(rtsp_server({"cam": clip}))
        port = server.port
        url = f"rtsp://viewer:s3cret@127.0.0.1:{port}/cam"  # credentials must show nowhere
        run = CliProcess(["run", "-s", url, "-m", tiny_detector, "-o", output, "--events", events,
                          "--metrics-json", metrics, "--no-progress", "--metrics-interval", "60"])
        stack.callback(run.stop)
        _wait_for("face events", lambda: any(r["type"] == "face" for r in _records(events)), run, STARTUP_S)
        # tail -f: the run is still going and its events are already in the named file
        assert run.process.poll() is None
        assert _states(_health(events))[:2] == ["starting", "streaming"]
        stop_process(server.process)  # the camera goes away ...
        time.sleep(4.0)
        server = stack.enter_context(rtsp_server({"cam": clip}, port=port))  # ... and comes back
        returned = time.time()
        _wait_for("frames after the camera's return", lambda: _states(_health(events))[-1:] == ["streaming"]
                  and len(_health(events)) > 2, run, 15)
        back = _health(events)[-1]
        assert _epoch(back) - returned < 5.0, f"frames again {_epoch(back) - returned:.1f} s after the return"
        faces_before = sum(r["type"] == "face" for r in _records(events))
        _wait_for("face events after the return",
                  lambda: sum(r["type"] == "face" for r in _records(events)) > faces_before, run, 10)
        assert run.process.poll() is None, "the run ended when the camera dropped"
        # SIGTERM to the whole process group, as a service manager stops a service: the stages
        # get it too, and leave the stop to the supervisor
        os.killpg(run.process.pid, signal.SIGTERM)
        stdout, stderr = run.process.communicate(timeout=60)
    assert run.process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    states = _states(_health(events))
    assert states[:2] == ["starting", "streaming"] and states[-1] == "streaming", states
    outage = states[2:-1]
    assert outage and set(outage) <= {"stalled", "reconnecting"} and "reconnecting" in outage, states
    for record in _health(events):
        assert record["time"].endswith("Z") and abs(_epoch(record) - time.time()) < 600
    for record in _records(events):
        assert record["type"] in ("face", "health") and record["time"].endswith("Z")
    # stderr: one line per change after the first, none with the credentials
    lines = [line for line in stderr.splitlines() if line.startswith("dfstream: ") and ": reconnecting" in line]
    assert lines, stderr[-3000:]
    for text in (stderr, stdout, events.read_text(), metrics.read_text()):
        assert "s3cret" not in text
    document = json.loads(metrics.read_text())
    (stream,) = document["streams"]
    assert stream["reconnects"] >= 1 and stream["health"]["state"] == "streaming"
    assert document["stopped_by_user"] is True and document["error"] is None
    # the same output file goes on across the outage, playable, its time moving forward
    images, times = decode_frames(output)
    assert len(images) == stream["frames_written"] > 0 and images[0].shape == (SIZE, SIZE, 3)
    gaps = np.diff(np.array(times))
    assert np.all(gaps > 0)
    assert gaps.max() > 3.0, f"the outage does not show in the output's time: largest gap {gaps.max():.2f} s"
    assert wait_no_strays(run.marker) == []


def test_a_camera_that_fails_its_reconnects_goes_offline_while_the_other_streams_on(
        rtsp_ready, tiny_detector, clip, tmp_path):
    """Camera B's connection stalls (open, no data); its next connection is never answered, the
    one after is answered with garbage: with --reconnect-attempts 2 it goes offline with one warning line,
    and camera A's frames keep coming. When A's server goes too, every stream is offline: the
    run ends by itself, non-zero, saying so."""
    events, metrics = tmp_path / "events.jsonl", tmp_path / "metrics.json"
    with contextlib.ExitStack() as stack:
        server_a = stack.enter_context(rtsp_server({"a": clip}))
        server_b = stack.enter_context(rtsp_server({"b": clip}))
        proxy = stack.enter_context(CameraProxy(server_b.port))
        run = CliProcess(["run", "-s", server_a.url("a"), "-s", proxy.url("b"), "-m", tiny_detector,
                          "--events", events, "--metrics-json", metrics, "--no-progress", "--metrics-interval", "60",
                          "--reconnect-attempts", "2", "--reconnect-initial", "0.2", "--open-timeout", "1.5",
                          "--stall-timeout", "1"])
        stack.callback(run.stop)

        names = {}
        _wait_for("both streams", lambda: len({r["stream"] for r in _health(events)}) == 2
                  and all(r["state"] == "streaming" for r in _latest(events).values()), run, STARTUP_S)
        for stream in {r["stream"] for r in _health(events)}:
            names["b" if stream.endswith("_b") else "a"] = stream
        proxy.fail("silent", "garbage")
        cut = time.time()
        _wait_for("camera b offline", lambda: _states(_health(events, names["b"]))[-1:] == ["offline"], run, 30)
        offline = _epoch(_health(events, names["b"])[-1])
        time.sleep(2.0)  # camera a alone for a while
        assert run.process.poll() is None, "the run ended with one camera still streaming"
        a_faces = [r for r in _records(events) if r["type"] == "face" and r["stream"] == names["a"]]
        assert any(_epoch(r) > offline for r in a_faces), "camera a's faces stopped with camera b"
        stop_process(server_a.process)
        killed_a, killed_a_at = time.monotonic(), time.time()
        try:
            stdout, stderr = run.process.communicate(timeout=60)
        except Exception:
            run.stop()
            raise
        ended_after = time.monotonic() - killed_a
    b_states = _states(_health(events, names["b"]))
    assert b_states == ["starting", "streaming", "stalled", "reconnecting", "reconnecting", "offline"], b_states
    stalled = _health(events, names["b"])[2]
    assert 1.0 <= _epoch(stalled) - cut < 1.0 + 3, "the stall was not seen after --stall-timeout"
    b_tries = [r for r in _health(events, names["b"]) if r["state"] == "reconnecting"]
    assert [r["reconnects"] for r in b_tries] == [1, 2], b_tries
    assert proxy.failed_connections == 2  # exactly the tries allowed: the silent one and the garbage one
    # the backoff: each try announced with its wait, drawn below a ceiling that doubles, and kept
    waits = [float(re.match(r"attempt \d of 2 in ([0-9.]+) s: ", r["detail"]).group(1)) for r in b_tries]
    assert 0.1 - 0.05 <= waits[0] <= 0.2 + 0.05 and 0.2 - 0.05 <= waits[1] <= 0.4 + 0.05, waits
    # (the waits are shown to 0.1 s) -- and the silent try gave up after --open-timeout
    assert _epoch(b_tries[1]) - _epoch(b_tries[0]) >= waits[0] - 0.06 + 1.5
    assert offline - _epoch(b_tries[1]) >= waits[1] - 0.06
    assert _epoch(b_tries[0]) - cut < 5
    assert _states(_health(events, names["a"]))[:2] == ["starting", "streaming"]
    # one warning line per camera given up, naming it; then a clear error, non-zero
    warnings = [line for line in stderr.splitlines() if "offline" in line and "warning" in line]
    assert len([w for w in warnings if names["b"] in w]) == 1, stderr[-3000:]
    assert run.process.returncode != 0
    assert "every stream went offline" in stderr.splitlines()[-1], stderr[-3000:]
    assert "Traceback" not in stderr
    assert wait_no_strays(run.marker) == []
    assert ended_after < 30, f"the run took {ended_after:.1f} s to end after its last camera"
    document = json.loads(metrics.read_text())
    by_name = {s["name"]: s for s in document["streams"]}
    assert by_name[names["b"]]["health"]["state"] == "offline" and by_name[names["b"]]["reconnects"] == 2
    # camera a's decoding did not suffer from camera b: about the clip's rate over the time it streamed
    a_records = _health(events, names["a"])
    a_start = _epoch(next(r for r in a_records if r["state"] == "streaming"))
    a_frames = by_name[names["a"]]["frames_decoded"]
    expected = FPS * (killed_a_at - a_start)
    assert a_frames >= 0.8 * expected, f"camera a decoded {a_frames} frames, about {expected:.0f} expected"


def _latest(path: Path) -> dict[str, dict]:
    latest = {}
    for record in _health(path):
        latest[record["stream"]] = record
    return latest
