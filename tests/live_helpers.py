"""Helpers for the live-source tests (RTSP, --live, --display): the CLI run as its own
process group with a marker to find strays, a silent TCP listener, Xvfb, screenshots,
and clips re-encoded the way an RTSP server needs them, with their frame index stamped in.

Plain functions and context managers, not fixtures, so each test module wraps what
it needs and nothing is registered twice.
"""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SHARED_DATA, SHARED_MODELS
from tests.rtsp_server import stop_process

MARKER_VAR = "DFSTREAM_TEST_MARKER"  # set in every CLI run started here; children inherit it


def missing(reason: str) -> None:
    """A tool the live tests need is not installed: skip on a developer's machine, fail on CI
    (where .ci/run installs .ci/apt-packages.txt, so a skip would hide a broken install step)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install .ci/apt-packages.txt)", pytrace=False)
    pytest.skip(reason)


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared test file missing: {path}")
    return path


# -- models and clips ------------------------------------------------------------------


BARCODE_BITS = 7  # frame indices 0..127
BARCODE_CELL = (32, 48)  # (width, height) of one bit, stacked down the right edge


def stamp_index(image: np.ndarray, index: int) -> None:
    """Write ``index`` as black/white cells down the right edge of a BGR frame (in place),
    clear of the HUD (top left) and of a centred face."""
    width, height = BARCODE_CELL
    x = image.shape[1] - width
    for bit in range(BARCODE_BITS):
        image[8 + bit * height:8 + (bit + 1) * height, x:] = 255 if (index >> bit) & 1 else 0


def read_index(image: np.ndarray) -> int:
    """The index :func:`stamp_index` wrote, read from the middle of each cell."""
    width, height = BARCODE_CELL
    x = image.shape[1] - width
    index = 0
    for bit in range(BARCODE_BITS):
        top = 8 + bit * height
        cell = image[top + height // 4:top + 3 * height // 4, x + width // 4:x + 3 * width // 4]
        if cell.mean() > 127:
            index |= 1 << bit
    return index


def reencode_clip(source: Path, target: Path, max_frames: int, barcode: bool = False) -> Path:
    """The first ``max_frames`` frames of ``source`` as H.264 with one slice per frame
    (what GStreamer's RTSP payloader needs), same size and rate, no audio; with
    ``barcode`` each frame carries its own index (:func:`read_index`)."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        video = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate or Fraction(30))
        stream.width, stream.height = video.codec_context.width, video.codec_context.height
        stream.pix_fmt = "yuv420p"
        stream.thread_type = "FRAME"  # one slice per frame
        for index, frame in enumerate(inp.decode(video)):
            if index >= max_frames:
                break
            image = frame.to_ndarray(format="bgr24")
            if barcode:
                stamp_index(image, index)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target


def decode_frames(path: Path, size: tuple[int, int] | None = None) -> tuple[list[np.ndarray], list[float | None]]:
    """Every frame of a video as BGR (optionally resized to ``size`` = (w, h)) and its time in seconds."""
    import av
    import cv2

    images, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="bgr24")
            images.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size else image)
            times.append(None if frame.pts is None else float(frame.pts * frame.time_base))
    return images, times


# -- the CLI as a process group ---------------------------------------------------------


def cli_env(marker: str, **extra: str) -> dict:
    env = dict(os.environ)
    env.pop("DISPLAY", None)  # only tests that want a screen give one
    if SHARED_MODELS.is_dir():
        env["DFSTREAM_MODELS"] = str(SHARED_MODELS)
    env["DFSTREAM_OFFLINE"] = "1"
    env[MARKER_VAR] = marker
    env.update(extra)
    return env


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float  # seconds from start to exit
    ended: float  # time.monotonic() when it exited
    strays: list[int]  # processes of this run still alive a few seconds after it exited

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


