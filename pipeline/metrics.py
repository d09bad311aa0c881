"""Run metrics: per-stage fps, queue depth, CPU and memory; per-stream latency.

Stage processes report their counters to the supervisor about once a second;
this module turns the latest reports into the figures the user sees (a table
on stderr) and the ``--metrics-json`` document.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from pipeline.config import STAGE_NAMES, RunConfig
from pipeline.health import HealthChange
from pipeline.urls import redact


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """Resident memory of one process from /proc (``VmHWM``: its peak since it started or
    exec'd -- unlike ``ru_maxrss``, which Linux carries over exec from the spawning parent).
    0.0 where /proc has no such process or field."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class RunMetrics:
    def __init__(self, config: RunConfig):
        self.config = config
        self.latest: dict[tuple[str, int], dict] = {}  # (stage, replica) -> last stats report
        self.cpu_carried: dict[tuple[str, int], float] = {}  # CPU of replaced (restarted) processes
        self.restarts = 0
        self.health: dict[int, HealthChange] = {}  # live stream id -> its latest health change

    def health_changed(self, change: HealthChange) -> None:
        self.health[change.stream_id] = change

    def update(self, report: dict) -> None:
        self.latest[(report["stage"], report["replica"])] = report

    def replaced(self, stage: str, replica: int) -> None:
        """A replica was restarted: keep the CPU its old process used."""
        old = self.latest.pop((stage, replica), None)
        if old:
            self.cpu_carried[(stage, replica)] = self.cpu_carried.get((stage, replica), 0.0) + old.get("cpu_s", 0.0)
        self.restarts += 1

    def sink(self) -> dict:
        return self.latest.get(("sink", 0), {}).get("extra", {})

    def frames_written(self) -> int:
        return sum(self.sink().get("frames", {}).values())

    def queue_depths(self) -> dict[tuple[str, int], int]:
        """Messages sent to each replica's inbox but not yet taken by it."""
        sent_to: dict[str, int] = {}
        for report in self.latest.values():
            for url, count in report.get("sent", {}).items():
                sent_to[url] = sent_to.get(url, 0) + count
        return {
            key: max(0, sent_to.get(r.get("inbox"), 0) - r.get("received", 0))
            for key, r in self.latest.items()
            if r.get("inbox")
        }

    def stage_rows(self) -> list[dict]:
        depths = self.queue_depths()
        rows = []
        for (stage, replica), r in sorted(self.latest.items(), key=lambda kv: (STAGE_NAMES.index(kv[0][0]), kv[0][1])):
            active = r.get("active_s") or 0.0
            rows.append(
                {
                    "stage": stage,
                    "replica": replica,
                    "frames": r.get("processed", 0),
                    "fps": round(r.get("processed", 0) / active, 1) if active > 0 else None,
                    "busy_pct": round(100.0 * r.get("busy_s", 0.0) / active, 1) if active > 0 else None,
                    "queue": depths.get((stage, replica)),
                    "cpu_s": round(r.get("cpu_s", 0.0) + self.cpu_carried.get((stage, replica), 0.0), 2),
                    "max_rss_mb": round(r.get("max_rss_mb", 0.0), 1),
                    "niceness": r.get("niceness"),
                    "extra": {k: v for k, v in r.get("extra", {}).items() if k not in ("tracks",) and stage != "sink"},
                }
            )
        return rows

    def streams(self) -> list[dict]:
        sink = self.sink()
        tracks = self.latest.get(("annotate", 0), {}).get("extra", {}).get("tracks", {})
        sources = {r["replica"]: r.get("extra", {}) for (stage, _), r in self.latest.items() if stage == "source"}
        out = []
        for stream in self.config.streams:
            sid = str(stream.stream_id)
            totals = sink.get("source_totals", {}).get(sid, {})
            health = self.health.get(stream.stream_id)
            out.append(
                {
                    "stream_id": stream.stream_id,
                    "name": stream.name,
                    "url": redact(stream.url),
                    "live": stream.live,
                    "frames_decoded": sources.get(stream.stream_id, {}).get("decoded"),
                    "frames_sent": totals.get("frames"),
                    "frames_written": sink.get("frames", {}).get(sid, 0),
                    "dropped": sources.get(stream.stream_id, {}).get("dropped", totals.get("dropped", 0)),
                    # of those, dropped while the pipeline was behind its latency budget (live)
                    "dropped_over_latency_budget": sources.get(stream.stream_id, {}).get("dropped_over_budget"),
                    # frames sent to the face detector, and due ones sent round it while it was busy
                    "frames_to_detect": sources.get(stream.stream_id, {}).get("to_detect"),
                    "detections_postponed": sources.get(stream.stream_id, {}).get("detections_postponed", 0),
                    "latency_ms": sink.get("latency", {}).get(sid, {}),
                    "output": sink.get("outputs", {}).get(sid),
                    "tracks": tracks.get(sid, []),
                    # live streams: the latest health change ({"type": "health", ...}, as in the
                    # events file) and the reconnect tries so far; None and 0 for files
                    "health": None if health is None else health.record(),
                    "reconnects": 0 if health is None else health.reconnects,
                }
            )
        return out

    def document(self, wall_s: float, error: str | None, stopped: bool) -> dict:
        rows = self.stage_rows()
        sink = self.sink()
        return {
            "wall_s": round(wall_s, 3),
            "error": error,
            "stopped_by_user": stopped,
            "restarts": self.restarts,
            "streams": self.streams(),
            "stages": rows,
            "stage_ms": sink.get("stage_ms", {}),
            "wait_ms": sink.get("wait_ms", {}),
            "cpu_s": round(sum(r["cpu_s"] for r in rows), 2),
            "max_rss_mb_sum": round(sum(r["max_rss_mb"] for r in rows), 1),
            "config": _redacted(asdict(self.config)),  # the sources' URLs without their credentials
        }

    def table(self) -> str:
        lines = [f"{'stage':<12}{'frames':>8}{'fps':>9}{'busy%':>7}{'queue':>7}{'cpu s':>8}{'rss MB':>8}"]
        for r in self.stage_rows():
            label = f"{r['stage']}[{r['replica']}]"
            fps = "-" if r["fps"] is None else f"{r['fps']:.1f}"
            busy = "-" if r["busy_pct"] is None else f"{r['busy_pct']:.0f}"
            queue = "-" if r["queue"] is None else str(r["queue"])
            lines.append(f"{label:<12}{r['frames']:>8}{fps:>9}{busy:>7}{queue:>7}{r['cpu_s']:>8.1f}{r['max_rss_mb']:>8.0f}")
        for s in self.streams():
            lat = s["latency_ms"] or {}
            health = f", {s['health']['state']}" if s["health"] else ""
            lines.append(
                f"stream {s['name']}: {s['frames_written']} frames written, {s['dropped'] or 0} dropped{busy_detector_note(s)}, "
                f"latency p50 {lat.get('p50_ms')} ms p99 {lat.get('p99_ms')} ms{health}"
            )
        return "\n".join(lines)


def _redacted(value):
    """``value`` (a JSON-like document) with every string passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(item) for item in value]
    return value


def latency_budget_note(stream: dict) -> str:
    """" (N while the pipeline was behind its latency budget)" for a live stream that had such drops."""
    held = stream.get("dropped_over_latency_budget")
    return f" ({held} while the pipeline was behind its latency budget)" if held else ""


def busy_detector_note(stream: dict) -> str:
    """", faces looked for on N frames (M due ...)" for a live stream whose face detector did not
    keep up with --detect-every (see SourceConfig.detect_when_free); "" otherwise."""
    if not stream.get("detections_postponed"):
        return ""
    return (f", faces looked for on {stream['frames_to_detect']} frames "
            f"({stream['detections_postponed']} due while the face detector was busy)")


def write_json(path: str | Path, document: dict) -> Path:
    """Write ``document`` as JSON through a hidden partial file: a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(document, indent=2, default=str))
    tmp.replace(path)
    return path
