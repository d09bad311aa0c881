"""From the user's options to a :class:`RunConfig`: the one place a run is assembled.

``dfstream run`` and the bench (:mod:`bench.pipeline_runs`) both build their runs here,
so a benchmarked run is configured exactly as a user's run with the same options.
Each setting is stored once: on the config of the stage that uses it, or on the
RunConfig when the graph hands it to several stages (:func:`runtime.graph.build_graph`
copies the detection schedule into every source and the crop geometry into annotate).
"""
from __future__ import annotations

import logging

from engines.blinks import LANDMARK_MODEL, blink_evidence, landmarks_installed
from engines.metadata import ModelMetadata
from pipeline.config import (
    AnnotateConfig,
    BatchConfig,
    DetectConfig,
    InferConfig,
    ReconnectConfig,
    RunConfig,
    SinkConfig,
    SourceConfig,
    StreamInfo,
    VerdictRule,
)

FILE_BATCH_TIMEOUT_MS = 33.0  # with no live source: about one frame of a 30 fps video

log = logging.getLogger(__name__)


class RunOptionError(ValueError):
    """Options that do not make a run together; the message names the command-line options."""


def probe_streams(urls, live: bool = False, open_timeout: float = SourceConfig.open_timeout_s,
                  capture_fps: float | None = None) -> list[StreamInfo]:
    """Each source probed (a StageError names one that cannot be opened), with names made unique
    so that ``{stream}`` in an output pattern names each stream once. ``capture_fps``: the rate
    screen and window sources are grabbed at (``--fps``; None: SCREEN_FPS); it is their
    StreamInfo.fps, which the source stage grabs at."""
    from stages.source import probe

    streams = [probe(url, stream_id, paced=live, open_timeout=open_timeout, capture_fps=capture_fps)
               for stream_id, url in enumerate(urls)]
    names = [s.name for s in streams]
    for stream in streams:
        if names.count(stream.name) > 1:
            stream.name = f"{stream.name}-{stream.stream_id}"
    return streams


