"""Alerts queued on disk reach a real webhook receiver and a real mosquitto broker: with both
down they wait, and once they are up every alert arrives, none twice; an outbox reopened after
a stop delivers what was left, and nothing that had already been sent."""
from __future__ import annotations

import json

import pytest

from monitor.config import MqttConfig, WebhookConfig
from monitor.outbox import Outbox
from monitor.sinks import DeliveryWorker, MqttSink, WebhookSink
from monitor.state import DELIVERY_QUEUED, DELIVERY_SENT, Alert, MonitorState
from monitor.alerts import sha256_file
from tests.monitor_helpers import Mosquitto, MqttRecorder, WebhookReceiver, check_evidence, wait_until


def _alert(folder, number: int) -> Alert:
    evidence = folder / f"a{number}"
    evidence.mkdir()
    (evidence / "snapshot.jpg").write_bytes(b"\xff\xd8 not really a jpeg " + bytes([number]))
    (evidence / "timeline.json").write_text(json.dumps({"points": [number]}))
    files = {name: str(evidence / name) for name in ("snapshot.jpg", "timeline.json")}
    return Alert(id=f"2026120{number}T000000000Z-cam-fake-{number:06x}", camera="cam", kind="fake",
                 time="2026-12-06T00:00:00.000Z", message="test", track_id=number, score=0.9,
                 evidence=files, sha256={n: sha256_file(p) for n, p in files.items()})


class Delivery:
    """An outbox and one worker per sink, as the service runs them."""

    def __init__(self, db, webhook_url: str, mqtt_url: str):
        self.state = MonitorState()
        self.outbox = Outbox(db)
        self.sinks = [WebhookSink(WebhookConfig(url=webhook_url, name="hook", timeout_seconds=2,
                                                backoff_seconds=0.2, backoff_max_seconds=0.5)),
                      MqttSink(MqttConfig(url=mqtt_url, topic_prefix="t", timeout_seconds=2,
                                          backoff_seconds=0.2, backoff_max_seconds=0.5))]
        self.workers = []
        for sink in self.sinks:
            sink.start()
            self.workers.append(DeliveryWorker(sink, self.outbox, self.state))
        for alert in self.outbox.recent():
            self.state.add_alert(alert)
        for worker in self.workers:
            worker.start()

    def add(self, alert: Alert) -> None:
        alert.deliveries = {s.name: DELIVERY_QUEUED for s in self.sinks}
        self.outbox.add(alert, [s.name for s in self.sinks])
        self.state.add_alert(alert)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(10)
        for sink in self.sinks:
            sink.close()
        self.outbox.close()


@pytest.fixture
def receivers(tmp_path):
    broker = Mosquitto(tmp_path)
    hook = WebhookReceiver()
    yield broker, hook
    broker.stop()
    hook.stop()


def test_alerts_wait_while_both_sinks_are_down_and_all_arrive_once_when_they_are_up(tmp_path, receivers):
    broker, hook = receivers  # neither started: both down
    delivery = Delivery(tmp_path / "outbox.sqlite", hook.url, broker.url)
    try:
        alerts = [_alert(tmp_path, n) for n in range(1, 4)]
        for alert in alerts:
            delivery.add(alert)
        wait_until(lambda: delivery.state.metrics.alerts_failed.labels(sink="hook")._value.get() >= 2, 10,
                   what="failed webhook tries")
        assert delivery.outbox.queued() == {"hook": 3, "mqtt": 3}
        assert all(a.deliveries == {"hook": DELIVERY_QUEUED, "mqtt": DELIVERY_QUEUED} for a in delivery.state.alerts())

        broker.start()
        recorder = MqttRecorder(broker.port, "t")
        hook.start()
        wait_until(lambda: not delivery.outbox.queued(), 30, what="the queue to empty")
        ids = sorted(a.id for a in alerts)
        assert sorted(b["id"] for b in hook.bodies()) == ids  # none lost, none twice
        assert [h["Idempotency-Key"] for h, _ in hook.posts] == [b["id"] for b in hook.bodies()]
        wait_until(lambda: len(recorder.alerts()) >= 3, 10, what="MQTT alerts")
        assert sorted(a["id"] for a in recorder.alerts()) == ids
        for payload in hook.bodies() + recorder.alerts():
            check_evidence(payload)
        assert all(a.deliveries == {"hook": DELIVERY_SENT, "mqtt": DELIVERY_SENT} for a in delivery.state.alerts())
        assert recorder.last("t/availability") == b"online"
        recorder.close()
    finally:
        delivery.close()


def test_outbox_reopened_after_a_stop_delivers_what_was_left_and_nothing_sent_before(tmp_path, receivers):
    broker, hook = receivers
    broker.start()
    hook.start()
    recorder = MqttRecorder(broker.port, "t")
    first = Delivery(tmp_path / "outbox.sqlite", hook.url, broker.url)
    sent = _alert(tmp_path, 1)
    first.add(sent)
    wait_until(lambda: not first.outbox.queued(), 20, what="the first alert to be delivered")
    hook.stop()  # the webhook goes down; the next alert reaches only the broker before the stop
    left = _alert(tmp_path, 2)
    first.add(left)
    wait_until(lambda: first.outbox.queued() == {"hook": 1}, 20, what="the second alert queued for the webhook")
    first.close()
    assert wait_until(lambda: recorder.last("t/availability") == b"offline", 10, what="availability offline")

    hook.start()
    second = Delivery(tmp_path / "outbox.sqlite", hook.url, broker.url)
    try:
        assert {a.id for a in second.state.alerts()} == {sent.id, left.id}  # the state comes back from disk
        wait_until(lambda: not second.outbox.queued(), 20, what="the queue to empty after the restart")
        assert [b["id"] for b in hook.bodies()] == [sent.id, left.id]  # each exactly once
        assert sorted(a["id"] for a in recorder.alerts()) == [sent.id, left.id]
    finally:
        second.close()
        recorder.close()


def test_a_webhook_that_refuses_an_alert_for_good_marks_it_failed_without_retrying(tmp_path):
    import http.server
    import threading

    calls = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            calls.append(self.headers["Idempotency-Key"])
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(400)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state, outbox = MonitorState(), Outbox(tmp_path / "o.sqlite")
    sink = WebhookSink(WebhookConfig(url=f"http://127.0.0.1:{server.server_port}/", name="hook", backoff_seconds=0.1))
    worker = DeliveryWorker(sink, outbox, state)
    alert = _alert(tmp_path, 1)
    outbox.add(alert, ["hook"])
    state.add_alert(alert)
    worker.start()
    try:
        wait_until(lambda: outbox.deliveries(alert.id) == {"hook": "failed"}, 10, what="the failed mark")
        worker.wake.set()
        import time

        time.sleep(0.5)
        assert calls == [alert.id]
        assert state.alert(alert.id).deliveries == {"hook": "failed"}
    finally:
        worker.stop()
        worker.join(5)
        server.shutdown()
