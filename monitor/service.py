"""The monitor service: one pipeline run per camera, kept running for months.

Each camera has a :class:`CameraWorker` thread that probes the camera, builds its run with
:func:`runtime.run_config.build_run_config` (as ``dfstream run`` does) and runs it under a
:class:`runtime.supervisor.Supervisor`. A camera that does not answer, or whose run ends
(the stream dropped, a stage failed), is tried again after a backoff that doubles up to
``retry_max_seconds`` (with jitter, so cameras behind one switch do not all retry at once);
its health is ``offline`` (never answered) or ``reconnecting`` meanwhile. Cameras never wait
on each other.

Each run's sink publishes its faces and annotated frames (``SinkConfig.publish_url``) to a
:class:`CameraFeed` thread here, which keeps the camera's preview, track scores and metrics in
:class:`monitor.state.MonitorState`, and feeds the alert rules and the evidence recorder
(:mod:`monitor.alerts`). Alerts go to the outbox on disk and from there to the sinks
(:mod:`monitor.outbox`, :mod:`monitor.sinks`).

Signals (main thread): SIGHUP reloads the config file (cameras added, removed or changed;
the others keep running), SIGTERM and SIGINT stop everything (runs stopped, alerts still
collecting evidence written and queued, the queue on disk).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from monitor.alerts import EvidenceRecorder, FakeTrackRule, OfflineRule, write_alert_json
from monitor.config import (CameraConfig, ConfigError, FakeRule, MonitorConfig, WebConfig, camera_from_options,
                            load_config, read_overlay, write_overlay)
from monitor.outbox import Outbox
from monitor.sinks import DeliveryWorker, MqttSink, build_sinks
from monitor.state import DELIVERY_QUEUED, Alert, CameraStatus, MonitorState, TrackShown
from pipeline.health import Health, utc_now
from pipeline.urls import redact
from stages.reconnect import Backoff

log = logging.getLogger("dfstream.monitor")

STABLE_RUN_S = 60.0  # a run that lasted this long resets the camera's backoff
STALL_S = 10.0  # no frame written for this long while the run is up: stalled
TRACK_SHOWN_S = 5.0  # tracks seen in the last seconds are listed in the camera's status
FPS_WINDOW_S = 5.0


class _LogWriter:
    """The supervisor's text output (warnings, live metrics tables) as debug log lines."""

    def __init__(self, camera: str):
        self.logger = logging.getLogger(f"dfstream.monitor.{camera}")

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.logger.debug("%s", line)

    def flush(self) -> None:
        pass


class CameraFeed(threading.Thread):
    """Receives what one camera's runs publish (a SUB socket bound for the camera's lifetime,
    so runs come and go without losing it) and turns it into status, preview and alerts."""

    def __init__(self, worker: "CameraWorker"):
        super().__init__(name=f"feed-{worker.camera.name}", daemon=True)
        import zmq

        self.worker = worker
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.setsockopt(zmq.RCVHWM, 200)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(worker.publish_url)
        self.stopping = threading.Event()

    def run(self) -> None:
        import json

        import zmq

        worker = self.worker
        try:
            while not self.stopping.is_set():
                if self.socket.poll(250):
                    while True:
                        try:
                            parts = self.socket.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        header = json.loads(parts[1])
                        if parts[0] == b"frame" and len(parts) == 3:
                            worker.on_frame(header, parts[2])
                        elif parts[0] == b"faces":
                            worker.on_faces(header)
                worker.on_tick()
        except Exception:  # a bug here must not take the camera's run down with it: log and carry on without alerts
            log.exception("camera %s: feed stopped", worker.camera.name)
        finally:
            self.socket.close()
            self.context.term()