def build_run_config(
    streams: list[StreamInfo],
    model_path: str,
    metadata: ModelMetadata,
    face_detector: tuple[str, str | None],
    *,
    swap: bool = False,
    detector_path: str | None = None,
    swap_sources: tuple[str, ...] = (),
    embedder: str | None = None,
    swap_faces: str = AnnotateConfig.swap_faces,
    engine: str = InferConfig.engine,
    infer_threads: int | None = None,
    detect_every: int = RunConfig.detect_every,
    classify_every: int | None = None,
    detect_size: int = DetectConfig.detect_max_side,
    min_face_score: float = DetectConfig.min_face_score,
    detect_threads: int = DetectConfig.threads,
    blinks: bool | None = None,
    replicas: int = 1,
    detect_replicas: int | None = None,
    infer_replicas: int | None = None,
    max_batch: int = BatchConfig.max_batch,
    batch_timeout_ms: float | None = None,
    threshold: float | None = None,
    draw: bool = AnnotateConfig.draw,
    output: str | None = None,
    display: bool = False,
    events_path: str | None = None,
    report_path: str | None = None,
    report_every_s: float = SinkConfig.report_every_s,
    preset: str | None = None,
    crf: int = SinkConfig.crf,
    publish_url: str | None = None,
    publish_fps: float = SinkConfig.publish_fps,
    reconnect: ReconnectConfig | None = None,
    **run_settings,
) -> RunConfig:
    """The RunConfig for ``streams`` (see :func:`probe_streams`) and a model (its path and metadata).

    ``face_detector``: (kind, model path) from :func:`engines.registry.resolve_face_detector`.
    ``classify_every`` defaults to ``detect_every``; swapping detects and swaps every face on
    every frame.  ``batch_timeout_ms`` defaults to one frame interval of the fastest live
    source.  ``threshold`` defaults to the model's.  ``blinks``: read each analysed face's eyes
    and count its track's blinks; None: when the model's metadata makes them part of its score,
    the landmark model is installed and the run has at most one live stream (each camera of
    ``dfstream monitor`` is a run of its own).  ``reconnect``: how live sources ride out an
    outage (default: :class:`ReconnectConfig`'s).  Any other RunConfig field (queue_size,
    transport, progress ...) is passed in ``run_settings``.  Raises RunOptionError."""
    reconnect = reconnect or ReconnectConfig()
    if reconnect.max_s < reconnect.initial_s:
        raise RunOptionError(f"--reconnect-max ({reconnect.max_s:g} s) must be at least "
                             f"--reconnect-initial ({reconnect.initial_s:g} s)")
    if swap:
        detect_every = 1  # a swapped face must be redrawn on every frame
    classify_every = classify_every or detect_every
    if classify_every % detect_every:
        raise RunOptionError(f"--classify-every ({classify_every}) must be a multiple of --detect-every ({detect_every})")
    if swap:
        classify_every = detect_every
    live_rates = [s.fps for s in streams if s.live and s.fps]
    if batch_timeout_ms is None:
        batch_timeout_ms = 1000.0 / max(live_rates) if live_rates else FILE_BATCH_TIMEOUT_MS
    mode = "swap" if swap else "detect"
    kind, path = face_detector
    evidence = None if swap else blink_evidence(metadata)
    live_streams = sum(s.live for s in streams)
    if blinks is None and evidence is not None:
        if live_streams > 1:  # ~4 ms of CPU a face: on 2 cores it would cost a stream of the four (BENCHMARKS.md)
            blinks = False
            log.info("%d live streams in one run: their eyes are not read by default (--blinks reads them); "
                     "faces are scored on their frames alone", live_streams)
        elif not landmarks_installed():
            blinks = False
            log.warning("blinks are part of %s's score but the landmark model %s is not installed (dfstream models "
                        "fetch %s --from DIR): faces are scored on their frames alone", metadata.name, LANDMARK_MODEL,
                        LANDMARK_MODEL)
        else:
            blinks = True
    if blinks and evidence is not None and evidence.every_n_frames != classify_every:
        # read less often, fewer closings are caught: a real face would look a little more suspect
        log.warning("%s's blink counts were fitted on eyes read every %d frame(s); this run reads them every %d "
                    "(--classify-every): its blink scores are on another footing", metadata.name,
                    evidence.every_n_frames, classify_every)
    return RunConfig(
        streams=streams,
        detect_every=detect_every,
        classify_every=classify_every,
        detect=DetectConfig(
            face_detector=kind,
            face_detector_path=path,
            detect_max_side=detect_size,
            min_face_score=min_face_score,
            threads=detect_threads,
            crop_size=tuple(metadata.input_size),
            crop_margin=metadata.crop_margin,
        ),
        batch=BatchConfig(max_batch=max_batch, timeout_ms=batch_timeout_ms,
                          live_streams=len(streams) if all(s.live for s in streams) else 0),
        infer=InferConfig(model_path=model_path, mode=mode, engine=engine, threads=infer_threads,
                          detector_path=detector_path, swap_source=tuple(swap_sources), embedder_path=embedder,
                          eye_landmarks=LANDMARK_MODEL if blinks and not swap else None),
        annotate=AnnotateConfig(
            verdict=verdict_rule(metadata, threshold),
            mode=mode,
            swap_faces=swap_faces,
            draw=draw,
            blink_evidence=evidence.to_dict() if blinks and evidence is not None else {},
        ),
        sink=SinkConfig(output_pattern=output, display=display, events_path=events_path, crf=crf,
                        publish_url=publish_url, publish_fps=publish_fps, report_path=report_path,
                        report_every_s=report_every_s).with_preset(preset),
        detect_replicas=detect_replicas or replicas,
        infer_replicas=infer_replicas or replicas,
        reconnect=reconnect,
        **run_settings,
    )


def verdict_rule(metadata: ModelMetadata, threshold: float | None = None) -> VerdictRule:
    """The lines a run draws verdicts by: the model's threshold (or ``threshold``), its uncertain band and its
    line for "real" (set on validation by ``dfstream calibrate``), the defaults where the model has none."""
    return VerdictRule(threshold=float(metadata.threshold if threshold is None else threshold),
                       uncertain_band=VerdictRule.uncertain_band if metadata.uncertain_band is None
                       else float(metadata.uncertain_band),
                       real_below=None if metadata.real_below is None else float(metadata.real_below))


def resolve_model(name_or_path: str, kind: str) -> tuple[str, ModelMetadata]:
    """(path, metadata) of a model given by registry name or file, checked to be of ``kind``
    (``engines.metadata.KIND_*``); RunOptionError in one line otherwise. ``dfstream run`` and
    ``dfstream monitor`` resolve their models here."""
    from engines.metadata import MetadataError, read_metadata
    from engines.registry import ModelIntegrityError, ModelNotFoundError, resolve

    try:
        path = resolve(name_or_path)
        return str(path), read_metadata(path).expect_kind(kind, path)
    except (ModelNotFoundError, ModelIntegrityError, MetadataError) as exc:
        raise RunOptionError(str(exc)) from None


def resolve_face_detector(choice: str) -> tuple[str, str | None]:
    """(detector kind, model path) for a --face-detector choice; RunOptionError in one line."""
    from engines.registry import ModelIntegrityError, ModelNotFoundError, resolve_face_detector as resolve

    try:
        return resolve(choice)
    except (ModelNotFoundError, ModelIntegrityError) as exc:
        raise RunOptionError(str(exc)) from None
