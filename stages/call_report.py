"""The call report (``dfstream run --report DIR``): per participant -- each face track of each
stream -- its verdict, mean P(fake) and its time course, the share of its frames that were
judged, and a snapshot.

Collected in the sink from the frames it writes (the same faces, scores and verdicts as
``--events``), written when the run stops and, with ``--report-every N``, every N seconds
while it runs.  ``DIR/report.json`` holds the figures, ``DIR/report.html`` shows them with
an inline SVG plot of P(fake) over time, ``DIR/<stream>-track<N>.jpg`` is each participant's
snapshot (the frame's largest view of that face).  Every file is written beside its final
name and renamed into place, so a reader never sees half a report.
"""
from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from engines.blinks import raise_score
from pipeline import pictures
from pipeline.config import SinkConfig, StreamInfo
from pipeline.health import utc_time
from pipeline.messages import FrameMessage
from stages.tracking import verdict_of

SNAPSHOT_GROWTH = 1.25  # a new snapshot only for a face this much larger (area) than the kept one
SNAPSHOT_MARGIN = 0.25  # of the box's size, added on each side
PLOT_POINTS = 600  # most points per participant in the plot (the JSON keeps them all)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Participant:
    stream_id: int
    track_id: int
    frames_seen: int = 0  # frames the face was on (tracked between detections too)
    frames_judged: int = 0  # frames it was given a P(fake)
    score_sum: float = 0.0
    unscorable: int = 0  # detections too small to judge
    first_s: float | None = None
    last_s: float | None = None
    series: list[tuple[float, float, float | None]] = field(default_factory=list)  # (time s, score, smoothed)
    last_verdict: str | None = None
    blinks_per_minute: float | None = None  # over its last minute, as last read (with eye landmarks on)
    blink_score: float | None = None  # those blinks as a P(fake), as last read (blinks part of the score)
    snapshot_area: float = 0.0
    snapshot: bytes | None = None  # JPEG
    snapshot_dirty: bool = False


