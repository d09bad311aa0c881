"""Soak: ``dfstream monitor`` watching four real RTSP cameras for DFSTREAM_SOAK_MINUTES
(default 30) while the cameras go down and come back, checking that nothing leaks.

Not in the default run (``@pytest.mark.soak``, excluded by pytest.ini); ``make soak`` runs it,
``DFSTREAM_SOAK_MINUTES=3 make soak`` is a smoke run.

Set-up: four GStreamer RTSP servers (tests/rtsp_server.py), one per camera so each can be killed
on its own, each serving a CLIP_SECONDS clip; the session ends with the clip and the camera's run
reconnects in place, so every camera also reconnects every CLIP_SECONDS. A real ``dfstream
monitor`` subprocess watches them, with its web server on a free port and a real webhook
receiver. Each camera has outages (its server killed for OUTAGE_S seconds) at seeded random,
staggered times over the whole run.

Every SAMPLE_S seconds: RSS (and PSS) of the monitor process and of all its descendants, their
open file descriptors (/proc/PID/fd), the number of processes, each camera's health (status.json)
and whether /metrics and /healthz answer. The samples go to out/soak/samples.json and .csv, a
one-paragraph verdict to out/soak/summary.txt.

Pass:
- RSS growth < 5 %: the median total RSS over the last 10 % of the run (minutes 27-30 of 30)
  against the median over 10-20 % of it (minutes 3-6): after start-up (imports, models, the
  first frames of every camera) and after each camera has reconnected at least a few times, so
  the baseline holds every buffer a steady state holds. Medians, because single samples catch
  a reconnect's transient allocations.
- no file-descriptor or process leak: with every camera streaming, the fewest descriptors in
  the end window are no more than the most in the baseline window, and the process count at the
  end equals the baseline's median (a leak grows without bound; a reconnect's socket comes and goes);
- every outage seen: the camera left ``streaming`` while its server was down and was
  ``streaming`` again after it came back; an outage longer than offline_after_seconds (+margin)
  also gave an ``offline`` and an ``online`` alert at the webhook;
- every camera streaming at the end; /metrics and /healthz answered every sample;
- SIGTERM: exit 0 and no process of the monitor left.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import signal
import statistics
import textwrap
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.live_helpers import CliProcess, free_port, shared_file, wait_no_strays
from tests.monitor_helpers import WebhookReceiver, wait_until
from tests.rtsp_server import rtsp_server

MINUTES = float(os.environ.get("DFSTREAM_SOAK_MINUTES", "30"))
SEED = int(os.environ.get("DFSTREAM_SOAK_SEED", "27"))
OUT = Path(os.environ.get("DFSTREAM_SOAK_OUT", REPO / "out" / "soak"))
CAMERAS = {  # one face each
    "cam0": "real/liveportrait_driving_videos/d0.mp4",
    "cam1": "real/liveportrait_driving_videos/d3.mp4",
    "cam2": "real/liveportrait_driving_videos/d10.mp4",
    "cam3": "real/liveportrait_driving_videos/d11.mp4",
}
SIZE, FPS = 256, 15  # small pictures: four cameras on two shared cores
CLIP_SECONDS = 20  # each clip; the session ends with it and the run reconnects
SAMPLE_S = 10.0
OFFLINE_AFTER_S = 5.0
OUTAGE_S = (3.0, 60.0)  # each outage's length (shorter in a shorter run, below)
STARTUP_S = 180.0  # interpreter, models and 4 x stage processes on a busy machine
RECOVER_S = 90.0  # after the last outage, for every camera to stream again
RSS_GROWTH_LIMIT = 0.05

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(MINUTES * 60 + STARTUP_S + RECOVER_S + 600))]


def loop_clip(source: Path, target: Path) -> Path:
    """CLIP_SECONDS of ``source`` at FPS, SIZE x SIZE, H.264 with one slice per frame; played
    forwards then backwards, so a camera's picture never jumps (the clip loops by reconnecting)."""
    import av
    import cv2

    images = []
    with av.open(str(source)) as inp:
        video = inp.streams.video[0]
        step = max(1, round(float(video.average_rate or 30) / FPS))
        for index, frame in enumerate(inp.decode(video)):
            if index % step == 0:
                images.append(cv2.resize(frame.to_ndarray(format="bgr24"), (SIZE, SIZE), interpolation=cv2.INTER_AREA))
            if len(images) >= FPS * CLIP_SECONDS // 2:
                break
    images += images[::-1]
    with av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(FPS))
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.thread_type = "FRAME"  # one slice per frame (the RTSP payloader needs it)
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target


