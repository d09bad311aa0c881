"""Where alerts go: webhooks (HTTP POST) and an MQTT broker, each fed from the outbox.

Every sink gets the same JSON document (:func:`alert_payload`): the alert's fields and its
evidence **inline as base64** with each file's sha256 and size, so a receiver needs no access
to the monitor's disk or web server, and can check each file against its digest.

A :class:`DeliveryWorker` per sink takes the due rows of the outbox (:mod:`monitor.outbox`),
sends them one at a time and marks each right after the acknowledgement; a temporary failure
(connection refused, timeout, HTTP 5xx/408/429, no PUBACK) is retried with exponential backoff
and jitter, a permanent one (other HTTP 4xx) is marked failed and kept on disk.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

from monitor.config import MqttConfig, WebhookConfig
from monitor.outbox import Outbox
from monitor.state import DELIVERY_FAILED, DELIVERY_SENT, Alert, MonitorState
from pipeline.urls import redact

log = logging.getLogger("dfstream.monitor.sinks")
PAYLOAD_FORMAT = "dfstream-alert/1"


class TemporaryError(RuntimeError):
    """Try again later."""


class PermanentError(RuntimeError):
    """The sink refused the alert for good."""


def alert_payload(alert: Alert) -> bytes:
    """The JSON document sent to every sink for ``alert``."""
    fields = asdict(alert)
    fields.pop("deliveries")
    fields.pop("sha256")
    evidence = {}
    for name, path in alert.evidence.items():
        data = Path(path).read_bytes()
        evidence[name] = {"sha256": alert.sha256.get(name), "bytes": len(data),
                          "content_base64": base64.b64encode(data).decode("ascii")}
    fields["evidence"] = evidence
    fields["format"] = PAYLOAD_FORMAT
    return json.dumps(fields).encode()


class WebhookSink:
    def __init__(self, config: WebhookConfig):
        self.config = config
        self.name = config.name
        self.backoff_seconds, self.backoff_max_seconds = config.backoff_seconds, config.backoff_max_seconds
        self.max_attempts = config.retries + 1 if config.retries else None

    def start(self) -> None:
        pass

    def send(self, alert: Alert, payload: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "dfstream-monitor",
                   "Idempotency-Key": alert.id, **self.config.headers}
        request = urllib.request.Request(self.config.url, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code} from {redact(self.config.url)}"
            if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
                raise PermanentError(message) from None
            raise TemporaryError(message) from None
        except (urllib.error.URLError, OSError, socket.timeout) as exc:
            reason = getattr(exc, "reason", exc)
            raise TemporaryError(f"{redact(self.config.url)}: {reason}") from None

    def close(self) -> None:
        pass


class MqttSink:
    """Alerts on ``<prefix>/<camera>/alert`` (QoS 1); ``<prefix>/availability`` retained
    ``online``/``offline`` (the broker publishes ``offline`` as our last will if we vanish);
    ``<prefix>/<camera>/health`` retained, each camera's health as JSON."""

    def __init__(self, config: MqttConfig):
        import paho.mqtt.client as mqtt

        self.config = config
        self.name = config.name
        self.backoff_seconds, self.backoff_max_seconds = config.backoff_seconds, config.backoff_max_seconds
        self.max_attempts = None
        self.prefix = config.topic_prefix.rstrip("/")
        self.availability = f"{self.prefix}/availability"
        self.health: dict[str, bytes] = {}  # camera -> last health document, published again on each connect
        self._lock = threading.Lock()
        client_id = config.client_id or f"dfstream-monitor-{socket.gethostname()}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        self.client.will_set(self.availability, b"offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.connected = threading.Event()

    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties=None) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("mqtt %s: connection refused (%s)", self.name, reason_code)
            return
        client.publish(self.availability, b"online", qos=1, retain=True)
        with self._lock:
            for camera, document in self.health.items():
                client.publish(f"{self.prefix}/{camera}/health", document, qos=1, retain=True)
        self.connected.set()

    def publish_health(self, camera: str, document: dict | None) -> None:
        """A camera's health, retained (None: the camera was removed, its retained topic cleared)."""
        topic = f"{self.prefix}/{camera}/health"
        payload = b"" if document is None else json.dumps(document).encode()
        with self._lock:
            if document is None:
                self.health.pop(camera, None)
            else:
                self.health[camera] = payload
        if self.client.is_connected():
            self.client.publish(topic, payload, qos=1, retain=True)  # else: sent on (re)connect

    def send(self, alert: Alert, payload: bytes) -> None:
        if not self.client.is_connected():
            raise TemporaryError(f"not connected to {redact(self.config.url)}")
        info = self.client.publish(f"{self.prefix}/{alert.camera}/alert", payload, qos=1)
        try:
            info.wait_for_publish(self.config.timeout_seconds)
        except (RuntimeError, ValueError) as exc:
            raise TemporaryError(f"{redact(self.config.url)}: {exc}") from None
        if not info.is_published():
            raise TemporaryError(f"{redact(self.config.url)}: no PUBACK within {self.config.timeout_seconds:g} s")

    def close(self) -> None:
        if self.client.is_connected():
            self.client.publish(self.availability, b"offline", qos=1, retain=True).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()


