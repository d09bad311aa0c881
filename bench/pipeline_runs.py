"""dfstream itself, run the way ``dfstream run`` runs it, with the clock started at the first frame.

The configuration is built by the function that builds the ``run`` command's
(:func:`runtime.run_config.build_run_config`: probed sources, the stage configs'
defaults, the model's crop size and margin from its metadata, the batch timeout
from the fastest live source) with only the swept knobs changed.  The supervisor is the pipeline's own, with two clocks added: the
moment every stage has reported ready (sources start reading then) and the
moment the sink has exited (last frame encoded, file closed).  Throughput is
frames written over that span, so model loading and process start-up are not
counted -- as they are not counted for the limit and the baseline either, whose
clocks start at their first decoded frame.  Start-up is reported separately.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

from bench.measure import cpu_s_of
from pipeline.config import DetectConfig, RunConfig
from runtime.graph import infer_threads
from runtime.supervisor import Supervisor, SupervisorObserver


class RunClock(SupervisorObserver):
    """Notes, from inside the pipeline's own supervisor, when frames start to flow (every
    stage ready) and when the sink is done (last frame encoded, file closed)."""

    flow_started: float | None = None
    sink_done: float | None = None
    cpu_at_flow: float | None = None

    def reports_received(self, supervisor) -> None:
        now = time.monotonic()
        if self.flow_started is None and supervisor.specs and len(supervisor.ready) == len(supervisor.specs):
            self.flow_started = now
            times = os.times()
            # children reaped earlier (runs before this one in the same process) are in
            # os.times() at the end too
            self.cpu_at_flow = times.user + times.system + times.children_user + times.children_system + sum(
                cpu_s_of(p.pid) for p in supervisor.processes.values() if p.pid
            )
        if self.sink_done is None and any("sink" in s.stages and s.label in supervisor.exited for s in supervisor.specs):
            self.sink_done = now


def build_config(clips: list[str], live: bool, model_path: str, engine: str, face_detector: str,
                 face_detector_path: str | None, out_dir: str, detect_every: int = RunConfig.detect_every,
                 classify_every: int | None = None, detect_size: int = DetectConfig.detect_max_side, replicas: int = 1,
                 detect_replicas: int | None = None, infer_replicas: int | None = None,
                 max_batch: int | None = None, transport: str = RunConfig.transport, queue_size: int | None = None,
                 draw: bool = True, video_output: bool = True, batch_timeout_ms: float | None = None,
                 preset: str | None = None, infer_threads: int | None = None,
                 detect_threads: int = DetectConfig.threads, upstream_niceness: int | None = None,
                 blinks: bool | None = None, annotate_in_sink: bool | None = None):
    """A RunConfig as ``dfstream run -s CLIP... -o OUT/{index}.mp4 [--live] ...`` makes it, by the same
    function (``video_output=False``: ``--events OUT/events.jsonl`` instead of ``-o``: no encoding)."""
    from engines.metadata import KIND_DETECTOR, read_metadata
    from runtime.run_config import build_run_config, probe_streams

    streams = probe_streams(clips, live)
    metadata = read_metadata(model_path).expect_kind(KIND_DETECTOR, model_path)
    unset_means_default = {"max_batch": max_batch, "queue_size": queue_size, "upstream_niceness": upstream_niceness,
                           "annotate_in_sink": annotate_in_sink}
    return build_run_config(
        streams, model_path, metadata, (face_detector, face_detector_path),
        engine=engine, infer_threads=infer_threads, detect_every=detect_every, classify_every=classify_every,
        detect_size=detect_size, detect_threads=detect_threads, blinks=blinks, replicas=replicas,
        detect_replicas=detect_replicas, infer_replicas=infer_replicas, batch_timeout_ms=batch_timeout_ms,
        draw=draw, preset=preset,
        output=str(Path(out_dir) / "dfstream-{index}.mp4") if video_output else None,
        events_path=None if video_output else str(Path(out_dir) / "events.jsonl"),
        progress=False, transport=transport,
        **{name: value for name, value in unset_means_default.items() if value is not None},
    )


def run_dfstream(clips: list[str], **options) -> dict:
    """Run the pipeline on ``clips`` (one stream each) and return its figures."""
    config = build_config(clips, **options)
    log = io.StringIO()
    clock = RunClock()
    supervisor = Supervisor(config, out=log, observer=clock)
    created = time.monotonic()
    result = supervisor.run()
    finished = time.monotonic()  # every stage process has exited
    metrics = result.metrics
    if result.error:
        said = " | ".join(line for line in log.getvalue().splitlines()[-8:] if line.strip())
        raise RuntimeError(f"dfstream run failed: {result.error}" + (f" (supervisor said: {said})" if said else ""))
    times = os.times()
    cpu_total = times.user + times.system + times.children_user + times.children_system
    start, end = clock.flow_started, clock.sink_done
    streams = metrics["streams"]
    written = sum(s["frames_written"] or 0 for s in streams)
    decoded = sum(s["frames_decoded"] or 0 for s in streams)
    dropped = sum(s["dropped"] or 0 for s in streams)
    to_detect = sum(s.get("frames_to_detect") or 0 for s in streams)
    span = (end - start) if start is not None and end is not None and end > start else metrics["wall_s"]
    # CPU from the first frame until every process exited, over that time: the stages' wind-down
    # after the sink is done is in the CPU figure, so it must be in the time too (on a clip of a
    # second it is a third of the run)
    cpu_window = cpu_total - clock.cpu_at_flow if clock.cpu_at_flow is not None else None
    cpu_span = finished - start if start is not None else None
    stages = [
        {k: row[k] for k in ("stage", "replica", "frames", "fps", "busy_pct", "cpu_s", "max_rss_mb")}
        | {"extra": row.get("extra", {})}
        for row in metrics["stages"]
    ]
    per_stream = []
    for s in streams:
        lat = s["latency_ms"] or {}
        per_stream.append({
            "name": s["name"], "live": s["live"], "frames_decoded": s["frames_decoded"],
            "frames_written": s["frames_written"], "dropped": s["dropped"] or 0,
            "dropped_pct": round(100.0 * (s["dropped"] or 0) / s["frames_decoded"], 2) if s["frames_decoded"] else None,
            "latency_ms": {k: lat.get(k) for k in ("p50_ms", "p95_ms", "p99_ms")},
        })
    worst = lambda key: max((p["latency_ms"][key] for p in per_stream if p["latency_ms"][key] is not None), default=None)
    return {
        "streams": len(streams),
        "live": config.live,
        "frames": written,
        "frames_decoded": decoded,
        "dropped": dropped,
        "dropped_pct": round(100.0 * dropped / decoded, 2) if decoded else None,
        # live: the face detector runs on every detect_every-th frame at most, less often when busy
        "frames_to_detect": to_detect,
        "frames_per_detection": round(written / to_detect, 2) if to_detect else None,
        "detections_postponed": sum(s.get("detections_postponed") or 0 for s in streams),
        "seconds": round(span, 3),
        "fps": round(written / span, 2) if span else None,
        "fps_per_stream": round(written / span / len(streams), 2) if span else None,
        "cpu_s": round(cpu_window, 2) if cpu_window is not None else None,
        "cpu_cores": round(cpu_window / cpu_span, 2) if cpu_window is not None and cpu_span else None,
        "cpu_span_s": round(cpu_span, 3) if cpu_span else None,
        "startup_s": round(start - created, 2) if start is not None else None,
        "run_wall_s": metrics["wall_s"],
        "latency_ms": {"p50_ms": worst("p50_ms"), "p95_ms": worst("p95_ms"), "p99_ms": worst("p99_ms")},
        "per_stream": per_stream,
        "stages": stages,
        "stage_ms": metrics.get("stage_ms", {}),
        "wait_ms": metrics.get("wait_ms", {}),
        "max_rss_mb_sum": metrics.get("max_rss_mb_sum"),
        "restarts": metrics.get("restarts", 0),
        "settings": {
            "detect_every": config.detect_every, "classify_every": config.classify_every,
            "detect_size": config.detect.detect_max_side, "detect_replicas": config.detect_replicas,
            "infer_replicas": config.infer_replicas, "max_batch": config.batch.max_batch,
            "batch_timeout_ms": round(config.batch.timeout_ms, 2), "transport": config.transport,
            "latency_budget_ms": config.live_latency_budget_ms if config.live else None,
            "upstream_niceness": config.upstream_niceness if config.sink.output_pattern else None,
            "queue_size": config.live_queue_size if config.live else config.queue_size,
            "engine": config.infer.engine, "infer_threads": infer_threads(config) or "usable cores",
            "face_detector": config.detect.face_detector,
            "output": "video" if config.sink.output_pattern else "events only (no encoding)",
            "preset": config.sink.live_preset if config.live else config.sink.preset, "crf": config.sink.crf,
        },
    }
