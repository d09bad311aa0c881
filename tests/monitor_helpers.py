"""Real components for the monitor's tests: a mosquitto broker on a free port, an MQTT
subscriber that records what arrives, an HTTP webhook receiver in a thread, a camera that
answers garbage, ``dfstream monitor`` as a subprocess, small clips for the RTSP server and
headless chromium. Plain context managers and classes (not fixtures), started and stopped by
the tests."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from tests.live_helpers import CliProcess, free_port, missing
from tests.rtsp_server import stop_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_MISSING = "chromium is not installed (apt-get install chromium; it is in .ci/apt-packages.txt)"
WINDOW = (1280, 1000)  # the browser's window (width, height), so screenshots have a known size


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


# -- dfstream monitor as a subprocess ------------------------------------------------------------


CLIP_SIZE = 256  # small: cameras on two shared cores
CLIP_FPS = 15


def small_clip(source: Path, target: Path, seconds: float = 10, size: int = CLIP_SIZE, fps: int = CLIP_FPS) -> Path:
    """``seconds`` of ``source`` at ``fps``, size x size, H.264 with one slice per frame (for the RTSP
    server, which ends the session with the file: the monitor then starts the camera's run again)."""
    import av
    import cv2

    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        video = inp.streams.video[0]
        step = max(1, round(float(video.average_rate or 30) / fps))
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.thread_type = "FRAME"
        written = 0
        for index, frame in enumerate(inp.decode(video)):
            if index % step:
                continue
            image = cv2.resize(frame.to_ndarray(format="bgr24"), (size, size), interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
            written += 1
            if written >= fps * seconds:
                break
        for packet in stream.encode(None):
            out.mux(packet)
    return target


class MonitorProcess:
    """``dfstream --log-level info monitor CONFIG`` with its output appended to ``log``; its status
    from ``storage/status.json``."""

    def __init__(self, config: Path, log: Path, storage: Path):
        self.log_path = log
        self.storage = storage
        self.log = open(log, "a")
        self.process = CliProcess(["--log-level", "info", "monitor", config], stdout=self.log, stderr=self.log)

    def status(self) -> dict:
        try:
            return {c["name"]: c for c in json.loads((self.storage / "status.json").read_text())["cameras"]}
        except (OSError, ValueError):
            return {}

    def log_text(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.process.process.send_signal(signum)

    def terminate(self, timeout: float = 60) -> int:
        self.process.process.send_signal(signal.SIGTERM)
        code = self.process.process.wait(timeout)
        self.process.stop()
        self.log.close()
        return code

    def stop(self) -> None:
        self.process.stop()
        if not self.log.closed:
            self.log.close()


# -- headless chromium -----------------------------------------------------------------------------


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium with a fresh profile in ``profile`` and a WINDOW-sized window; its page's
    scripts run for up to 4 s of virtual time before --dump-dom or --screenshot."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={profile / 'profile'}", "--force-device-scale-factor=1",
               f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=4000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def hex_bgr(colour: str) -> np.ndarray:
    """``#rrggbb`` as a BGR pixel (int16, to subtract from a screenshot's pixels)."""
    return np.array([int(colour[5:7], 16), int(colour[3:5], 16), int(colour[1:3], 16)], np.int16)


def tile_looks_like_a_picture(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[bool, str]:
    """Whether the screenshot's ``box`` (x, y, w, h) shows a picture rather than a blank or flat box:
    far from one flat colour, and mostly not the empty view's dark background."""
    x, y, w, h = box
    tile = image[y + 2:y + h - 2, x + 2:x + w - 2].astype(np.int16)
    if tile.size == 0:
        return False, f"empty tile {box}"
    background = np.abs(tile - hex_bgr("#111111")).max(axis=2) <= 8
    return bool(tile.std() > 20 and background.mean() < 0.6), f"{box}: std {tile.std():.1f}, background {background.mean():.2f}"