def camera_run_config(camera: CameraConfig, streams, model: tuple, config: MonitorConfig, events_path: str | None,
                      publish_url: str | None):
    """The RunConfig of one run of ``camera`` (``model``: path, metadata and face detector), built as
    ``dfstream run`` builds one, from the camera's entry and the service's settings."""
    from runtime.run_config import build_run_config

    model_path, metadata, face_detector = model
    return build_run_config(
        streams, model_path, metadata, face_detector,
        engine=config.model.engine, detect_every=camera.detect_every,
        classify_every=camera.classify_every, detect_size=camera.detect_size,
        min_face_score=camera.min_face_score, threshold=camera.threshold, events_path=events_path,
        blinks=camera.blinks,
        publish_url=publish_url, publish_fps=config.publish_fps,
        live_latency_budget_ms=camera.max_latency_ms, open_timeout_s=camera.open_timeout,
        reconnect=config.reconnect(),
        progress=False, metrics_interval_s=60.0)


def camera_fake_rule(camera: CameraConfig, config: MonitorConfig, metadata) -> FakeRule:
    """The fake-alert rule of ``camera`` in numbers: thresholds the file leaves unset follow the verdict
    its run draws (the camera's threshold, else the model's, and the model's uncertain band)."""
    from runtime.run_config import verdict_rule

    return config.alerts.fake.for_verdicts(verdict_rule(metadata, camera.threshold))