# -- the outage plan ----------------------------------------------------------------------


@dataclass
class Outage:
    camera: str
    down_s: float  # seconds after the monitor started
    length_s: float
    down_at: float = 0.0  # wall clock (time.time()) when it really went down / came back
    up_at: float = 0.0
    left_streaming: bool = False
    streaming_again_s: float | None = None  # seconds from the server's return to streaming
    offline_alert: bool | None = None  # None: too short to need one
    online_alert: bool | None = None

    @property
    def up_s(self) -> float:
        return self.down_s + self.length_s


def outage_plan(cameras: list[str], seconds: float, rng: random.Random) -> list[Outage]:
    """Per camera: a first outage staggered by camera, then one every 6-14 % of the run, each
    OUTAGE_S long (at most 2 s per minute of run, so a 3-minute smoke run has short ones); all
    over by 92 % of the run, so the end window ends with every camera streaming."""
    longest = max(OUTAGE_S[0] + 2, min(OUTAGE_S[1], 2.0 * seconds / 60))
    plan = []
    for index, camera in enumerate(cameras):
        at = seconds * (0.05 + 0.025 * index) + rng.uniform(0, seconds * 0.02)
        while True:
            length = rng.uniform(OUTAGE_S[0], longest)
            if at + length > seconds * 0.92:
                break
            plan.append(Outage(camera, round(at, 1), round(length, 1)))
            at += length + rng.uniform(seconds * 0.06, seconds * 0.14)
    return sorted(plan, key=lambda o: o.down_s)


class Camera:
    """One RTSP server on a fixed port, stopped and started again for an outage."""

    def __init__(self, name: str, clip: Path):
        self.name, self.clip, self.port = name, clip, free_port()
        self._context = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.name}"

    def start(self) -> None:
        self._context = rtsp_server({self.name: self.clip}, port=self.port)
        self._context.__enter__()

    def stop(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)


# -- sampling the monitor's process tree ------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(root: int) -> list[int]:
    tree, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return found


