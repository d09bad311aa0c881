"""The ``dfstream`` command line.

Every command turns bad input into one line on stderr and a non-zero exit
status; tracebacks are for bugs only (``--debug`` shows them).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from dfstream.cli.bench import bench_command
from dfstream.cli.detector import (calibrate_command, eval_command, lofo_group, predict_command, train_detector_command,
                                   train_ensemble_command, train_fusion_command, train_pack_command, train_recon_command,
                                   train_sharpness_command, train_temporal_command)
from dfstream.cli.generate import swapper_eval_command, train_gan_command, train_swapper_command
from dfstream.cli.models import build_engine_command, export_command, models_group
from dfstream.cli.web import keys_command, monitor_token_command
from dfstream.cli.monitor import monitor_command
from engines.loader import ENGINE_CHOICES
from pipeline.config import (SCREEN_FPS, SCREEN_KINDS, AnnotateConfig, BatchConfig, DetectConfig, InferConfig,
                             ReconnectConfig, RunConfig, SinkConfig, StreamInfo)

DEFAULT_DETECTOR = "detector"  # registry name of the detector model that ships with dfstream


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _probe_sources(sources: tuple[str, ...], live: bool, open_timeout: float,
                   capture_fps: float | None = None) -> list[StreamInfo]:
    from pipeline.stage import StageError
    from pipeline.urls import redact
    from runtime.run_config import probe_streams

    try:
        return probe_streams(sources, live, open_timeout, capture_fps)
    except StageError as exc:
        _fail(redact(str(exc)))


def _check_overlay_places(streams: list[StreamInfo]) -> None:
    """--display with a screen or window source: the overlay window must fit beside what is grabbed."""
    from pipeline.config import SCREEN_KINDS
    from pipeline.stage import StageError
    from stages.screen import overlay_place_for

    for stream in streams:
        if stream.kind in SCREEN_KINDS:
            try:
                overlay_place_for(stream)
            except StageError as exc:
                _fail(str(exc))


def _check_x_display(name: str, timeout: float = 3.0) -> None:
    """Fail in one line when the X server in DISPLAY does not take connections (OpenCV's Qt
    would otherwise abort the sink process with a page of Qt messages)."""
    import re
    import socket

    match = re.fullmatch(r"(?:(unix|[^:/]*)/?)?:(\d+)(?:\.\d+)?", name)
    if match is None:
        return  # a form we do not parse: let the window library judge
    host, number = match.group(1) or "", int(match.group(2))
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                try:  # Linux X servers listen on an abstract socket and on the path
                    sock.connect(f"\0/tmp/.X11-unix/X{number}")
                except OSError:
                    sock.connect(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + number), timeout=timeout).close()
    except OSError as exc:
        _fail(f"--display: cannot connect to the X display {name} ({exc.strerror or exc})")


def _resolve_face_detector(choice: str) -> tuple[str, str | None]:
    """(detector kind, model path) for --face-detector."""
    from runtime.run_config import RunOptionError, resolve_face_detector

    try:
        return resolve_face_detector(choice)
    except RunOptionError as exc:
        _fail(str(exc))


def _model_metadata(name_or_path: str, kind: str):
    from runtime.run_config import RunOptionError, resolve_model

    try:
        return resolve_model(name_or_path, kind)
    except RunOptionError as exc:
        _fail(str(exc))


def _one_shot_swapper(model: str, sources: tuple[str, ...], embedder: str | None):
    """An insightface inswapper-style model: it is given the new face as photos, not trained on it."""
    from engines.inswapper import is_inswapper_onnx
    from engines.metadata import MetadataError
    from stages.faces import load_inswapper

    if not sources or not embedder:
        _fail("a one-shot swapper needs both --swap-source IMAGE and --embedder MODEL")
    for path in (model, embedder, *sources):
        if not Path(path).is_file():
            _fail(f"file not found: {path}")
    if not is_inswapper_onnx(model):
        _fail(f"{model} is not an inswapper-style model (inputs: a face crop and an identity vector)")
    try:
        engine = load_inswapper(model, embedder, list(sources))  # fails early and clearly on a bad photo
    except MetadataError as exc:
        _fail(str(exc))
    metadata = engine.metadata
    engine.close()
    return str(model), metadata


def _check_output_pattern(pattern: str | None, streams: list[StreamInfo]) -> None:
    if pattern is None:
        return
    from stages.sink import CONTAINER_FORMATS

    if len(streams) > 1 and "{stream}" not in pattern and "{index}" not in pattern:
        _fail("with several --source options, --output must be a pattern with {stream} or {index}, e.g. out/{stream}.mp4")
    try:
        paths = [Path(pattern.format(stream=s.name, index=s.stream_id)) for s in streams]
    except (KeyError, IndexError, ValueError) as exc:
        _fail(f"bad --output pattern {pattern!r}: {exc}")
    for path in paths:
        if path.suffix.lower() not in CONTAINER_FORMATS:
            _fail(f"cannot write {path}: unknown container {path.suffix!r} (use {', '.join(CONTAINER_FORMATS)})")
        if any(Path(s.url).resolve() == path.resolve() for s in streams if s.kind == "file"):
            _fail(f"refusing to overwrite the input {path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="How much to log on stderr.")
@click.version_option(package_name="dfstream")
def cli(log_level: str) -> None:
    """dfstream: real-time deepfake detection and face swap for video streams.

    Decode -> face detect -> batch -> detector/swapper engine -> annotate/encode,
    each stage its own process, joined by ZeroMQ.
    """
    logging.basicConfig(level=getattr(logging, log_level.upper()), format="%(levelname)s %(name)s: %(message)s")


@cli.command("run")
@click.option("-s", "--source", "sources", multiple=True, metavar="SOURCE",
              help="A video file, rtsp://..., http(s)://..., a webcam (a device path such as /dev/video0, or an "
                   "index such as 0), the X screen ('screen', or a region 'screen:WxH+X+Y') or a window by its "
                   "title ('window:TITLE', e.g. a video call). Repeat for several streams in one run.")
@click.option("--fps", "capture_fps", type=click.FloatRange(1, 60), default=None,
              help=f"Screen and window sources: grab at most this many frames a second "
                   f"[default: {SCREEN_FPS:g}: a call's video rarely runs faster, and the call needs the CPU].")
@click.option("--live", is_flag=True,
              help="Read file sources at their own frame rate, as a camera delivers frames, and drop the oldest "
                   "frame when the pipeline falls behind (webcam and RTSP sources are always live).")
@click.option("-o", "--output", metavar="PATH", help="Write the annotated video here (.mp4, .mkv, .mov, .avi). With "
              "several sources use a pattern: out/{stream}.mp4 ({stream} = source name, {index} = its position).")
@click.option("--display", is_flag=True, help="Show the annotated stream in a window (the live webcam overlay); "
              "press q or Esc in it to stop.")
@click.option("--events", "events_path", metavar="PATH", help="Write one JSON object per face per analysed frame "
              "(type face: stream, UTC time, frame index, pts, box, track id, score, verdict) and per health change "
              "of a camera (type health) to this JSON-lines file, each line as it happens.")
@click.option("--report", "report_path", metavar="DIR", help="Write a call report here: per participant (face "
              "track) its verdict, mean and time course of P(fake), share of frames judged and a snapshot "
              "(report.json, report.html with the plot, one JPEG each), when the run stops.")
@click.option("--report-every", "report_every", type=click.FloatRange(0.5), default=None, metavar="SECONDS",
              help="With --report: also rewrite the report this often while the run goes on.")
@click.option("--blinks/--no-blinks", default=None, help="Read each face's eyes (68 landmarks on its crop, pfld68) "
              "and count its blinks over the last minute: shown beside the score in the overlay, the events "
              "(blinks_per_minute, blink_score) and the report. A real person blinks about 10-25 times a minute; a "
              "head animated from one photo often never. Default: on when blinks are part of the model's score (the "
              "default detector's are: a face's score is raised to its blinks' where those are more suspect), the "
              "landmark model is installed and at most one source is live (~4 ms of CPU a face).")
@click.option("--metrics-json", metavar="PATH", help="Write per-stage fps, queue depth, CPU, memory and latency "
              "percentiles to this JSON file at the end.")
@click.option("-m", "--model", default=DEFAULT_DETECTOR, show_default=True,
              help="Deepfake detector model: a file (.onnx, checkpoint, engine) or a registry name.")
@click.option("--swap", "swap_model", metavar="MODEL",
              help="Run a face swapper instead of the detector and paste the swapped faces back into the video.")
@click.option("--detector", "swap_detector", metavar="MODEL",
              help="With --swap: also score each swapped face with this detector (a live self-check).")
@click.option("--swap-source", "swap_sources", multiple=True, metavar="IMAGE",
              help="With an insightface inswapper-style --swap model: photo(s) of the face to put in (repeatable).")
@click.option("--embedder", "embedder", metavar="MODEL",
              help="With --swap-source: the ArcFace-style ONNX model that turns those photos into an identity.")
@click.option("--swap-faces", default=AnnotateConfig.swap_faces, show_default=True, metavar="all|largest|TRACK",
              help="With --swap: swap every face, only the largest, or only the face with this track id.")
@click.option("--engine", default=InferConfig.engine, show_default=True, type=click.Choice(ENGINE_CHOICES),
              help="Model runtime; auto picks TensorRT when CUDA and torch-tensorrt are present, else ONNX Runtime.")
@click.option("--face-detector", default="auto", show_default=True, metavar="auto|yunet|yunet-opencv|scrfd|haar|PATH",
              help="Face detector: YuNet (default when installed), SCRFD/RetinaFace ONNX via insightface, or the "
                   "Haar cascade that needs no model file.")
@click.option("--detect-every", default=RunConfig.detect_every, show_default=True, type=click.IntRange(1),
              help="Run face detection on every k-th frame; faces are tracked in between. Live streams: "
                   "at most every k-th, less often while every detect replica is busy (no frame is dropped for it).")
@click.option("--classify-every", "classify_every", default=None, type=click.IntRange(1),
              help="Score each tracked face every m-th frame (a multiple of k; default: k).")
@click.option("--detect-size", default=DetectConfig.detect_max_side, show_default=True, type=click.IntRange(64),
              help="Frames are downscaled so their longer side is at most this before face detection.")
@click.option("--min-face-score", default=DetectConfig.min_face_score, show_default=True, type=click.FloatRange(0, 1),
              help="Face detector confidence below which a detection is ignored.")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Processes for the face detect stage and for the infer stage.")
@click.option("--detect-replicas", type=click.IntRange(1, 16), help="Face detect processes (overrides --replicas).")
@click.option("--infer-replicas", type=click.IntRange(1, 16), help="Infer processes (overrides --replicas).")
@click.option("--max-batch", default=BatchConfig.max_batch, show_default=True, type=click.IntRange(1), help="Faces per model batch.")
@click.option("--batch-timeout-ms", type=click.FloatRange(0), default=None,
              help="Send a partial batch this long after its first face (default: one frame interval of the "
                   "fastest live source, else 33 ms).")
@click.option("--threshold", type=click.FloatRange(0, 1), help="P(fake) at which a face is called fake "
              "(default: the model's own threshold).")
@click.option("--queue-size", default=RunConfig.queue_size, show_default=True, type=click.IntRange(1),
              help="Frames queued per hop between stages for file sources (live sources keep 1, and hand a "
                   "frame to face detection only when it is free).")
@click.option("--max-latency-ms", "max_latency_ms", default=RunConfig.live_latency_budget_ms, show_default=True,
              type=click.FloatRange(0), help="Live streams: a new frame enters the pipeline only while it can "
              "be written within this long of its capture, judged from the frames still in flight and the pace "
              "they are written at; otherwise it is dropped at the source instead of queueing behind a slower "
              "stage (0: no limit).")
@click.option("--upstream-niceness", default=RunConfig.upstream_niceness, show_default=True,
              type=click.IntRange(0, 19), help="With --output: the niceness of every stage but the encoding sink, "
              "which sets the pace; the others yield the CPU to it (0: all stages equal).")
@click.option("--transport", default=RunConfig.transport, show_default=True, type=click.Choice(["ipc", "tcp"]),
              help="Private ipc:// sockets (default) or tcp:// on 127.0.0.1.")
@click.option("--open-timeout", default=RunConfig.open_timeout_s, show_default=True, type=click.FloatRange(0.1),
              help="Seconds to wait for a network source or webcam to answer.")
@click.option("--stall-timeout", default=ReconnectConfig.stall_timeout_s, show_default=True,
              type=click.FloatRange(0.5), help="Cameras (RTSP, HTTP, webcam): a connection that brings no frame "
              "for this long is stalled, and is reconnected.")
@click.option("--reconnect-initial", default=ReconnectConfig.initial_s, show_default=True, type=click.FloatRange(0.01),
              help="Cameras: seconds to wait before the first reconnect try after an outage; the wait doubles "
                   "(with jitter) after every failed try.")
@click.option("--reconnect-max", default=ReconnectConfig.max_s, show_default=True, type=click.FloatRange(0.01),
              help="Cameras: the longest wait between reconnect tries (seconds).")
@click.option("--reconnect-attempts", default=ReconnectConfig.attempts, show_default=True, type=click.IntRange(0),
              help="Cameras: failed reconnect tries in a row before the stream is given up as offline (the run "
                   "goes on with the other streams; it fails when every stream is offline). 0: never give up.")
@click.option("--no-reconnect", is_flag=True, help="Cameras: do not reconnect; a stream ends when its camera stops "
              "sending.")
@click.option("--metrics-interval", default=RunConfig.metrics_interval_s, show_default=True, type=click.FloatRange(0.5),
              help="Live runs print per-stage metrics this often (seconds).")
@click.option("--preset", default=None,
              type=click.Choice(["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"]),
              help=f"x264 speed/size trade-off for --output; encoding is the most expensive stage on a CPU. "
                   f"[default: {SinkConfig.preset} for files, {SinkConfig.live_preset} for live streams]")
@click.option("--crf", default=SinkConfig.crf, show_default=True, type=click.IntRange(0, 51),
              help="x264 quality for --output (lower is better and bigger).")
@click.option("--plan-out", metavar="FILE", help="Do not run: write the stage graph (each replica's settings and "
              "tcp:// endpoints) to FILE, to place stages on several hosts.")
@click.option("--plan", "plan_file", metavar="FILE", help="Run the graph of a plan written by --plan-out (no -s needed).")
@click.option("--external", multiple=True, metavar="LABEL", help="With --plan: this stage (e.g. 'detect[1]') is started "
              "by hand, on its host, with `dfstream stage FILE LABEL`; the supervisor waits for it. Repeatable.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-draw", is_flag=True, help="Do not draw boxes and the HUD on the output video.")
def run_command(sources, capture_fps, live, output, display, events_path, report_path, report_every, blinks, metrics_json, model, swap_model, swap_detector,
                swap_sources, embedder, swap_faces, engine, face_detector, detect_every, classify_every, detect_size, min_face_score, replicas,
                detect_replicas, infer_replicas, max_batch, batch_timeout_ms, threshold, queue_size, max_latency_ms,
                upstream_niceness, transport, open_timeout, stall_timeout, reconnect_initial, reconnect_max,
                reconnect_attempts, no_reconnect, metrics_interval, preset, crf, plan_out, plan_file, external, no_progress,
                no_draw):
    """Run the pipeline on one or more sources.

    \b
    Examples:
      dfstream run -s clip.mp4 -o out/annotated.mp4 --events out/events.jsonl
      dfstream run -s rtsp://127.0.0.1:8554/cam -s rtsp://127.0.0.1:8554/door -o 'out/{stream}.mp4'
      dfstream run -s 0 --display                      # webcam overlay
      dfstream run -s 'window:Zoom Meeting' --display --report call/   # the people on a video call
      dfstream run -s rtsp://cam/1 --events ev.jsonl --reconnect-attempts 10   # give up after 10 failed tries
      dfstream run -s clip.mp4 --swap swapper.onnx -o swapped.mp4
    """
    from engines.metadata import KIND_DETECTOR, KIND_SWAPPER
    from runtime.run_config import RunOptionError, build_run_config
    from runtime.supervisor import run_pipeline

    if plan_file:
        _run_plan(plan_file, external)
    if external:
        _fail("--external is only used with --plan")
    if not sources:
        _fail("give at least one --source (or --plan FILE)")
    if not (output or display or events_path or report_path or metrics_json):
        _fail("nothing to write: give --output, --display, --events, --report or --metrics-json")
    if report_every is not None and not report_path:
        _fail("--report-every is only used with --report DIR")
    if report_path and Path(report_path).exists() and not Path(report_path).is_dir():
        _fail(f"--report {report_path}: exists and is not a folder")
    if swap_detector and not swap_model:
        _fail("--detector is only used with --swap (the detector is chosen with --model)")
    if swap_faces not in ("all", "largest") and not swap_faces.isdigit():
        _fail(f"--swap-faces must be all, largest or a track id, not {swap_faces!r}")
    if display and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        _fail("--display needs a screen (DISPLAY is not set)")
    if display and sys.platform.startswith("linux"):
        _check_x_display(os.environ["DISPLAY"])
    streams = _probe_sources(sources, live, open_timeout, capture_fps)
    if capture_fps is not None and not any(s.kind in SCREEN_KINDS for s in streams):
        _fail("--fps caps screen and window sources only (-s screen, screen:WxH+X+Y, window:TITLE)")
    _check_output_pattern(output, streams)
    if display:
        _check_overlay_places(streams)

    swapping = swap_model is not None
    if swapping and (swap_sources or embedder):
        model_path, metadata = _one_shot_swapper(swap_model, swap_sources, embedder)
    else:
        model_path, metadata = _model_metadata(swap_model if swapping else model, KIND_SWAPPER if swapping else KIND_DETECTOR)
    detector_path = _model_metadata(swap_detector, KIND_DETECTOR)[0] if swap_detector else None
    face_detector = _resolve_face_detector(face_detector)
    try:
        config = build_run_config(
            streams, model_path, metadata, face_detector,
            swap=swapping, detector_path=detector_path, swap_sources=tuple(swap_sources), embedder=embedder,
            swap_faces=swap_faces, engine=engine, detect_every=detect_every, classify_every=classify_every,
            detect_size=detect_size, min_face_score=min_face_score, replicas=replicas,
            detect_replicas=detect_replicas, infer_replicas=infer_replicas, max_batch=max_batch,
            batch_timeout_ms=batch_timeout_ms, threshold=threshold, draw=not no_draw,
            output=output, display=display, events_path=events_path, preset=preset, crf=crf,
            report_path=report_path, report_every_s=report_every or 0.0,
            blinks=blinks,
            queue_size=queue_size, live_latency_budget_ms=max_latency_ms, upstream_niceness=upstream_niceness,
            metrics_interval_s=metrics_interval, metrics_json=metrics_json, progress=not no_progress,
            transport="tcp" if plan_out else transport, open_timeout_s=open_timeout,
            reconnect=ReconnectConfig(enabled=not no_reconnect, stall_timeout_s=stall_timeout,
                                      initial_s=reconnect_initial, max_s=reconnect_max, attempts=reconnect_attempts),
        )
    except RunOptionError as exc:
        _fail(str(exc))
    if plan_out:
        _write_plan(plan_out, config)
    result = run_pipeline(config)
    if result.error and result.exit_code != 130:
        _fail(result.error)  # one line: the partial outputs are already gone
    click.echo(_summary(result.metrics), err=True)
    for stream in result.metrics["streams"]:
        if stream["output"]:
            click.echo(f"wrote {stream['output']}")
    if events_path and Path(events_path).exists():
        click.echo(f"wrote {events_path}")
    if report_path and (Path(report_path) / "report.json").exists():
        click.echo(f"wrote {Path(report_path) / 'report.html'}")
    if metrics_json:
        click.echo(f"wrote {metrics_json}")
    sys.exit(result.exit_code)


def _write_plan(path: str, config: RunConfig) -> None:
    from runtime.graph import build_graph
    from runtime.plan import RunPlan, save_plan
    from pipeline.transport import EndpointAllocator

    endpoints = EndpointAllocator("tcp")
    plan = RunPlan(endpoints.endpoint("control"), endpoints.endpoint("report"), [])
    plan.specs = build_graph(config, endpoints, plan.control, plan.report)
    save_plan(path, config, plan)
    click.echo(f"wrote {path}: {len(plan.specs)} stages ({', '.join(s.label for s in plan.specs)})")
    sys.exit(0)


def _run_plan(path: str, external: tuple[str, ...]) -> None:
    from runtime.plan import PlanError, load_plan
    from runtime.supervisor import run_pipeline

    try:
        config, plan = load_plan(path)
        result = run_pipeline(config, plan=plan, external=external)
    except PlanError as exc:
        _fail(str(exc))
    if result.error and result.exit_code != 130:
        _fail(result.error)
    click.echo(_summary(result.metrics), err=True)
    sys.exit(result.exit_code)


@cli.command("stage")
@click.argument("plan_file", metavar="PLAN")
@click.argument("label")
def stage_command(plan_file, label):
    """Run one stage replica of a plan (written by `dfstream run --plan-out`) in this process.

    \b
    Example, with face detection on a second host:
      host A: dfstream run -s rtsp://cam/1 -o out.mp4 --plan-out plan.json   # then edit detect[0]'s address
      host B: dfstream stage plan.json 'detect[0]'
      host A: dfstream run --plan plan.json --external 'detect[0]'
    """
    from runtime.plan import PlanError, load_plan
    from runtime.runner import StageRunner

    try:
        _, plan = load_plan(plan_file)
        spec = plan.spec(label)
    except PlanError as exc:
        _fail(str(exc))
    sys.exit(StageRunner(spec).run())


def _score_origin(track: dict) -> str:
    """Where a track's P(fake) comes from: the mean of its scores, or its blinks where those raised it."""
    frames = f"mean of {track['scores']} scores"
    if track.get("blink_score") is not None and track["score"] > track["mean_score"]:
        return (f"its blinks ({track['blinks_per_minute']:.0f} a minute); the {frames} {track['mean_score']:.2f}")
    return frames


