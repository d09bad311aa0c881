"""The limit: decode -> ndarray (I420, as the source sends it) -> encode, one process, nothing in between.

This is the least work any pipeline that reads a video and writes an annotated
one must do: what dfstream's source and sink stages do with no stage between
them.  Decoding is set up as the source stage sets it up (PyAV, frame+slice
threads) and encoding goes through the sink's own :class:`stages.sink.VideoWriter`
with the run's :class:`pipeline.config.SinkConfig` (libx264, its preset and crf),
so the encoder settings are the pipeline's by construction.
"""
from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np

from pipeline import pictures
from pipeline.config import SinkConfig
from pipeline.messages import FrameMessage


def frame_message(frame: av.VideoFrame, image: np.ndarray, seq: int, pixel_format: str = pictures.BGR24) -> FrameMessage:
    """What the sink's writer needs from a decoded frame (pts and time base kept)."""
    tb = frame.time_base
    return FrameMessage(stream_id=0, seq=seq, frame_index=seq, pts=frame.pts,
                        time_base=(tb.numerator, tb.denominator) if tb else (1, 90000),
                        capture_time=time.time(), image=image, pixel_format=pixel_format)


def open_decoder(path: str):
    container = av.open(path)
    video = container.streams.video[0]
    video.thread_type = "AUTO"  # as stages.source.SourceStage.open does
    return container, video


def decoded_frames(container, video, pixel_format: str = pictures.BGR24):
    """Yield ``(frame, image in pixel_format, seconds decoding, seconds converting)`` for every frame."""
    decoder = container.decode(video)
    while True:
        t0 = time.perf_counter()
        frame = next(decoder, None)
        if frame is None:
            return
        t1 = time.perf_counter()
        image = frame.to_ndarray(format=pixel_format)
        yield frame, image, t1 - t0, time.perf_counter() - t1


def ms(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "p50": None, "p99": None}
    arr = np.asarray(values) * 1000.0
    return {"mean": round(float(arr.mean()), 3), "p50": round(float(np.percentile(arr, 50)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3)}


def run_limit(clip: str, out_dir: str, sink: SinkConfig | None = None) -> dict:
    """Decode every frame of ``clip`` and encode it again with the sink's writer; frames per second.
    Frames are taken from the decoder as the pipeline's source takes them (I420 for even sizes),
    so the limit does no colour conversion the pipeline does not do."""
    from stages.sink import VideoWriter
    from stages.source import probe

    sink = sink or SinkConfig()
    stream = probe(clip)
    pixel_format = pictures.wire_format(stream.width, stream.height)  # as the source sends it
    output = Path(out_dir) / "limit.mp4"
    writer = VideoWriter(output, stream, sink)
    container, video = open_decoder(clip)
    decode_s, convert_s, encode_s = [], [], []
    frames = 0
    started, cpu0 = time.perf_counter(), time.process_time()
    try:
        for frame, image, decode, convert in decoded_frames(container, video, pixel_format):
            t0 = time.perf_counter()
            writer.write(frame_message(frame, image, frames, pixel_format))
            decode_s.append(decode)
            convert_s.append(convert)
            encode_s.append(time.perf_counter() - t0)
            frames += 1
        flush0 = time.perf_counter()
        writer.finish(all_audio=True)
        flush_s = time.perf_counter() - flush0
    finally:
        container.close()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {
        "frames": frames,
        "seconds": round(elapsed, 3),
        "fps": round(frames / elapsed, 2),
        "cpu_s": round(cpu, 2),
        "cpu_cores": round(cpu / elapsed, 2),
        "parts_ms": {"decode": ms(decode_s), "to_ndarray": ms(convert_s), "encode": ms(encode_s)},
        "encoder_flush_s": round(flush_s, 3),
        "encoder": {"codec": sink.codec, "preset": sink.preset, "crf": sink.crf, "threads": sink.encode_threads or "auto"},
        "output_bytes": output.stat().st_size if output.exists() else None,
    }
