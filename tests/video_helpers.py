"""Facts about video files, read back with PyAV, for assertions."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np


@dataclass
class VideoFacts:
    frames: int
    width: int
    height: int
    times: list[float]  # presentation time of each decoded frame, seconds
    audio_packets: int
    audio_seconds: float


def video_facts(path) -> VideoFacts:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * f.time_base) for f in container.decode(stream)]
        width, height = stream.codec_context.width, stream.codec_context.height
    audio_packets, audio_end = 0, 0.0
    with av.open(str(path)) as container:
        if container.streams.audio:
            for packet in container.demux(container.streams.audio[0]):
                if packet.dts is None:
                    continue
                audio_packets += 1
                audio_end = max(audio_end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return VideoFacts(len(times), width, height, times, audio_packets, audio_end)


def small_frames(path, size=(64, 36)) -> np.ndarray:
    """Every frame, grey and shrunk, to compare videos frame by frame."""
    with av.open(str(path)) as container:
        return np.stack([
            cv2.resize(f.to_ndarray(format="gray"), size, interpolation=cv2.INTER_AREA).astype(np.float32)
            for f in container.decode(video=0)
        ])


def write_clip(path, frames: list[np.ndarray], fps: int = 25, display_rotation: int = 0) -> None:
    """Encode BGR frames to an H.264 file with one slice per frame; ``display_rotation``: the
    counter-clockwise degrees its display matrix tells a player to turn them (as phones write)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        stream.thread_type = "FRAME"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def frame_i420(path, index: int = 0) -> np.ndarray:
    """One frame of a file in the I420 layout the source stage sends."""
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number == index:
                return frame.to_ndarray(format="yuv420p")
    raise IndexError(f"{path} has no frame {index}")