class CameraWorker(threading.Thread):
    def __init__(self, camera: CameraConfig, service: "MonitorService"):
        super().__init__(name=f"camera-{camera.name}", daemon=True)
        self.camera = camera
        self.service = service
        self.state = service.state
        self.config = service.config
        self.stopping = threading.Event()
        self.publish_url = f"ipc://{service.runtime_dir}/{camera.name}-{id(self):x}.pub"
        self.lock = threading.Lock()  # the rules and recorder, fed by the feed thread and this one
        self.fake_thresholds = camera_fake_rule(camera, self.config, service.metadata)
        self.fake_rule = FakeTrackRule(self.fake_thresholds)
        self.offline_rule = OfflineRule(self.config.alerts.offline_after_seconds)
        self.recorder = EvidenceRecorder(camera.name, self.config.alerts, self.config.storage.alerts_dir,
                                         self.config.publish_fps)
        self.status = CameraStatus(name=camera.name, url=redact(camera.url))
        self.health = Health.STARTING
        self.streamed_once = False
        self.frames_before = 0  # frames and drops of the runs that ended
        self.dropped_before = 0
        self.run_frames = 0
        self.run_dropped = 0
        self.run_reconnects = 0
        self.last_frames_at = time.monotonic()
        self.fps_samples: list[tuple[float, int]] = []
        self.tracks: dict[int, tuple[TrackShown, float]] = {}  # track id -> (as shown, monotonic time last seen)
        self.supervisor = None
        self.feed = CameraFeed(self)
        self.state.set_camera(self.status)
        self._set_health(Health.STARTING, "starting")

    # -- the run loop -------------------------------------------------------------------
    def run(self) -> None:
        from pipeline.stage import StageError
        from runtime.run_config import RunOptionError, probe_streams
        from runtime.supervisor import Supervisor

        self.feed.start()
        camera, service = self.camera, self.service
        attempt = 0
        while not self.stopping.is_set():
            try:
                streams = probe_streams([camera.url], live=True, open_timeout=camera.open_timeout)
                streams[0].name = camera.name
                events = None
                if self.config.storage.events:
                    self.config.storage.events_dir.mkdir(parents=True, exist_ok=True)
                    events = str(self.config.storage.events_dir / f"{camera.name}-{int(time.time())}.jsonl")
                run_config = camera_run_config(camera, streams, (service.model_path, service.metadata,
                                                                 service.face_detector),
                                               self.config, events, self.publish_url)
            except (StageError, RunOptionError) as exc:
                self._set_health(Health.RECONNECTING if self.streamed_once else Health.OFFLINE, str(exc))
                attempt = self._backoff(attempt)
                continue
            if self.stopping.is_set():
                break
            self._set_health(Health.STARTING, "run starting")
            with self.lock:
                # track ids start again in each run; a reload's new alert rules take effect here
                self.fake_thresholds = camera_fake_rule(camera, self.config, service.metadata)
                self.fake_rule = FakeTrackRule(self.fake_thresholds)
                self.tracks.clear()
            self.supervisor = Supervisor(run_config, out=_LogWriter(camera.name), observer=self, handle_signals=False)
            self.run_reconnects = 0  # the run's own reconnects (its source's), counted as they are reported
            started = time.monotonic()
            self.last_frames_at = started
            result = self.supervisor.run()
            self.supervisor = None
            self._end_run()
            if self.stopping.is_set():
                break
            detail = redact(result.error) if result.error else "the stream ended"
            with self.lock:
                self.status.reconnects += 1
            self.state.update_camera(camera.name, reconnects=self.status.reconnects)
            self.state.metrics.reconnects.labels(camera=camera.name).inc()
            self._set_health(Health.RECONNECTING, detail)
            if time.monotonic() - started >= STABLE_RUN_S:
                attempt = 0
            attempt = self._backoff(attempt)
        self.feed.stopping.set()
        self.feed.join(10)

    def _backoff(self, attempt: int) -> int:
        self.stopping.wait(Backoff(self.config.reconnect()).delay(attempt + 1))
        return attempt + 1

    def _end_run(self) -> None:
        with self.lock:
            self.frames_before += self.run_frames
            self.dropped_before += self.run_dropped
            self.run_frames = self.run_dropped = 0

    def stop(self) -> None:
        self.stopping.set()

    # -- SupervisorObserver: called from the supervisor's loop (this thread) ---------------
    def reports_received(self, supervisor) -> None:
        if self.stopping.is_set():
            if supervisor.abort_at is None:
                supervisor.abort("stopped")  # no output file to finish: stop at once
            return
        streams = supervisor.metrics.streams()
        if not streams:
            return
        stream = streams[0]
        frames, dropped = stream["frames_written"] or 0, stream["dropped"] or 0
        now = time.monotonic()
        name = self.camera.name
        metrics = self.state.metrics
        if frames > self.run_frames:
            metrics.frames.labels(camera=name).inc(frames - self.run_frames)
            self.last_frames_at = now
        if dropped > self.run_dropped:
            metrics.dropped.labels(camera=name).inc(dropped - self.run_dropped)
        with self.lock:
            self.run_frames, self.run_dropped = max(frames, self.run_frames), max(dropped, self.run_dropped)
            total = self.frames_before + self.run_frames
        self.fps_samples = [s for s in self.fps_samples if now - s[0] <= FPS_WINDOW_S] + [(now, total)]
        first = self.fps_samples[0]
        fps = (total - first[1]) / (now - first[0]) if now - first[0] > 0.5 else 0.0
        latency = stream.get("latency_ms") or {}
        metrics.fps.labels(camera=name).set(fps)
        self.state.update_camera(name, frames=total, dropped=self.dropped_before + self.run_dropped, fps=round(fps, 2),
                                 latency_p50_ms=latency.get("p50_ms"), latency_p99_ms=latency.get("p99_ms"))
        # health: the camera's own state as its source reports it (the run reconnects by itself
        # after an outage or a stall); judged from the frames only until the source has reported
        reported = supervisor.health.get(0)  # one camera a run: stream 0
        if reported is not None:
            if reported.state is not self.health:
                self._set_health(reported.state, reported.detail)
            self._count_run_reconnects(supervisor.reconnects.get(0, 0))
            return
        if now - self.last_frames_at >= STALL_S and self.health is Health.STREAMING:
            self._set_health(Health.STALLED, f"no frame for {STALL_S:g} s")
        elif frames and now - self.last_frames_at < STALL_S and self.health is not Health.STREAMING:
            self._set_health(Health.STREAMING, "")

    def _count_run_reconnects(self, total: int) -> None:
        added = total - self.run_reconnects
        if added <= 0:
            return
        self.run_reconnects = total
        with self.lock:
            self.status.reconnects += added
        self.state.update_camera(self.camera.name, reconnects=self.status.reconnects)
        self.state.metrics.reconnects.labels(camera=self.camera.name).inc(added)

    # -- health ----------------------------------------------------------------------------
    def _set_health(self, health: Health, detail: str) -> None:
        detail = redact(detail or "")
        changed = health is not self.health or not self.status.health_since
        self.health = health
        if health is Health.STREAMING:
            self.streamed_once = True
        if changed:
            since = utc_now()
            self.status.health, self.status.health_since, self.status.health_detail = health, since, detail
            self.state.update_camera(self.camera.name, health=health, health_since=since, health_detail=detail)
            self.state.metrics.set_health(self.camera.name, health)
            log.info("camera %s: %s%s", self.camera.name, health.value, f" ({detail})" if detail else "")
            self.service.health_changed(self.camera.name, {"camera": self.camera.name, "state": health.value,
                                                          "since": since, "detail": detail})
        with self.lock:
            kind = self.offline_rule.health(health, time.monotonic(), detail)
            alert = self.recorder.status_alert(kind, self.offline_rule.detail) if kind else None
        if alert is not None:
            self.service.raise_alert(alert)

    # -- what the run publishes (feed thread) ------------------------------------------------
    def on_frame(self, header: dict, jpeg: bytes) -> None:
        self.state.set_preview(self.camera.name, jpeg)
        self.state.metrics.latency.labels(camera=self.camera.name).observe(max(0.0, time.time() - header["capture_time"]))
        with self.lock:
            done = self.recorder.frame(header["capture_time"], header["frame_index"], jpeg)
        for alert in done:
            self.service.raise_alert(alert)

    def on_faces(self, header: dict) -> None:
        name = self.camera.name
        now = time.monotonic()
        metrics = self.state.metrics
        scored = 0
        with self.lock:
            for face in header["faces"]:
                track = face["track_id"]
                if face["score"] is not None:
                    scored += 1
                    metrics.score.labels(camera=name).observe(face["score"])
                if track is None:
                    continue
                self.tracks[track] = (TrackShown(face["smoothed_score"], face["verdict"],
                                                 face.get("blinks_per_minute")), now)
                self.recorder.score({"capture_time": header["capture_time"], "frame_index": header["frame_index"],
                                     "track_id": track, "score": face["score"],
                                     "smoothed_score": face["smoothed_score"], "verdict": face["verdict"]})
                if self.fake_rule.feed(track, face["smoothed_score"], header["capture_time"]):
                    self.recorder.fire(track, face["smoothed_score"], header["capture_time"], self.fake_thresholds)
                    log.warning("camera %s: track %s fake (smoothed P(fake) %.2f)", name, track, face["smoothed_score"])
            self.tracks = {k: v for k, v in self.tracks.items() if now - v[1] <= TRACK_SHOWN_S}
            self.status.faces += scored
            shown = {k: seen for k, (seen, _) in self.tracks.items()}
            faces = self.status.faces
        if scored:
            metrics.faces.labels(camera=name).inc(scored)
        self.state.update_camera(name, faces=faces, tracks=shown)

    def on_tick(self) -> None:
        with self.lock:
            kind = self.offline_rule.tick(time.monotonic())
            alerts = self.recorder.tick()
            if kind:
                alerts.append(self.recorder.status_alert(kind, self.offline_rule.detail))
        for alert in alerts:
            self.service.raise_alert(alert)

    def flush_alerts(self) -> None:
        """Alerts still collecting their post roll, written with what there is (stopping)."""
        with self.lock:
            alerts = self.recorder.flush()
        for alert in alerts:
            self.service.raise_alert(alert)


