"""The baseline: the single-process loop a user would write instead of dfstream.

::

    for frame in decode(clip):
        faces  = face_detector.detect(frame)           # every frame, full resolution
        crops  = align_faces(frame, landmarks)         # every face
        scores = detector_model.run(crops)             # every face, every frame
        draw(frame, faces, scores); encode(frame)

It uses the same pieces as dfstream, so the comparison is about how the work is
organised, not about different code: the face detector from
:func:`engines.face_detectors.create_face_detector` (YuNet by default), the
5-point alignment of :func:`engines.alignment.align_faces`, the detector model
through :func:`engines.loader.load_engine` (ONNX Runtime with its threads sized to
the usable cores), the annotate stage's tracking, score smoothing and drawing
(called in-process), and the sink's encoder (:class:`stages.sink.VideoWriter`,
libx264 with the sink's preset and crf).  Faces are filtered as the detect stage
filters them (minimum size, at most ``max_faces``, largest first), so both sides
classify the same faces.
"""
from __future__ import annotations

import time

import numpy as np
from pathlib import Path

from pipeline.config import AnnotateConfig, DetectConfig, SinkConfig


def run_baseline(clip: str, out_dir: str, model_path: str, engine: str, face_detector: str,
                 face_detector_path: str | None, sink: SinkConfig | None = None,
                 detect_max_side: int | None = None, infer_threads: int | None = None,
                 heap_buffers: bool = False, read_eyes: bool | None = None) -> dict:
    """Decode, detect, align, classify, draw and encode every frame of ``clip`` in this process.

    ``detect_max_side``: None detects on the full frame (the obvious loop); a number
    downscales first, as dfstream's detect stage does. ``heap_buffers``: the allocator
    setting dfstream's stage processes use (:func:`runtime.runner.keep_large_buffers_on_heap`).
    ``read_eyes``: classifying a face includes reading its eyes when blinks are part of the
    model's score (None: as dfstream's defaults decide, :func:`runtime.run_config.build_run_config`),
    so that the baseline does the same work per frame; False: the detector alone.
    """
    if heap_buffers:
        from runtime.runner import keep_large_buffers_on_heap

        keep_large_buffers_on_heap()
    from engines.alignment import align_faces, alignment_matrix
    from engines.blinks import LANDMARK_MODEL, blink_evidence, eye_aspect_ratio, landmarks_installed
    from engines.face_detectors import create_face_detector
    from engines.loader import load_engine
    from engines.metadata import KIND_DETECTOR
    from pipeline.messages import Face
    from runtime.run_config import verdict_rule
    from stages.annotate import AnnotateStage
    from stages.sink import VideoWriter
    from stages.source import probe

    from bench.limit import decoded_frames, frame_message, ms, open_decoder

    sink = sink or SinkConfig()
    detect_defaults = DetectConfig()
    stream = probe(clip)
    load0 = time.perf_counter()
    detector = create_face_detector(face_detector, face_detector_path, detect_defaults.min_face_score)
    model = load_engine(model_path, engine=engine, kind=KIND_DETECTOR, threads=infer_threads)  # None: usable cores
    metadata = model.metadata
    evidence = blink_evidence(metadata)
    if read_eyes is None:
        read_eyes = evidence is not None and landmarks_installed()
    landmarker = None
    if read_eyes:
        from engines.landmarks import create_landmarker

        landmarker = create_landmarker(LANDMARK_MODEL, threads=infer_threads or None)
    load_s = time.perf_counter() - load0
    crop_size = tuple(metadata.input_size)
    annotate = AnnotateStage(AnnotateConfig(verdict=verdict_rule(metadata), crop_size=crop_size,
                                            crop_margin=metadata.crop_margin, streams=[stream],
                                            blink_evidence=evidence.to_dict() if read_eyes and evidence else {}))
    annotate.open()
    output = Path(out_dir) / "baseline.mp4"
    writer = VideoWriter(output, stream, sink)
    container, video = open_decoder(clip)
    parts = {k: [] for k in ("decode", "detect", "align", "infer", "draw", "encode")}
    frames = faces_total = 0
    started, cpu0 = time.perf_counter(), time.process_time()
    try:
        for frame, image, decode, convert in decoded_frames(container, video):
            t1 = time.perf_counter()
            if detect_max_side:
                found = detector.detect_downscaled(image, detect_max_side)
            else:
                found = detector.detect(image)
            found = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= detect_defaults.min_face_size]
            found.sort(key=lambda f: f.area, reverse=True)
            found = found[: detect_defaults.max_faces]
            t2 = time.perf_counter()
            crops = align_faces(image, [f.landmarks for f in found], crop_size, metadata.crop_margin) if found else None
            t3 = time.perf_counter()
            scores = model.run(crops) if crops is not None else []
            openings = [None] * len(found)
            if landmarker is not None and found:
                points = []
                for f in found:
                    matrix = alignment_matrix(np.asarray(f.landmarks), crop_size, metadata.crop_margin)
                    points.append(np.asarray(f.landmarks, np.float64) @ matrix[:, :2].T + matrix[:, 2])
                openings = [eye_aspect_ratio(p) for p in landmarker.predict_each(list(crops), points)]
            t4 = time.perf_counter()
            message = frame_message(frame, image, frames)
            message.faces = [
                Face(box=tuple(f.box), score=f.score, landmarks=[tuple(p) for p in f.landmarks.tolist()],
                     crop_index=i, fake_score=float(scores[i]), eye_opening=openings[i])
                for i, f in enumerate(found)
            ]
            message.detected = message.analysed = True
            annotate.annotate(message)  # track, smooth, verdict, draw boxes and HUD: the annotate stage's code
            t5 = time.perf_counter()
            writer.write(message)
            t6 = time.perf_counter()
            for key, span in zip(parts, (decode + convert, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                parts[key].append(span)
            frames += 1
            faces_total += len(found)
        writer.finish(all_audio=True)
    finally:
        container.close()
        model.close()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {
        "frames": frames,
        "faces": faces_total,
        "faces_per_frame": round(faces_total / frames, 2) if frames else 0.0,
        "seconds": round(elapsed, 3),
        "fps": round(frames / elapsed, 2),
        "cpu_s": round(cpu, 2),
        "cpu_cores": round(cpu / elapsed, 2),
        "parts_ms": {k: ms(v) for k, v in parts.items()},
        "load_s": round(load_s, 2),
        "engine": model.describe(),
        "face_detector": face_detector,
        "infer_threads": infer_threads or "usable cores",
        "heap_buffers": heap_buffers,
        "eyes_read": bool(read_eyes),
        "detect_on": f"downscaled to {detect_max_side} px" if detect_max_side else "full frame",
        "output_bytes": output.stat().st_size if output.exists() else None,
    }
