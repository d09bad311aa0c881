"""Alert rules and the evidence each alert carries.

The rules are fed what a camera's run publishes (:class:`stages.sink.FramePublisher`):

- :class:`FakeTrackRule`: a track whose smoothed P(fake) stays at or above ``on_threshold``
  for ``min_seconds`` fires once; it re-arms only after falling below ``off_threshold``
  (hysteresis: a score hovering at the threshold does not fire again and again), and fires
  no sooner than ``cooldown_seconds`` after its last alert.
- :class:`OfflineRule`: a camera reconnecting, offline or stalled for ``offline_after_seconds``
  is reported offline, and online when frames flow again.

:class:`EvidenceRecorder` keeps the last ``pre_roll`` seconds of published frames and face
scores; when an alert fires it keeps collecting for ``post_roll`` seconds and then writes,
into ``<alerts_dir>/<alert id>/``: ``snapshot.jpg`` (the annotated frame of the moment, box
drawn), ``clip.mp4`` (pre + post roll, H.264 via PyAV), ``timeline.json`` (the track's scores)
and ``alert.json``; each file's sha256 goes into the :class:`monitor.state.Alert`.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from monitor.config import AlertsConfig, FakeRule
from monitor.state import ALERT_FAKE, ALERT_OFFLINE, ALERT_ONLINE, Alert
from pipeline.health import Health, utc_time

DOWN_STATES = (Health.RECONNECTING, Health.OFFLINE, Health.STALLED)
TRACK_FORGET_S = 600.0  # a track not seen this long is forgotten (its cooldown with it)
FINALIZE_GRACE_S = 5.0  # wall-clock seconds past the post roll after which a clip is written with what came


def new_alert_id(camera: str, kind: str, epoch_s: float | None = None) -> str:
    """Unique and sortable by time: ``20261206T113302123Z-door-fake-3fa9c1``."""
    stamp = utc_time(time.time() if epoch_s is None else epoch_s).replace("-", "").replace(":", "").replace(".", "")
    return f"{stamp}-{camera}-{kind}-{secrets.token_hex(3)}"


@dataclass
class _TrackState:
    above_since: float | None = None
    armed: bool = True
    last_fired: float | None = None
    last_seen: float = 0.0


class FakeTrackRule:
    def __init__(self, rule: FakeRule):
        if rule.on_threshold is None or rule.off_threshold is None:
            raise ValueError("a fake rule needs its thresholds in numbers: FakeRule.for_verdicts fills the unset ones")
        self.rule = rule
        self.tracks: dict[int, _TrackState] = {}

    def feed(self, track_id: int, smoothed: float | None, t: float) -> bool:
        """One smoothed score of a track at time ``t`` (seconds); True when the alert fires."""
        if smoothed is None:
            return False
        rule = self.rule
        state = self.tracks.setdefault(track_id, _TrackState())
        state.last_seen = t
        self._forget(t)
        if smoothed < rule.off_threshold:
            state.armed, state.above_since = True, None
            return False
        if smoothed < rule.on_threshold:
            state.above_since = None  # between the thresholds: not held, not re-armed
            return False
        if state.above_since is None:
            state.above_since = t
        if not state.armed or t - state.above_since < rule.min_seconds:
            return False
        if state.last_fired is not None and t - state.last_fired < rule.cooldown_seconds:
            return False
        state.armed, state.last_fired = False, t
        return True

    def _forget(self, t: float) -> None:
        if len(self.tracks) > 64:
            for track_id in [k for k, s in self.tracks.items() if t - s.last_seen > TRACK_FORGET_S]:
                del self.tracks[track_id]


class OfflineRule:
    def __init__(self, after_s: float):
        self.after_s = after_s
        self.down_since: float | None = None
        self.reported = False
        self.detail = ""

    def health(self, state: Health, t: float, detail: str = "") -> str | None:
        """A health change at ``t``; ALERT_ONLINE when a camera reported offline streams again."""
        if state in DOWN_STATES:
            if self.down_since is None:
                self.down_since = t
            self.detail = detail or self.detail
            return self.tick(t)
        if state is Health.STREAMING:
            self.down_since = None
            if self.reported:
                self.reported = False
                return ALERT_ONLINE
        return None

    def tick(self, t: float) -> str | None:
        """ALERT_OFFLINE once the camera has been down long enough."""
        if self.down_since is not None and not self.reported and t - self.down_since >= self.after_s:
            self.reported = True
            return ALERT_OFFLINE
        return None


@dataclass
class _Frame:
    capture_time: float
    frame_index: int
    jpeg: bytes


@dataclass
class _Pending:
    alert: Alert
    moment: float  # capture time the alert fired at
    frames: list[_Frame] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    fired_wall: float = field(default_factory=time.monotonic)
    rule: FakeRule | None = None  # the thresholds it fired under, in numbers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_clip(frames: list[_Frame], path: Path, fps: float) -> None:
    """The frames (JPEG) as an H.264 MP4, each shown at its capture time."""
    import cv2
    import av
    import numpy as np

    partial = path.with_name(f".{path.name}.partial")
    first = frames[0].capture_time
    height, width = cv2.imdecode(np.frombuffer(frames[0].jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    width, height = width - width % 2, height - height % 2  # 4:2:0 needs even sizes
    with av.open(str(partial), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"preset": "veryfast", "crf": "26"}
        last_pts = -1
        for item in frames:
            image = cv2.imdecode(np.frombuffer(item.jpeg, np.uint8), cv2.IMREAD_COLOR)
            if image.shape[:2] != (height, width):
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            pts = max(last_pts + 1, round((item.capture_time - first) * 1000))
            frame.pts, frame.time_base, last_pts = pts, Fraction(1, 1000), pts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(partial, path)


class EvidenceRecorder:
    """One camera's recent frames and scores, and the alerts waiting for their post roll."""

    def __init__(self, camera: str, alerts: AlertsConfig, alerts_dir: Path, fps: float):
        self.camera = camera
        self.config = alerts
        self.alerts_dir = alerts_dir
        self.fps = fps
        self.frames: collections.deque[_Frame] = collections.deque()
        self.scores: collections.deque[dict] = collections.deque()
        self.pending: list[_Pending] = []
        self.last_frame: _Frame | None = None

    def _trim(self, now: float) -> None:
        keep = self.config.pre_roll_seconds
        while self.frames and now - self.frames[0].capture_time > keep:
            self.frames.popleft()
        while self.scores and now - self.scores[0]["capture_time"] > keep:
            self.scores.popleft()

    def frame(self, capture_time: float, frame_index: int, jpeg: bytes) -> list[Alert]:
        """A published frame; returns the alerts whose evidence is now complete."""
        item = _Frame(capture_time, frame_index, jpeg)
        self.last_frame = item
        self.frames.append(item)
        self._trim(capture_time)
        for pending in self.pending:
            pending.frames.append(item)
        return self._finish(lambda p: capture_time >= p.moment + self.config.post_roll_seconds)

    def score(self, record: dict) -> None:
        """One face's scores from a published frame (capture_time, frame_index, track_id, ...)."""
        self.scores.append(record)
        for pending in self.pending:
            if record["track_id"] == pending.alert.track_id:
                pending.timeline.append(record)

    def fire(self, track_id: int, score: float, capture_time: float, rule: FakeRule) -> None:
        """A fake alert at ``capture_time``: evidence collected from now for the post roll. ``rule``: the
        thresholds it fired under, in numbers (:meth:`FakeRule.for_verdicts`), for its timeline."""
        alert = Alert(id=new_alert_id(self.camera, ALERT_FAKE, capture_time), camera=self.camera, kind=ALERT_FAKE,
                      time=utc_time(capture_time), track_id=track_id, score=round(score, 4),
                      message=f"{self.camera}: face #{track_id} looks fake (smoothed P(fake) {score:.2f})")
        timeline = [r for r in self.scores if r["track_id"] == track_id]
        self.pending.append(_Pending(alert, capture_time, list(self.frames), timeline, rule=rule))

    def tick(self) -> list[Alert]:
        """Alerts whose post roll never came (the camera stopped): written with what there is."""
        limit = self.config.post_roll_seconds + FINALIZE_GRACE_S
        return self._finish(lambda p: time.monotonic() - p.fired_wall >= limit)

    def flush(self) -> list[Alert]:
        """Everything pending written now (the service is stopping)."""
        return self._finish(lambda p: True)

    def _finish(self, ready) -> list[Alert]:
        done = [p for p in self.pending if ready(p)]
        self.pending = [p for p in self.pending if not ready(p)]
        return [self._write(p) for p in done]

    def _write(self, pending: _Pending) -> Alert:
        alert = pending.alert
        folder = self.alerts_dir / alert.id
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        frames = pending.frames or ([self.last_frame] if self.last_frame else [])
        if frames:
            # the annotated frame of the moment: the first one published at or after it
            moment = next((f for f in frames if f.capture_time >= pending.moment), frames[-1])
            files["snapshot.jpg"] = folder / "snapshot.jpg"
            _write_atomic(files["snapshot.jpg"], moment.jpeg)
            files["clip.mp4"] = folder / "clip.mp4"
            write_clip(frames, files["clip.mp4"], self.fps)
        timeline = {"camera": self.camera, "track_id": alert.track_id, "fired_at": alert.time,
                    "on_threshold": pending.rule.on_threshold, "off_threshold": pending.rule.off_threshold,
                    "points": [{"time": utc_time(r["capture_time"]), "frame_index": r["frame_index"],
                                "score": r["score"], "smoothed_score": r["smoothed_score"], "verdict": r["verdict"]}
                               for r in pending.timeline]}
        files["timeline.json"] = folder / "timeline.json"
        _write_atomic(files["timeline.json"], json.dumps(timeline, indent=1).encode())
        alert.evidence = {name: str(path) for name, path in files.items()}
        alert.sha256 = {name: sha256_file(path) for name, path in files.items()}
        return alert

    def status_alert(self, kind: str, detail: str) -> Alert:
        """An offline or online alert, with the last frame seen as its snapshot."""
        now = time.time()
        what = "went offline" if kind == ALERT_OFFLINE else "is back online"
        alert = Alert(id=new_alert_id(self.camera, kind, now), camera=self.camera, kind=kind, time=utc_time(now),
                      message=f"{self.camera} {what}" + (f" ({detail})" if detail and kind == ALERT_OFFLINE else ""))
        if self.last_frame is not None:
            folder = self.alerts_dir / alert.id
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "snapshot.jpg"
            _write_atomic(path, self.last_frame.jpeg)
            alert.evidence = {"snapshot.jpg": str(path)}
            alert.sha256 = {"snapshot.jpg": sha256_file(path)}
        return alert


def write_alert_json(alert: Alert, alerts_dir: Path) -> None:
    """alert.json beside the evidence: the alert as it was raised."""
    folder = alerts_dir / alert.id
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "alert.json", json.dumps(asdict(alert), indent=1).encode())
