"""Real receivers for the monitor's tests: a mosquitto broker on a free port, an MQTT
subscriber that records what arrives, and an HTTP webhook receiver in a thread.
Plain context managers and classes (not fixtures), started and stopped by the tests."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.live_helpers import free_port, missing
from tests.rtsp_server import stop_process


def wait_until(condition, timeout: float, step: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
        return True
    return False


class Mosquitto:
    """The Debian mosquitto broker on 127.0.0.1:port (persistent sessions off); stop() and
    start() again on the same port to simulate an outage."""

    def __init__(self, folder: Path, port: int | None = None):
        if shutil.which("mosquitto") is None:
            missing("mosquitto not installed (apt-get install mosquitto)")
        self.port = port or free_port()
        self.conf = folder / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        wait_until(lambda: _accepting(self.port), 10, what=f"mosquitto on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class MqttRecorder:
    """Subscribes to ``<prefix>/#`` (QoS 1) and keeps every message: (topic, payload, retained)."""

    def __init__(self, port: int, prefix: str):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"recorder-{port}-{time.time_ns()}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client, _userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def alerts(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/alert")]

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            found = [p for t, p, _ in self.messages if t == topic]
        return found[-1] if found else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WebhookReceiver:
    """An HTTP server in a thread that answers 200 and records each POST (headers, JSON body).
    stop() closes the port (an outage), start() opens it again on the same port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.posts: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()
        self.server = None
        self.thread = None

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.posts.append((dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict]:
        with self.lock:
            return [body for _, body in self.posts]


def check_evidence(payload: dict, alerts_dir: Path | None = None) -> None:
    """Every evidence file in a payload decodes to bytes whose sha256 is the one given (and,
    with ``alerts_dir``, is the file on disk)."""
    assert payload["evidence"], f"alert {payload['id']} carries no evidence"
    for name, item in payload["evidence"].items():
        data = base64.b64decode(item["content_base64"])
        assert len(data) == item["bytes"] > 0
        assert hashlib.sha256(data).hexdigest() == item["sha256"], f"{payload['id']} {name}: sha256 differs"
        if alerts_dir is not None:
            on_disk = (alerts_dir / payload["id"] / name).read_bytes()
            assert hashlib.sha256(on_disk).hexdigest() == item["sha256"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
