"""A real RTSP server on 127.0.0.1 for tests: GStreamer's GstRtspServer.

Run as a script with the *system* interpreter (``/usr/bin/python3``, which has
``python3-gi``), it serves mp4 files without re-encoding::

    /usr/bin/python3 tests/rtsp_server.py --mount clip=/tmp/clip.mp4 --mount door=/tmp/door.mp4

binds 127.0.0.1 on a port the kernel picks (or ``--port``), prints one line
``READY <port>`` on stdout, and serves until it is terminated.  Every client
gets its file from the start, and the RTSP session ends (RTCP BYE) when the
file does.

Imported from the tests (any interpreter; only the standard library is used
here), :func:`rtsp_server` is a context manager that starts that process, waits
until it accepts connections and always stops it::

    with rtsp_server({"clip": path}) as server:
        url = server.url("clip")   # rtsp://127.0.0.1:PORT/clip

Clips must be H.264 with one slice per frame (encode with PyAV
``thread_type='FRAME'``); the payloader's ``config-interval`` is left alone
(``-1`` with multi-slice frames corrupts every frame for every reader).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
# Debian packages the server needs (the full list for the live tests is .ci/apt-packages.txt)
APT_PACKAGES = ("python3-gi", "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-rtsp", "gstreamer1.0-plugins-base",
                "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad")
_CHECK = (
    "import gi\n"
    "gi.require_version('Gst', '1.0')\n"
    "gi.require_version('GstRtspServer', '1.0')\n"
    "from gi.repository import Gst, GstRtspServer\n"
    "Gst.init(None)\n"
    "missing = [e for e in ('filesrc', 'qtdemux', 'h264parse', 'rtph264pay') if Gst.ElementFactory.find(e) is None]\n"
    "print(' '.join(missing))\n"
)


class RtspServerUnavailable(RuntimeError):
    """GStreamer's RTSP server (or an element it needs) is not installed."""


def unavailable_reason() -> str | None:
    """Why an RTSP server cannot be started here, or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the GStreamer RTSP server runs with the system Python)"
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "checking for GStreamer's RTSP server timed out"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server bindings missing ({last}); apt-get install {' '.join(APT_PACKAGES)}"
    if result.stdout.strip():
        return f"GStreamer elements missing: {result.stdout.strip()}; apt-get install {' '.join(APT_PACKAGES)}"
    return None


# -- the client side: a context manager for tests ---------------------------------


@dataclass
class RtspServer:
    port: int
    process: subprocess.Popen
    mounts: dict[str, Path] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def url(self, mount: str) -> str:
        if mount not in self.mounts:
            raise KeyError(f"no mount {mount!r} (have {', '.join(self.mounts)})")
        return f"rtsp://{self.host}:{self.port}/{mount}"


def stop_process(process: subprocess.Popen) -> None:
    """Terminate, then kill after 5 s; close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _wait_accepting(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def rtsp_server(mounts: dict[str, Path | str], port: int = 0, start_timeout: float = 20.0):
    """Serve ``{mount: mp4 file}`` on rtsp://127.0.0.1:PORT/<mount>; stopped on exit, whatever happens."""
    reason = unavailable_reason()
    if reason:
        raise RtspServerUnavailable(reason)
    mounts = {name: Path(path).resolve() for name, path in mounts.items()}
    for name, path in mounts.items():
        if not path.is_file():
            raise FileNotFoundError(f"mount {name}: no such file {path}")
    command = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--port", str(port)]
    for name, path in mounts.items():
        command += ["--mount", f"{name}={path}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        line = ""
        while time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if ready:
                line = process.stdout.readline()
                break
        if not line.startswith("READY "):
            stop_process(process)
            error = process.stderr.read() if process.stderr and not process.stderr.closed else ""
            raise RuntimeError(f"RTSP server did not start (exit {process.returncode}): {line.strip()} {error[-2000:]}")
        bound = int(line.split()[1])
        if not _wait_accepting(bound, deadline):
            raise RuntimeError(f"RTSP server on port {bound} does not accept connections")
        yield RtspServer(bound, process, mounts)
    finally:
        stop_process(process)


# -- the server side: run with /usr/bin/python3 -------------------------------------


def _launch_string(path: Path) -> str:
    location = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )'


def serve(mounts: dict[str, Path], port: int) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    points = server.get_mount_points()
    for name, path in mounts.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(_launch_string(path))
        factory.set_shared(False)  # every client gets the file from its start
        points.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, lambda *_: (loop.quit(), False)[1])
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--mount", action="append", required=True, metavar="NAME=FILE.mp4",
                        help="serve FILE.mp4 as rtsp://127.0.0.1:PORT/NAME (repeatable)")
    args = parser.parse_args(argv)
    mounts = {}
    for item in args.mount:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            parser.error(f"--mount {item!r}: expected NAME=existing-file.mp4")
        mounts[name] = Path(path).resolve()
    serve(mounts, args.port)


if __name__ == "__main__":
    main()