class CliProcess:
    """``python -m dfstream ...`` from this checkout, in its own session, with a marker
    in its environment that every stage process inherits; :meth:`stop` ends all of them."""

    def __init__(self, args, env_extra: dict | None = None, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
        self.marker = f"dfstream-test-{uuid.uuid4().hex}"
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dfstream", *map(str, args)],
            cwd=REPO, env=cli_env(self.marker, **(env_extra or {})), stdin=subprocess.DEVNULL,
            stdout=stdout, stderr=stderr, text=True, start_new_session=True,
        )

    def wait(self, timeout: float) -> CliRun:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            stdout, stderr = self.process.communicate()
            raise AssertionError(f"dfstream did not finish within {timeout:g} s; stderr:\n{(stderr or '')[-3000:]}")
        ended = time.monotonic()
        return CliRun(self.process.returncode, stdout or "", stderr or "", ended - self.started, ended,
                      wait_no_strays(self.marker))

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (the supervisor stops its stages), then SIGKILL for whatever is left of the run."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        kill_strays(self.marker)


def run_cli(args, timeout: float = 120, env_extra: dict | None = None) -> CliRun:
    process = CliProcess(args, env_extra)
    try:
        return process.wait(timeout)
    finally:
        process.stop()


def stray_processes(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker``."""
    found = []
    needle = f"{MARKER_VAR}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_no_strays(marker: str, timeout: float = 5.0) -> list[int]:
    """Stage processes may take a moment to exit after the supervisor; what is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := stray_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_strays(marker: str) -> None:
    for pid in stray_processes(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# -- network ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CameraProxy:
    """A TCP endpoint on 127.0.0.1 that plays a camera, well or badly, one mode per connection:

    - ``"relay"``: forward the connection to the real server on ``target_port`` (both ways);
    - ``"silent"``: accept, read what the client sends (kept in ``received``), never answer --
      a camera that hangs after the handshake;
    - ``"garbage"``: answer bytes of no protocol at all once the client speaks, then hang up.

    Connection k gets ``modes[k]`` (the last mode repeats): ``CameraProxy(port, ("relay",
    "silent"))`` serves one session and hangs the next; ``CameraProxy(modes=("garbage",))`` is a
    camera that is not a camera.  :meth:`fail` cuts a relaying proxy at once: open relays stall
    (kept open, nothing forwarded either way) and the next connections get the given modes.
    ``failing_since`` is when the first connection that was not relayed arrived."""

    GARBAGE = b"\x00\xff garbage \r\n\r\n" + np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()

    def __init__(self, target_port: int | None = None, modes: tuple[str, ...] = ("relay",)):
        unknown = set(modes) - {"relay", "silent", "garbage"}
        if unknown or not modes or ("relay" in modes and target_port is None):
            raise ValueError(f"bad modes {modes!r} (relay needs a target_port)")
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self.failed_connections = 0  # connections not relayed: a source's reconnect tries after a cut
        self.failing_since: float | None = None
        self._modes, self._modes_from = list(modes), 0  # connection k gets _modes[k - _modes_from]
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, mount: str, userinfo: str = "") -> str:
        return f"rtsp://{userinfo}127.0.0.1:{self.port}/{mount}"

    def fail(self, *modes: str) -> None:
        """From now on: open relays stall; the next connections get ``modes`` (the last repeats)."""
        self._modes, self._modes_from = list(modes), self.connections
        self._cut.set()

    def __enter__(self) -> "CameraProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._sockets:
            sock.close()
        self.sock.close()

    def _accept(self, pairs: dict, garbage_due: set) -> None:
        client, _ = self.sock.accept()
        self._sockets.append(client)
        index = self.connections - self._modes_from
        self.connections += 1
        mode = self._modes[min(index, len(self._modes) - 1)]
        if mode == "relay":
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets.append(upstream)
            pairs[client], pairs[upstream] = upstream, client
            return
        self.failed_connections += 1
        self.failing_since = self.failing_since or time.monotonic()
        pairs[client] = None
        if mode == "garbage":
            garbage_due.add(client)

    def _serve(self) -> None:
        pairs: dict[socket.socket, socket.socket | None] = {}  # each socket -> where its bytes go (None: nowhere)
        garbage_due: set[socket.socket] = set()
        while not self._stop.is_set():
            readable, _, _ = select.select([self.sock, *pairs], [], [], 0.05)
            for sock in readable:
                if sock is self.sock:
                    self._accept(pairs, garbage_due)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                peer = pairs.get(sock)
                if sock in garbage_due:
                    garbage_due.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.sendall(self.GARBAGE)
                    data = b""  # and hang up
                if not data:
                    pairs.pop(sock, None)
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    if peer is not None and not self._cut.is_set():
                        with contextlib.suppress(OSError):
                            peer.shutdown(socket.SHUT_WR)
                    continue
                if peer is None:
                    self.received.extend(data)
                elif not self._cut.is_set():
                    with contextlib.suppress(OSError):
                        peer.sendall(data)


# -- Xvfb and screenshots ---------------------------------------------------------------


@contextlib.contextmanager
def xvfb(size: str = "1280x800x24", start_timeout: float = 15.0):
    """A private X server; yields its DISPLAY string (Xvfb picks a free number itself)."""
    if shutil.which("Xvfb") is None:
        missing("Xvfb not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", size, "-nolisten", "tcp", "-br", "-noreset"],
        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(write_fd)
    try:
        number = b""
        deadline = time.monotonic() + start_timeout
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], 0.2)
            if ready:
                chunk = os.read(read_fd, 64)
                if not chunk:
                    break
                number += chunk
        if not number.strip().isdigit():
            raise RuntimeError(f"Xvfb did not start (exit code {process.poll()})")
        yield f":{number.strip().decode()}"
    finally:
        os.close(read_fd)
        stop_process(process)