def _summary(metrics: dict) -> str:
    from pipeline.metrics import busy_detector_note, latency_budget_note

    lines = []
    for stream in metrics["streams"]:
        lat = stream["latency_ms"] or {}
        tracks = [t for t in stream["tracks"] if t["scores"]]
        verdicts = ", ".join(f"#{t['track_id']} {t['overall_verdict']} (P(fake) {t['score']:.2f}: "
                             f"{_score_origin(t)})" for t in tracks) or "no faces scored"
        lines.append(
            f"{stream['name']}: {stream['frames_written']} frames, {stream['dropped'] or 0} dropped"
            f"{latency_budget_note(stream)}{busy_detector_note(stream)}, "
            f"latency p50 {lat.get('p50_ms')} ms / p99 {lat.get('p99_ms')} ms; tracks: {verdicts}"
        )
    lines.append(f"{'stage':<12}{'fps':>8}{'busy%':>7}{'cpu s':>8}")
    for row in metrics["stages"]:
        fps = "-" if row["fps"] is None else f"{row['fps']:.1f}"
        busy = "-" if row["busy_pct"] is None else f"{row['busy_pct']:.0f}"
        lines.append(f"{row['stage'] + '[' + str(row['replica']) + ']':<12}{fps:>8}{busy:>7}{row['cpu_s']:>8.1f}")
    return "\n".join(lines)


# Commands that live beside their subsystems: engines and models, training, benchmarks.
cli.add_command(export_command, "export")
cli.add_command(build_engine_command, "build-engine")
cli.add_command(models_group, "models")
cli.add_command(eval_command, "eval")
cli.add_command(predict_command, "predict")
cli.add_command(swapper_eval_command, "eval-swap")
cli.add_command(bench_command, "bench")
cli.add_command(monitor_token_command, "monitor-token")
cli.add_command(keys_command, "keys")
cli.add_command(monitor_command, "monitor")

cli.add_command(lofo_group, "lofo")
cli.add_command(calibrate_command, "calibrate")

train_group = click.Group("train", help="Train the models dfstream runs: detector, swapper, gan.")
train_group.add_command(train_detector_command, "detector")
train_group.add_command(train_temporal_command, "temporal")
train_group.add_command(train_ensemble_command, "ensemble")
train_group.add_command(train_fusion_command, "fusion")
train_group.add_command(train_sharpness_command, "sharpness")
train_group.add_command(train_pack_command, "pack")
train_group.add_command(train_recon_command, "recon")
train_group.add_command(train_swapper_command, "swapper")
train_group.add_command(train_gan_command, "gan")
cli.add_command(train_group)


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("dfstream: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