def _kb(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def tree_usage(root: int) -> dict:
    """RSS and PSS (kB, summed), open descriptors and processes of ``root`` and its descendants."""
    usage = {"processes": 0, "rss_kb": 0, "pss_kb": 0, "fds": 0, "monitor_rss_kb": 0, "monitor_fds": 0,
             "rss_kb_by_name": {}}
    for pid in process_tree(root):
        proc = Path("/proc") / str(pid)
        try:
            rss = _kb(proc / "status", "VmRSS:")
            pss = _kb(proc / "smaps_rollup", "Pss:")
            fds = len(os.listdir(proc / "fd"))
            name = (proc / "comm").read_text().strip()  # stage processes name themselves (runtime/runner.py)
        except OSError:  # exited while we looked
            continue
        usage["processes"] += 1
        usage["rss_kb"] += rss
        usage["pss_kb"] += pss
        usage["fds"] += fds
        # summed per name over the cameras: which kind of process grows, should one
        usage["rss_kb_by_name"][name] = usage["rss_kb_by_name"].get(name, 0) + rss
        if pid == root:
            usage["monitor_rss_kb"], usage["monitor_fds"] = rss, fds
    return usage


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status == 200 and bool(response.read())
    except OSError:
        return False


class HealthWatch(threading.Thread):
    """Reads status.json twice a second and keeps each camera's health changes (wall time)."""

    def __init__(self, status: Path):
        super().__init__(daemon=True)
        self.status, self.stop_event = status, threading.Event()
        self.current: dict[str, str] = {}
        self.changes: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                cameras = json.loads(self.status.read_text())["cameras"]
            except (OSError, ValueError, KeyError):
                continue
            now = time.time()
            with self.lock:
                for camera in cameras:
                    if self.current.get(camera["name"]) != camera["health"]:
                        self.current[camera["name"]] = camera["health"]
                        self.changes.append((now, camera["name"], camera["health"]))

    def health(self) -> dict[str, str]:
        with self.lock:
            return dict(self.current)

    def all_streaming(self, names) -> bool:
        health = self.health()
        return all(health.get(name) == "streaming" for name in names)

    def states_during(self, camera: str, start: float, end: float) -> list[str]:
        """The camera's health at ``start`` (it may already have been reconnecting: its clip
        had just ended) and every health it changed to until ``end``."""
        with self.lock:
            mine = [(t, h) for t, c, h in self.changes if c == camera]
        before = [h for t, h in mine if t <= start]
        return before[-1:] + [h for t, h in mine if start < t <= end]

    def streaming_since(self, camera: str, after: float) -> float | None:
        """When the camera was first seen streaming at or after ``after`` (wall time)."""
        with self.lock:
            if self.current.get(camera) == "streaming" and not [1 for t, c, _ in self.changes if c == camera and t >= after]:
                return after  # it never left streaming
            found = [t for t, c, h in self.changes if c == camera and h == "streaming" and t >= after]
        return found[0] if found else None


def config_text(cameras: list[Camera], hook_url: str, web_port: int, detector: str | Path, storage: Path) -> str:
    lines = "\n".join(f"  - {{name: {c.name}, url: '{c.url}', detect_every: 3}}" for c in cameras)
    return textwrap.dedent("""\
        cameras:
        {cameras}
        alerts:
          fake: {{on_threshold: 1.0, off_threshold: 0.99, min_seconds: 5, cooldown_seconds: 3600}}
          offline_after_seconds: {offline}
          pre_roll_seconds: 1
          post_roll_seconds: 1
        sinks:
          webhooks: [{{url: '{hook}', name: hook, timeout_seconds: 5, backoff_seconds: 0.5, backoff_max_seconds: 2}}]
        web: {{port: {web}}}
        model: {{detector: '{detector}', face_detector: auto}}
        storage: {{folder: '{storage}'}}
        retry_seconds: 0.5
        retry_max_seconds: 2
        publish_fps: 2
        """).format(cameras=lines, offline=OFFLINE_AFTER_S, hook=hook_url, web=web_port, detector=detector,
                    storage=storage)


# -- the soak ------------------------------------------------------------------------------


def _window(samples: list[dict], start_s: float, end_s: float, streaming_only: bool = False) -> list[dict]:
    return [s for s in samples if start_s <= s["t_s"] <= end_s and (s["all_streaming"] or not streaming_only)]


def _alert_time(body: dict) -> float:
    return dt.datetime.fromisoformat(body["time"].replace("Z", "+00:00")).timestamp()


def test_monitor_runs_four_cameras_through_outages_without_leaking(rtsp_ready, tmp_path):
    seconds = MINUTES * 60
    started_utc = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    OUT.mkdir(parents=True, exist_ok=True)
    cameras = [Camera(name, loop_clip(shared_file(path), tmp_path / f"{name}.mp4")) for name, path in CAMERAS.items()]
    names = [c.name for c in cameras]
    by_name = {c.name: c for c in cameras}
    plan = outage_plan(names, seconds, random.Random(SEED))
    hook = WebhookReceiver().start()
    web_port = free_port()
    storage = tmp_path / "store"
    config = tmp_path / "monitor.yaml"
    # the shipped default detector, as users run it: each camera (a run of its own) reads its faces' eyes
    config.write_text(config_text(cameras, hook.url, web_port, "detector", storage))
    web = f"http://127.0.0.1:{web_port}"
    log_path = OUT / "monitor.log"
    samples: list[dict] = []
    watch = HealthWatch(storage / "status.json")
    monitor = None
    try:
        for camera in cameras:
            camera.start()
        with open(log_path, "w") as log:
            monitor = CliProcess(["--log-level", "info", "monitor", config], stdout=log, stderr=log)
            started = time.monotonic()
            watch.start()

            def sample() -> None:
                usage = tree_usage(monitor.process.pid)
                samples.append({"t_s": round(time.monotonic() - started, 1), **usage,
                                "all_streaming": watch.all_streaming(names), "health": watch.health(),
                                "cameras_down": sorted(c.name for c in cameras if c._context is None),
                                "metrics_ok": answers(f"{web}/metrics"), "healthz_ok": answers(f"{web}/healthz"),
                                "load1": os.getloadavg()[0]})

            wait_until(lambda: watch.all_streaming(names), STARTUP_S, step=1, what="every camera streaming")
            samples_due = time.monotonic()
            events = sorted([(o.down_s, "down", o) for o in plan] + [(o.up_s, "up", o) for o in plan],
                            key=lambda e: e[0])
            while time.monotonic() - started < seconds or events:
                now = time.monotonic()
                if now >= samples_due:
                    sample()
                    samples_due += SAMPLE_S
                while events and now - started >= events[0][0]:
                    _, what, outage = events.pop(0)
                    if what == "down":
                        by_name[outage.camera].stop()
                        outage.down_at = time.time()
                    else:
                        by_name[outage.camera].start()
                        outage.up_at = time.time()
                assert monitor.process.poll() is None, f"the monitor exited ({monitor.process.returncode})"
                time.sleep(0.2)
            # every camera back: sample until all stream (the last sample is then a steady one)
            deadline = time.monotonic() + RECOVER_S
            while True:
                sample()
                if samples[-1]["all_streaming"] or time.monotonic() > deadline:
                    break
                time.sleep(SAMPLE_S)
            watch.stop_event.set()
            monitor.process.send_signal(signal.SIGTERM)
            exit_code = monitor.process.wait(90)
            strays = wait_no_strays(monitor.marker, 10)
    finally:
        watch.stop_event.set()
        if monitor is not None:
            monitor.stop()
        for camera in cameras:
            camera.stop()
        hook.stop()

    # the raw record first, whatever the verdict's arithmetic does with it
    (OUT / "raw.json").write_text(json.dumps({"samples": samples, "outages": [asdict(o) for o in plan],
                                              "changes": watch.changes,
                                              "alerts": [{k: v for k, v in b.items() if k != "evidence"}
                                                         for b in hook.bodies()]}, default=str))

    # -- outages seen --------------------------------------------------------------------
    bodies = hook.bodies()
    for outage in plan:
        outage.left_streaming = any(h != "streaming" for h in watch.states_during(outage.camera, outage.down_at,
                                                                                 outage.up_at + 5))
        back = watch.streaming_since(outage.camera, outage.up_at)
        outage.streaming_again_s = None if back is None else round(back - outage.up_at, 1)
        if outage.length_s >= OFFLINE_AFTER_S + 5:
            mine = [b for b in bodies if b["camera"] == outage.camera]
            outage.offline_alert = any(b["kind"] == "offline" and outage.down_at <= _alert_time(b) <= outage.up_at + 5
                                       for b in mine)
            outage.online_alert = any(b["kind"] == "online" and outage.up_at <= _alert_time(b) <= outage.up_at + 60
                                      for b in mine)

    # -- the verdict -----------------------------------------------------------------------
    base_from, base_to = 0.1 * seconds, 0.2 * seconds
    end_from = samples[-1]["t_s"] - 0.1 * seconds
    base, end = _window(samples, base_from, base_to), _window(samples, end_from, samples[-1]["t_s"])
    base_streaming = _window(samples, base_from, base_to, True)
    end_streaming = _window(samples, end_from, samples[-1]["t_s"], True)
    # a short run's windows may hold no moment with every camera up (outages and clip ends are
    # dense): then the first and the last such moments after the warm-up stand in for them
    later = [s for s in samples if s["t_s"] >= base_from and s["all_streaming"]]
    if not base_streaming:
        base_streaming = later[:3]
    if not end_streaming:
        end_streaming = later[-3:]
    rss_base = statistics.median(s["rss_kb"] for s in base)
    rss_end = statistics.median(s["rss_kb"] for s in end)
    by_name = {name: {"baseline_median": statistics.median(s["rss_kb_by_name"].get(name, 0) for s in base),
                      "end_median": statistics.median(s["rss_kb_by_name"].get(name, 0) for s in end)}
               for name in sorted({n for s in samples for n in s["rss_kb_by_name"]})}
    growth = rss_end / rss_base - 1
    # None: no sample after the warm-up had every camera streaming; the check fails
    fds_base_max = max((s["fds"] for s in base_streaming), default=None)
    fds_end_min = min((s["fds"] for s in end_streaming), default=None)
    procs_base = statistics.median(s["processes"] for s in base_streaming) if base_streaming else None
    last = samples[-1]
    web_failures = [s["t_s"] for s in samples if not (s["metrics_ok"] and s["healthz_ok"])]
    unseen = [o for o in plan if not o.left_streaming or o.streaming_again_s is None
              or o.offline_alert is False or o.online_alert is False]
    kinds = {}
    for body in bodies:
        kinds[body["kind"]] = kinds.get(body["kind"], 0) + 1
    checks = {
        f"RSS growth {growth:+.1%} < {RSS_GROWTH_LIMIT:.0%}": growth < RSS_GROWTH_LIMIT,
        f"fds: end-window min {fds_end_min} <= baseline max {fds_base_max}":
            None not in (fds_end_min, fds_base_max) and fds_end_min <= fds_base_max,
        f"processes: end {last['processes']} == baseline {procs_base}": last["processes"] == procs_base,
        f"outages seen: {len(plan) - len(unseen)}/{len(plan)}": not unseen,
        f"every camera streaming at the end: {last['health']}": last["all_streaming"],
        f"/metrics and /healthz failed at {web_failures}": not web_failures,
        f"SIGTERM: exit {exit_code}, strays {strays}": exit_code == 0 and not strays,
    }
    report = {
        "minutes": MINUTES, "seed": SEED, "cameras": names, "clip_seconds": CLIP_SECONDS, "size": SIZE, "fps": FPS,
        "sample_s": SAMPLE_S, "started_utc": started_utc,
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "windows_s": {"baseline": [base_from, base_to], "end": [end_from, last["t_s"]]},
        "rss_kb": {"baseline_median": rss_base, "end_median": rss_end, "growth": growth,
                   "first": samples[0]["rss_kb"], "last": last["rss_kb"]},
        "rss_kb_by_name": by_name,
        "pss_kb": {"baseline_median": statistics.median(s["pss_kb"] for s in base),
                   "end_median": statistics.median(s["pss_kb"] for s in end)},
        "fds": {"baseline_max_streaming": fds_base_max, "end_min_streaming": fds_end_min, "last": last["fds"],
                "range": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)]},
        "processes": {"baseline_median_streaming": procs_base, "last": last["processes"],
                      "range": [min(s["processes"] for s in samples), max(s["processes"] for s in samples)]},
        "load1": {"min": min(s["load1"] for s in samples), "median": statistics.median(s["load1"] for s in samples),
                  "max": max(s["load1"] for s in samples)},
        "alerts": kinds, "outages": [asdict(o) for o in plan], "web_failures": web_failures,
        "checks": checks, "passed": all(checks.values()), "samples": samples,
    }
    (OUT / "samples.json").write_text(json.dumps(report, indent=1))
    with open(OUT / "samples.csv", "w", newline="") as handle:
        columns = ["t_s", "processes", "rss_kb", "pss_kb", "fds", "monitor_rss_kb", "monitor_fds", "all_streaming",
                   "metrics_ok", "healthz_ok", "load1"]
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(samples)
    again = [o.streaming_again_s for o in plan if o.streaming_again_s is not None]
    summary = (
        f"Soak {MINUTES:g} min ({'PASS' if report['passed'] else 'FAIL'}), {len(names)} RTSP cameras "
        f"({SIZE}x{SIZE} {FPS} fps, {CLIP_SECONDS} s clips ending and reconnecting), seed {SEED}, "
        f"{len(samples)} samples every {SAMPLE_S:g} s, load average {report['load1']['median']:.1f} "
        f"(median of 1-min) on {os.cpu_count()} cores. {len(plan)} outages of "
        f"{min(o.length_s for o in plan):.0f}-{max(o.length_s for o in plan):.0f} s: "
        f"{len(plan) - len(unseen)} seen leaving streaming and streaming again "
        f"(median {statistics.median(again) if again else float('nan'):.1f} s, "
        f"max {max(again) if again else float('nan'):.1f} s after the server's return); webhook alerts {kinds}. "
        f"RSS of the monitor and its {last['processes']} processes: {samples[0]['rss_kb'] / 1024:.0f} MiB at the first "
        f"sample, median {rss_base / 1024:.1f} MiB over {base_from / 60:g}-{base_to / 60:g} min, "
        f"{rss_end / 1024:.1f} MiB over the last {0.1 * seconds / 60:g} min ({growth:+.2%}); "
        f"fds {report['fds']['range'][0]}-{report['fds']['range'][1]} (baseline max {fds_base_max}, end min "
        f"{fds_end_min}); processes {report['processes']['range']} (end {last['processes']}); "
        f"/metrics and /healthz {'answered every sample' if not web_failures else f'failed at {web_failures}'}; "
        f"SIGTERM exit {exit_code}.\n"
        + "".join(f"  [{'ok' if ok else 'FAIL'}] {name}\n" for name, ok in checks.items())
    )
    (OUT / "summary.txt").write_text(summary)
    print("\n" + summary)
    assert all(checks.values()), summary + "\n" + "\n".join(map(str, unseen))
