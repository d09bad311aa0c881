"""The cost of watching a video call: the bench clip (1280x720) played into a window on a private
Xvfb display, and ``dfstream run -s window:TITLE --report DIR`` watching it at the screen
sources' default rate, for a set time.

The figure is CPU cores: the CPU time of every process of the run (supervisor and stages,
from the moment every stage is ready until all have exited) over that wall time.  The
player and the X server are the call, not dfstream: they are left out.
"""
from __future__ import annotations

import av  # noqa: F401  before cv2 (imported by the stages): this process grabs the screen to probe it

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import cpu_s_of
from bench.pipeline_runs import RunClock
from pipeline.config import SCREEN_FPS, DetectConfig, RunConfig

TITLE = "dfstream bench call"


class _StopAfter(RunClock):
    """The run clock, which also asks the run to stop ``seconds`` after frames start to flow."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.stop_sent = False

    def reports_received(self, supervisor) -> None:
        super().reports_received(supervisor)
        if self.flow_started is not None and not self.stop_sent and time.monotonic() - self.flow_started >= self.seconds:
            self.stop_sent = True
            supervisor.request_stop("bench: watched long enough")


def _xvfb(size: str) -> tuple[subprocess.Popen, str]:
    if shutil.which("Xvfb") is None:
        raise RuntimeError("Xvfb is not installed (apt-get install xvfb): the screen part needs a virtual display")
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", size, "-nolisten", "tcp"],
                               pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    number = b""
    deadline = time.monotonic() + 15
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(read_fd, 16)
        if not chunk:
            break
        number += chunk
    os.close(read_fd)
    if not number.strip().isdigit():
        process.kill()
        raise RuntimeError("Xvfb did not start")
    return process, f":{number.strip().decode()}"


def watch_window(clip: str, seconds: float, model_path: str, engine: str, face_detector: str,
                 face_detector_path: str | None, out_dir: str, fps: float = SCREEN_FPS,
                 detect_every: int = RunConfig.detect_every, classify_every: int | None = None,
                 detect_size: int = DetectConfig.detect_max_side) -> dict:
    """Watch ``clip`` playing in a window for ``seconds``; return the run's CPU cores and figures."""
    from engines.metadata import KIND_DETECTOR, read_metadata
    from runtime.run_config import build_run_config, probe_streams
    from runtime.supervisor import Supervisor
    import io

    server, display = _xvfb("1920x1080x24")
    os.environ["DISPLAY"] = display
    player = None
    try:
        player = subprocess.Popen([sys.executable, "-m", "bench.window_player", clip, TITLE, "0", "0"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  cwd=Path(__file__).resolve().parent.parent)
        if player.stdout.readline().strip() != "shown":
            raise RuntimeError("the window player did not start")
        streams = probe_streams([f"window:{TITLE}"], capture_fps=fps)
        metadata = read_metadata(model_path).expect_kind(KIND_DETECTOR, model_path)
        config = build_run_config(streams, model_path, metadata, (face_detector, face_detector_path), engine=engine,
                                  detect_every=detect_every, classify_every=classify_every, detect_size=detect_size,
                                  report_path=str(Path(out_dir) / "report"), progress=False)
        clock = _StopAfter(seconds)
        supervisor = Supervisor(config, out=io.StringIO(), observer=clock)
        result = supervisor.run()
        finished = time.monotonic()
        times = os.times()  # the stage processes are reaped; the player and Xvfb still run, and are not in it
        cpu_total = times.user + times.system + times.children_user + times.children_system
        player_cpu = cpu_s_of(player.pid)
    finally:
        if player is not None:
            player.kill()
            player.wait(5)
        server.terminate()
        server.wait(5)
    if result.error:
        raise RuntimeError(f"dfstream run failed: {result.error}")
    (stream,) = result.metrics["streams"]
    span = finished - clock.flow_started
    cpu = cpu_total - clock.cpu_at_flow
    return {
        "live": True,
        "source": f"window:{TITLE}",
        "size": [streams[0].width, streams[0].height],
        "capture_fps": fps,
        "seconds": round(span, 2),
        "frames": stream["frames_written"],
        "fps": round(stream["frames_written"] / span, 2) if span else None,
        "dropped": stream["dropped"] or 0,
        "dropped_pct": round(100.0 * (stream["dropped"] or 0) / stream["frames_decoded"], 2) if stream["frames_decoded"] else None,
        "frames_to_detect": stream.get("frames_to_detect"),
        "cpu_s": round(cpu, 2),
        "cpu_cores": round(cpu / span, 3) if span else None,
        "player_cpu_cores": round(player_cpu / span, 2) if span else None,  # the "call" itself, for scale
        "latency_ms": {k: (stream["latency_ms"] or {}).get(k) for k in ("p50_ms", "p95_ms", "p99_ms")},
        "stages": [{k: row[k] for k in ("stage", "replica", "fps", "busy_pct", "cpu_s")} for row in result.metrics["stages"]],
        "settings": {"detect_every": config.detect_every, "classify_every": config.classify_every,
                     "detect_size": config.detect.detect_max_side, "output": "--report (no video encoded)"},
        "tracks": [{k: t[k] for k in ("track_id", "scores", "overall_verdict")} for t in stream["tracks"]],
    }