def window_names(display: str) -> list[str]:
    """Names of the top-level windows on ``display`` (xwininfo from x11-utils), for failure messages."""
    if shutil.which("xwininfo") is None:
        return ["(xwininfo not installed)"]
    result = subprocess.run(["xwininfo", "-root", "-children", "-display", display], capture_output=True,
                            text=True, timeout=20)
    return [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("0x")]


def parse_xwd(data: bytes) -> np.ndarray:
    """An XWD dump (ZPixmap, 24/32 bits per pixel, true/direct colour) as a BGR image."""
    header = struct.unpack(">25I", data[:100])
    (header_size, version, pixmap_format, _depth, width, height, _xoffset, byte_order, _unit, _bit_order, _pad,
     bits_per_pixel, bytes_per_line, _visual, red_mask, green_mask, blue_mask, _bits_rgb, _entries, ncolors) = header[:20]
    if version != 7 or pixmap_format != 2 or bits_per_pixel not in (24, 32):
        raise ValueError(f"unsupported xwd dump: version {version}, format {pixmap_format}, {bits_per_pixel} bpp")
    offset = header_size + ncolors * 12
    rows = np.frombuffer(data, np.uint8, count=height * bytes_per_line, offset=offset).reshape(height, bytes_per_line)
    step = bits_per_pixel // 8
    pixels = rows[:, :width * step].reshape(height, width, step)
    if byte_order == 1:  # MSBFirst: bytes of each pixel are reversed
        pixels = pixels[:, :, ::-1]
    # little-endian pixel bytes now; the masks say which byte holds which colour
    order = [{0xFF: 0, 0xFF00: 1, 0xFF0000: 2}[mask] for mask in (blue_mask, green_mask, red_mask)]
    return np.ascontiguousarray(pixels[:, :, order])


def screenshot(display: str) -> np.ndarray:
    """The whole screen of ``display`` as a BGR image (xwd from x11-apps)."""
    if shutil.which("xwd") is None:
        missing("xwd not installed (apt-get install x11-apps)")
    result = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, timeout=20)
    if result.returncode != 0:
        raise RuntimeError(f"xwd failed: {result.stderr.decode(errors='replace').strip()}")
    return parse_xwd(result.stdout)
