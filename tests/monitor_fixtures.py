"""A MonitorState filled as the monitor service would fill it: two cameras with real preview
pictures (frames of clips in ../shared/data), their health and metrics, and alerts whose
evidence is a real snapshot JPEG and a real MP4 clip."""
from __future__ import annotations

import functools
from pathlib import Path

import av
import cv2
import numpy as np

from monitor.state import (ALERT_FAKE, ALERT_OFFLINE, DELIVERY_QUEUED, DELIVERY_SENT, Alert, CameraStatus, MonitorState,
                           TrackShown)
from pipeline.health import Health, utc_now
from tests.conftest import shared

DOOR_CLIP = "real/liveportrait_driving_videos/d20.mp4"
HALL_CLIP = "fake/dfdc_train/widuwuoiur.mp4"
FACE_IMAGE = "real/deepface_tests/img10.jpg"


@functools.lru_cache(maxsize=8)
def clip_frames(relative: str, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a shared clip, BGR (decoded once per test session)."""
    frames = []
    with av.open(str(shared(relative))) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    return frames


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return data.tobytes()


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[0] // 2 * 2, frames[0].shape[1] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image[:stream.height, :stream.width], format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def filled_state(alerts_dir: Path) -> MonitorState:
    """A fresh state; its evidence files are written under ``alerts_dir`` unless already there
    (a module's tests may share one folder and each get a state of their own)."""
    state = MonitorState(alerts_dir=alerts_dir)
    state.started = utc_now()
    door, hall = clip_frames(DOOR_CLIP, 1)[0], clip_frames(HALL_CLIP, 12)
    state.set_camera(CameraStatus(
        name="front-door", url="rtsp://admin:hunter2@192.0.2.10:554/stream1", health=Health.STREAMING,
        health_since=utc_now(), fps=14.8, latency_p50_ms=41.0, latency_p99_ms=96.5, frames=1200, dropped=3,
        reconnects=1, faces=220, tracks={4: TrackShown(0.12, "real")}))
    state.set_camera(CameraStatus(
        name="lobby-cam", url="rtsp://192.0.2.11/live?token=s3cret", health=Health.OFFLINE, health_since=utc_now(),
        health_detail="no answer from rtsp://viewer:pw@192.0.2.11/live after 5 tries", fps=0.0, frames=300,
        dropped=0, reconnects=5, faces=40, tracks={7: TrackShown(0.91, "fake", 0.0)}))
    state.set_preview("front-door", jpeg(door))
    state.set_preview("lobby-cam", jpeg(hall[0]))
    metrics = state.metrics
    for name, fps, frames in (("front-door", 14.8, 1200), ("lobby-cam", 0.0, 300)):
        metrics.fps.labels(camera=name).set(fps)
        metrics.frames.labels(camera=name).inc(frames)
        metrics.latency.labels(camera=name).observe(0.041)
    metrics.set_health("front-door", Health.STREAMING)
    metrics.set_health("lobby-cam", Health.OFFLINE)
    metrics.alerts_sent.labels(sink="webhook").inc()

    evidence = alerts_dir / "20260101T120000.000Z-lobby-cam-7"
    snapshot, clip = evidence / "snapshot.jpg", evidence / "clip.mp4"
    if not clip.is_file():
        evidence.mkdir(parents=True, exist_ok=True)
        snapshot.write_bytes(jpeg(hall[5]))
        write_clip(evidence / "clip.mp4", hall)
    state.add_alert(Alert(id="20260101T115900.000Z-front-door", camera="front-door", kind=ALERT_OFFLINE,
                          time="2026-01-01T11:59:00.000Z", message="front-door went offline"))
    state.add_alert(Alert(id=evidence.name, camera="lobby-cam", kind=ALERT_FAKE, time="2026-01-01T12:00:00.000Z",
                          message="lobby-cam: track 7 held a fake verdict (P(fake) 0.91)", track_id=7, score=0.91,
                          evidence={"snapshot.jpg": str(snapshot), "clip.mp4": str(clip)},
                          deliveries={"webhook": DELIVERY_SENT, "mqtt": DELIVERY_QUEUED}))
    return state