class MonitorService:
    """The whole monitor; also the :class:`monitor.state.MonitorControl` the web server uses."""

    def __init__(self, config: MonitorConfig):
        self.config = config
        self.state = MonitorState(alerts_dir=config.storage.alerts_dir)
        self.state.control = self
        self.workers: dict[str, CameraWorker] = {}
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="dfstream-monitor-"))  # 0700: the ipc sockets
        self.outbox: Outbox | None = None
        self.sinks: list = []
        self.deliverers: list[DeliveryWorker] = []
        self.web = None
        self._control_lock = threading.Lock()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.model_path = self.metadata = self.face_detector = None

    # -- start and stop ----------------------------------------------------------------------
    def resolve_models(self) -> None:
        """The detector and face detector, as dfstream run resolves them (RunOptionError in one line)."""
        from engines.metadata import KIND_DETECTOR
        from runtime.run_config import resolve_face_detector, resolve_model

        self.model_path, self.metadata = resolve_model(self.config.model.detector, KIND_DETECTOR)
        self.face_detector = resolve_face_detector(self.config.model.face_detector)

    def start(self) -> None:
        self.resolve_models()
        self.state.started = utc_now()
        self.config.storage.alerts_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(self.config.storage.queue_path)
        for alert in self.outbox.recent(self.state.keep_alerts):  # what the dashboard showed before a restart
            self.state.add_alert(alert)
        self.sinks = build_sinks(self.config.sinks)
        for sink in self.sinks:
            sink.start()
            worker = DeliveryWorker(sink, self.outbox, self.state)
            worker.start()
            self.deliverers.append(worker)
        for camera in self.config.cameras:
            if camera.enabled:
                self._start_camera(camera)
        self.web = self._start_web(self.config.web)
        log.info("monitoring %d camera(s); alerts in %s", len(self.workers), self.config.storage.alerts_dir)

    def _start_web(self, web: WebConfig | None):
        if web is None or not web.enabled:
            return None
        from monitor.web import serve

        return serve(self.state, web)

    def _start_camera(self, camera: CameraConfig) -> None:
        worker = CameraWorker(camera, self)
        self.workers[camera.name] = worker
        worker.start()

    def _stop_cameras(self, names: list[str]) -> None:
        """Stop these cameras' runs together (each takes a few seconds) and forget them."""
        workers = [self.workers.pop(n) for n in names if n in self.workers]
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(60)
            worker.flush_alerts()
            self.state.remove_camera(worker.camera.name)
            self.health_changed(worker.camera.name, None)

    def stop(self) -> None:
        names = list(self.workers)
        log.info("stopping %d camera(s)", len(names))
        workers = [self.workers[n] for n in names]
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(60)
            worker.flush_alerts()  # into the outbox before it closes
        self.workers.clear()
        for deliverer in self.deliverers:
            deliverer.stop()
        for deliverer in self.deliverers:
            deliverer.join(max(30.0, max((getattr(s.config, "timeout_seconds", 10) for s in self.sinks), default=10)))
        for sink in self.sinks:
            sink.close()
        if self.web is not None:
            self.web.stop()
        if self.outbox is not None:
            queued = self.outbox.queued()
            self.outbox.close()
            if any(queued.values()):
                log.warning("alerts left queued for the next start: %s", queued)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def run_forever(self) -> None:
        """Until SIGTERM or Ctrl-C; SIGHUP reloads. Call from the main thread after start()."""
        def on_stop(signum, _frame):
            log.warning("%s: stopping", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        try:
            while not self._stop.is_set():
                self._stop.wait(0.5)
                self.write_status()
                if self._reload.is_set():
                    self._reload.clear()
                    try:
                        log.warning("reload: %s", self.reload())
                    except ValueError as exc:
                        log.error("reload refused: %s", exc)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the flush short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.stop()

    def write_status(self) -> None:
        """``status.json`` in the storage folder: every camera's status now (for scripts, health checks)."""
        import json

        cameras = []
        for status in self.state.cameras():
            document = dataclasses.asdict(status)
            document["health"] = status.health.value
            document["tracks"] = {str(k): dataclasses.asdict(v) for k, v in status.tracks.items()}
            cameras.append(document)
        document = {"time": utc_now(), "started": self.state.started, "cameras": cameras,
                    "alerts": len(self.state.alerts(limit=self.state.keep_alerts))}
        path = Path(self.config.storage.folder) / "status.json"
        partial = path.with_name(".status.json.partial")
        partial.write_text(json.dumps(document, indent=1), encoding="utf-8")
        partial.replace(path)

    # -- alerts ----------------------------------------------------------------------------------
    def raise_alert(self, alert: Alert) -> None:
        """Onto the disk (evidence is already there), into the state, queued for every sink."""
        names = [s.name for s in self.sinks]
        alert.deliveries = {name: DELIVERY_QUEUED for name in names}
        write_alert_json(alert, self.config.storage.alerts_dir)
        self.outbox.add(alert, names)
        self.state.add_alert(alert)
        log.warning("alert %s: %s", alert.id, alert.message)
        for deliverer in self.deliverers:
            deliverer.wake.set()

    def health_changed(self, camera: str, document: dict | None) -> None:
        for sink in self.sinks:
            if isinstance(sink, MqttSink):
                sink.publish_health(camera, document)

    # -- MonitorControl ----------------------------------------------------------------------------
    def reload(self) -> str:
        """Read the config file again: cameras added, removed or changed; the others untouched."""
        if not self.config.source:
            raise ValueError("no config file to reload from")
        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        with self._control_lock:
            old = {c.name: c for c in self.config.cameras if c.enabled}
            wanted = {c.name: c for c in new.cameras if c.enabled}
            removed = [n for n in old if n not in wanted]
            changed = [n for n in wanted if n in old and dataclasses.asdict(wanted[n]) != dataclasses.asdict(old[n])]
            added = [n for n in wanted if n not in old]
            ignored = [s for s in ("sinks", "model", "storage", "web")
                       if dataclasses.asdict(getattr(new, s) or WebConfig()) != dataclasses.asdict(getattr(self.config, s) or WebConfig())]
            self.config.alerts = new.alerts  # new rules for cameras (re)started from now on
            self.config.cameras = new.cameras
            self._stop_cameras(removed + changed)
            for name in changed + added:
                self._start_camera(wanted[name])
        answer = f"{len(added)} added, {len(removed)} removed, {len(changed)} changed"
        if ignored:
            answer += f"; {', '.join(ignored)} changes take effect at the next start"
        return answer

    def add_camera(self, name: str, url: str, options: dict) -> str:
        """A camera added while running, saved in the storage folder's overlay (cameras.api.yaml)
        so that it survives reloads and restarts; refused, and not started, when it cannot be saved."""
        try:
            camera = camera_from_options(name, url, options)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        with self._control_lock:
            if name in self.workers or self.config.camera(name) is not None:
                raise ValueError(f"camera {name!r} already exists")
            self._change_overlay(lambda o: (o.cameras.append(camera),
                                            o.removed.remove(name) if name in o.removed else None), f"add {name}")
            self.config.cameras.append(camera)
            self._start_camera(camera)
        log.warning("camera %s added through the web API (%s)", name, redact(url))
        return f"camera {name} added (saved in {self.config.storage.overlay_path.name})"

    def remove_camera(self, name: str) -> str:
        """A camera stopped and forgotten; saved in the overlay too (a camera of the config file
        is listed as removed there), so a reload does not bring it back."""
        with self._control_lock:
            if name not in self.workers and self.config.camera(name) is None:
                raise ValueError(f"no camera {name!r}")

            def forget(overlay):
                added = [c for c in overlay.cameras if c.name == name]
                overlay.cameras = [c for c in overlay.cameras if c.name != name]
                if not added:
                    overlay.removed.append(name)  # one of the file's cameras

            self._change_overlay(forget, f"remove {name}")
            self.config.cameras = [c for c in self.config.cameras if c.name != name]
            self._stop_cameras([name])
        log.warning("camera %s removed through the web API", name)
        return f"camera {name} removed (saved in {self.config.storage.overlay_path.name})"

    def _change_overlay(self, change, what: str) -> None:
        """Read, change and write the overlay; ValueError (one line) when it cannot be read or written."""
        path = self.config.storage.overlay_path
        try:
            overlay = read_overlay(path)
            change(overlay)
            write_overlay(path, overlay)
        except ConfigError as exc:
            raise ValueError(f"cannot {what}: {exc}") from None
        except OSError as exc:
            raise ValueError(f"cannot {what}: {path} is not writable ({exc.strerror or exc}); "
                             "change the config file and reload instead") from None