class DeliveryWorker(threading.Thread):
    """Sends one sink's queued alerts, oldest first, until stopped."""

    POLL_S = 1.0

    def __init__(self, sink, outbox: Outbox, state: MonitorState):
        super().__init__(name=f"deliver-{sink.name}", daemon=True)
        self.sink, self.outbox, self.state = sink, outbox, state
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Stop after the send in flight (if any) has been acknowledged and marked."""
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            for alert, attempts in self.outbox.due(self.sink.name):
                if self.stopping.is_set():
                    break
                self._deliver(alert, attempts)
            self._update_queued()
            self.wake.wait(self.POLL_S)
            self.wake.clear()

    def _deliver(self, alert: Alert, attempts: int) -> None:
        name = self.sink.name
        metrics = self.state.metrics
        try:
            payload = alert_payload(alert)
            self.sink.send(alert, payload)
        except TemporaryError as exc:
            metrics.alerts_failed.labels(sink=name).inc()
            if self.sink.max_attempts is not None and attempts + 1 >= self.sink.max_attempts:
                self._mark(alert, DELIVERY_FAILED, str(exc))
                return
            delay = min(self.sink.backoff_max_seconds, self.sink.backoff_seconds * 2 ** min(attempts, 20))
            delay *= random.uniform(0.8, 1.2)  # jitter: many queued alerts do not retry in lockstep
            self.outbox.retry_later(alert.id, name, time.time() + delay, str(exc))
            log.warning("alert %s to %s: %s; next try in %.0f s", alert.id, name, exc, delay)
            return
        except (PermanentError, OSError) as exc:  # OSError: its evidence is gone from the disk
            metrics.alerts_failed.labels(sink=name).inc()
            self._mark(alert, DELIVERY_FAILED, str(exc))
            log.error("alert %s to %s failed for good: %s", alert.id, name, exc)
            return
        self._mark(alert, DELIVERY_SENT, "")
        metrics.alerts_sent.labels(sink=name).inc()
        log.info("alert %s delivered to %s", alert.id, name)

    def _mark(self, alert: Alert, state: str, error: str) -> None:
        if state == DELIVERY_SENT:
            self.outbox.mark_sent(alert.id, self.sink.name)
        else:
            self.outbox.mark_failed(alert.id, self.sink.name, error)
        self.state.set_delivery(alert.id, self.sink.name, state)

    def _update_queued(self) -> None:
        self.state.metrics.alerts_queued.labels(sink=self.sink.name).set(self.outbox.queued().get(self.sink.name, 0))


def build_sinks(config) -> list:
    """The sinks of a SinksConfig, not yet started."""
    sinks: list = [WebhookSink(hook) for hook in config.webhooks]
    if config.mqtt is not None:
        sinks.append(MqttSink(config.mqtt))
    return sinks