class CallReport:
    def __init__(self, config: SinkConfig, streams: dict[int, StreamInfo]):
        self.folder = Path(config.report_path)
        self.every_s = config.report_every_s
        self.config = config
        self.streams = streams
        self.participants: dict[tuple[int, int], Participant] = {}
        self.frames: dict[int, int] = {sid: 0 for sid in streams}
        self.started = time.time()
        self.next_write = time.monotonic() + self.every_s if self.every_s else None
        self.writes = 0

    # -- collecting ----------------------------------------------------------------------
    def add(self, message: FrameMessage) -> None:
        self.frames[message.stream_id] = self.frames.get(message.stream_id, 0) + 1
        seconds = message.pts_seconds
        for face in message.faces:
            if face.track_id < 0:
                continue
            key = (message.stream_id, face.track_id)
            person = self.participants.get(key)
            if person is None:
                person = self.participants[key] = Participant(message.stream_id, face.track_id)
            person.frames_seen += 1
            person.first_s = seconds if person.first_s is None else person.first_s
            person.last_s = seconds if seconds is not None else person.last_s
            person.last_verdict = face.verdict
            if face.blinks_per_minute is not None:
                person.blinks_per_minute = face.blinks_per_minute
            if face.blink_score is not None:
                person.blink_score = face.blink_score
            if face.unscorable:
                person.unscorable += 1
            if face.fake_score is None:
                continue
            person.frames_judged += 1
            person.score_sum += face.fake_score
            person.series.append((round(seconds or 0.0, 3), round(face.fake_score, 4),
                                  None if face.smoothed_score is None else round(face.smoothed_score, 4)))
            if message.image is not None:
                self._snapshot(person, message, face.box)

    def _snapshot(self, person: Participant, message: FrameMessage, box) -> None:
        x1, y1, x2, y2 = box
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        if area < person.snapshot_area * SNAPSHOT_GROWTH:
            return
        image = pictures.to_bgr(message.image, message.pixel_format)
        height, width = image.shape[:2]
        mx, my = (x2 - x1) * SNAPSHOT_MARGIN, (y2 - y1) * SNAPSHOT_MARGIN
        left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
        right, bottom = min(width, int(x2 + mx)), min(height, int(y2 + my))
        if right - left < 8 or bottom - top < 8:
            return
        ok, jpeg = cv2.imencode(".jpg", image[top:bottom, left:right], [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            person.snapshot, person.snapshot_area, person.snapshot_dirty = jpeg.tobytes(), area, True

    # -- writing -------------------------------------------------------------------------
    def due(self) -> bool:
        return self.next_write is not None and time.monotonic() >= self.next_write

    def _snapshot_name(self, person: Participant) -> str:
        return f"{self.streams[person.stream_id].name}-track{person.track_id}.jpg"

    def document(self, final: bool) -> dict:
        cfg = self.config
        participants = []
        for (stream_id, track_id), person in sorted(self.participants.items()):
            mean = person.score_sum / person.frames_judged if person.frames_judged else None
            score = raise_score(mean, person.blink_score)  # as the run's summary judges a track
            if person.unscorable and not person.frames_judged:
                verdict = "unscorable"
            else:
                verdict = verdict_of(score, person.frames_judged, cfg.verdict.for_means())
            participants.append({
                "stream": self.streams[stream_id].name,
                "stream_id": stream_id,
                "track_id": track_id,
                "verdict": verdict,  # from score, as the run's summary judges a track
                "last_verdict": person.last_verdict,  # as last drawn (from the moving average)
                "mean_score": None if mean is None else round(mean, 4),  # of its frames
                "score": None if score is None else round(score, 4),  # mean_score, raised to its blinks'
                "blink_score": None if person.blink_score is None else round(person.blink_score, 4),
                "frames_seen": person.frames_seen,
                "frames_judged": person.frames_judged,
                "judged_share": round(person.frames_judged / person.frames_seen, 4) if person.frames_seen else 0.0,
                "blinks_per_minute": None if person.blinks_per_minute is None else round(person.blinks_per_minute, 1),
                "first_s": person.first_s,
                "last_s": person.last_s,
                "snapshot": self._snapshot_name(person) if person.snapshot else None,
                "series": [{"time_s": t, "score": s, "smoothed_score": m} for t, s, m in person.series],
            })
        return {
            "final": final,
            "started": utc_time(self.started),
            "written": utc_time(time.time()),
            "threshold": cfg.verdict.threshold,
            "fake_from": cfg.verdict.fake_from,  # the lines the verdicts are drawn by
            "real_up_to": cfg.verdict.real_up_to,
            "streams": [{"stream_id": s.stream_id, "name": s.name, "url": s.url, "kind": s.kind,
                         "frames": self.frames.get(s.stream_id, 0)} for s in self.streams.values()],
            "participants": participants,
        }

    def write(self, final: bool = False) -> Path:
        """Write (or rewrite) the report now; returns the JSON's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for person in self.participants.values():
            if person.snapshot_dirty:
                _atomic_write(self.folder / self._snapshot_name(person), person.snapshot)
                person.snapshot_dirty = False
        doc = self.document(final)
        _atomic_write(self.folder / "report.json", json.dumps(doc, indent=1).encode())
        _atomic_write(self.folder / "report.html", render_html(doc).encode())
        self.writes += 1
        if self.every_s:
            self.next_write = time.monotonic() + self.every_s
        return self.folder / "report.json"


def _atomic_write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _svg_plot(doc: dict, width: int = 720, height: int = 240) -> str:
    """P(fake) over time, one line per participant, the threshold dashed."""
    pad_l, pad_r, pad_t, pad_b = 40, 10, 10, 28
    people = [p for p in doc["participants"] if p["series"]]
    times = [s["time_s"] for p in people for s in p["series"]]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    if t1 - t0 < 1e-6:
        t1 = t0 + 1.0
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(t):
        return pad_l + (t - t0) / (t1 - t0) * plot_w

    def y(score):
        return pad_t + (1.0 - score) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="P(fake) over time">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for level in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{pad_l - 6}" y="{y(level) + 4:.1f}" font-size="11" text-anchor="end">{level:g}</text>')
    parts.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{y(doc["threshold"]):.1f}" y2="{y(doc["threshold"]):.1f}" '
                 f'stroke="#555" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{pad_l}" y="{height - 8}" font-size="11">{t0:.1f} s</text>')
    parts.append(f'<text x="{pad_l + plot_w}" y="{height - 8}" font-size="11" text-anchor="end">{t1:.1f} s</text>')
    for index, person in enumerate(people):
        series = person["series"]
        step = max(1, len(series) // PLOT_POINTS)
        points = " ".join(f"{x(s['time_s']):.1f},{y(s['score']):.1f}" for s in series[::step])
        colour = COLOURS[index % len(COLOURS)]
        parts.append(f'<polyline class="participant" data-track="{person["track_id"]}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.5" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(doc: dict) -> str:
    rows = []
    people = [p for p in doc["participants"] if p["series"]]
    for person in doc["participants"]:
        colour = COLOURS[people.index(person) % len(COLOURS)] if person in people else "#999"
        snapshot = (f'<img src="{html.escape(person["snapshot"])}" height="96" alt="track {person["track_id"]}">'
                    if person["snapshot"] else "")
        score = "-" if person["score"] is None else f'{person["score"]:.2f}'
        blinks = "-" if person.get("blinks_per_minute") is None else f'{person["blinks_per_minute"]:.0f}'
        rows.append(
            f'<tr><td><span style="color:{colour}">&#9632;</span> {html.escape(person["stream"])} '
            f'#{person["track_id"]}</td><td>{snapshot}</td><td class="verdict {person["verdict"]}">'
            f'{person["verdict"]}</td><td>{score}</td><td>{100 * person["judged_share"]:.0f}% '
            f'({person["frames_judged"]} of {person["frames_seen"]})</td><td class="blinks">{blinks}</td></tr>')
    status = "final" if doc["final"] else "in progress"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dfstream call report</title>
<style>body{{font-family:sans-serif;margin:1.5em}} td,th{{padding:4px 10px;text-align:left}}
.fake{{color:#c00;font-weight:bold}} .real{{color:#080}} .uncertain{{color:#b70}}</style></head>
<body><h1>Call report</h1>
<p>{html.escape(", ".join(s["name"] for s in doc["streams"]))} &middot; started {doc["started"]} &middot;
written {doc["written"]} ({status}) &middot; threshold {doc["threshold"]:.2f}</p>
<table><tr><th>participant</th><th>snapshot</th><th>verdict</th><th title="the mean of its frames' scores, raised to its blinks' where those are more suspect">P(fake)</th><th>frames judged</th>
<th title="over the last minute; a real person blinks about 10-25 times a minute, a head animated from one photo
often never (eyes read by default with the default detector)">blinks / min</th></tr>
{"".join(rows) or '<tr><td colspan="6">no faces seen</td></tr>'}</table>
<h2>P(fake) over time</h2>
{_svg_plot(doc)}
</body></html>
"""
