"""What the monitor knows right now, shared by the service that watches the cameras and the
web server that shows them: the one contract between them.

The service (:mod:`monitor.service`) is the only writer: it updates each camera's status,
preview picture and metrics and adds alerts. The web server (:mod:`monitor.web`) only reads,
and asks for changes (reload, add or remove a camera) through :class:`MonitorControl`.
All methods are thread-safe. URLs stored here are already redacted.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.health import Health

ALERT_FAKE = "fake"  # a track held a fake verdict long enough
ALERT_OFFLINE = "offline"  # a camera stopped delivering (reconnecting or offline)
ALERT_ONLINE = "online"  # ... and came back

DELIVERY_SENT = "sent"
DELIVERY_QUEUED = "queued"  # on disk, retried until delivered
DELIVERY_FAILED = "failed"  # a permanent refusal (e.g. HTTP 4xx); kept on disk, not retried


@dataclass(frozen=True)
class TrackShown:
    """A face track as the dashboard and the API show it."""

    score: float | None  # smoothed P(fake)
    verdict: str | None
    blinks_per_minute: float | None = None  # with the camera's blinks: true


@dataclass
class CameraStatus:
    name: str
    url: str  # redacted
    health: Health = Health.STARTING
    health_since: str = ""  # UTC time of the last change (pipeline.health.utc_time)
    health_detail: str = ""
    fps: float = 0.0  # frames written per second, recent
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    faces: int = 0  # faces scored so far
    tracks: dict[int, TrackShown] = field(default_factory=dict)  # the tracks seen in the last seconds


@dataclass
class Alert:
    id: str  # unique, sortable by time
    camera: str
    kind: str  # ALERT_FAKE, ALERT_OFFLINE, ALERT_ONLINE
    time: str  # UTC, pipeline.health.utc_time
    message: str  # one line for people
    track_id: int | None = None
    score: float | None = None  # smoothed P(fake) when the alert fired
    # evidence file name ("snapshot.jpg", "clip.mp4", "timeline.json") -> path on disk
    evidence: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)  # evidence file name -> hex digest
    deliveries: dict[str, str] = field(default_factory=dict)  # sink name -> DELIVERY_*


class MonitorControl(Protocol):
    """What the web server may ask of the service; each returns a one-line answer or raises
    ValueError with one line naming what is wrong."""

    def reload(self) -> str: ...

    def add_camera(self, name: str, url: str, options: dict) -> str: ...

    def remove_camera(self, name: str) -> str: ...


class MonitorMetrics:
    """The Prometheus metrics of one monitor, in their own registry (served at /metrics)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.fps = Gauge("dfstream_camera_fps", "Frames written per second, recent", ["camera"], registry=r)
        self.frames = Counter("dfstream_camera_frames", "Frames written", ["camera"], registry=r)
        self.dropped = Counter("dfstream_camera_dropped_frames", "Frames dropped to stay live", ["camera"], registry=r)
        self.latency = Histogram("dfstream_camera_latency_seconds", "Capture to written, per frame", ["camera"],
                                 buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0), registry=r)
        self.health = Gauge("dfstream_camera_health", "1 for the camera's current health state",
                            ["camera", "state"], registry=r)
        self.reconnects = Counter("dfstream_camera_reconnects", "Reconnects after an outage or stall", ["camera"],
                                  registry=r)
        self.faces = Counter("dfstream_camera_faces", "Faces scored", ["camera"], registry=r)
        self.score = Histogram("dfstream_camera_fake_score", "P(fake) of scored faces", ["camera"],
                               buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=r)
        self.alerts_sent = Counter("dfstream_alerts_sent", "Alerts delivered", ["sink"], registry=r)
        self.alerts_failed = Counter("dfstream_alerts_failed", "Alert deliveries that failed (each try)", ["sink"],
                                     registry=r)
        self.alerts_queued = Gauge("dfstream_alerts_queued", "Alerts waiting on disk for delivery", ["sink"],
                                   registry=r)

    def set_health(self, camera: str, state: Health) -> None:
        for each in Health:
            self.health.labels(camera=camera, state=each.value).set(1.0 if each is state else 0.0)

    def forget_camera(self, camera: str) -> None:
        """Drop a removed camera's series."""
        for metric in (self.fps, self.frames, self.dropped, self.latency, self.reconnects, self.faces, self.score):
            try:
                metric.remove(camera)
            except KeyError:
                pass
        for each in Health:
            try:
                self.health.remove(camera, each.value)
            except KeyError:
                pass


class MonitorState:
    def __init__(self, alerts_dir: Path | None = None, keep_alerts: int = 1000):
        self._lock = threading.Lock()
        self._cameras: dict[str, CameraStatus] = {}
        self._previews: dict[str, bytes] = {}  # camera -> latest annotated frame, JPEG
        self._alerts: list[Alert] = []  # oldest first
        self.keep_alerts = keep_alerts
        self.alerts_dir = alerts_dir  # evidence lives under here, one folder per alert id
        self.metrics = MonitorMetrics()
        self.started = ""  # UTC time the service started
        self.control: MonitorControl | None = None

    # -- cameras (written by the service) ------------------------------------
    def set_camera(self, status: CameraStatus) -> None:
        with self._lock:
            self._cameras[status.name] = replace(status, tracks=dict(status.tracks))

    def update_camera(self, name: str, **fields) -> None:
        with self._lock:
            if name in self._cameras:
                self._cameras[name] = replace(self._cameras[name], **fields)

    def remove_camera(self, name: str) -> None:
        with self._lock:
            self._cameras.pop(name, None)
            self._previews.pop(name, None)
        self.metrics.forget_camera(name)

    def set_preview(self, name: str, jpeg: bytes) -> None:
        with self._lock:
            self._previews[name] = jpeg

    # -- alerts (written by the service) ---------------------------------------
    def add_alert(self, alert: Alert) -> None:
        with self._lock:
            self._alerts.append(alert)
            del self._alerts[:-self.keep_alerts]

    def update_alert(self, alert_id: str, **fields) -> None:
        with self._lock:
            for i, alert in enumerate(self._alerts):
                if alert.id == alert_id:
                    self._alerts[i] = replace(alert, **fields)

    def set_delivery(self, alert_id: str, sink: str, delivery: str) -> None:
        """One sink's delivery state of an alert (DELIVERY_*), atomically beside the other sinks'."""
        with self._lock:
            for i, alert in enumerate(self._alerts):
                if alert.id == alert_id:
                    self._alerts[i] = replace(alert, deliveries={**alert.deliveries, sink: delivery})

    # -- reading (the web server) ----------------------------------------------
    def cameras(self) -> list[CameraStatus]:
        with self._lock:
            return [replace(c, tracks=dict(c.tracks)) for c in self._cameras.values()]

    def camera(self, name: str) -> CameraStatus | None:
        with self._lock:
            status = self._cameras.get(name)
            return None if status is None else replace(status, tracks=dict(status.tracks))

    def preview(self, name: str) -> bytes | None:
        with self._lock:
            return self._previews.get(name)

    def alerts(self, camera: str | None = None, limit: int = 100) -> list[Alert]:
        """Newest first."""
        with self._lock:
            chosen = [a for a in reversed(self._alerts) if camera is None or a.camera == camera]
            return [replace(a) for a in chosen[:limit]]

    def alert(self, alert_id: str) -> Alert | None:
        with self._lock:
            return next((replace(a) for a in self._alerts if a.id == alert_id), None)

    def evidence_path(self, alert_id: str, name: str) -> Path | None:
        """The file behind one piece of an alert's evidence, or None (unknown alert or name)."""
        alert = self.alert(alert_id)
        if alert is None or name not in alert.evidence:
            return None
        path = Path(alert.evidence[name])
        return path if path.is_file() else None
