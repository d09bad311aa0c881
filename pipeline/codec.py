"""Message codec: typed messages <-> ZeroMQ multipart frames.

Layout of one multipart message::

    part 0      msgpack header: {"v": 1, "type": "frames" | "eos", ...}
    part 1..n   raw pixel buffers, referenced from the header by index

Pixel buffers are never serialised: they are handed to ZeroMQ as memoryviews
(``copy=False``) and read back with ``np.frombuffer``, so a 1080p frame costs one
copy through the socket and none in Python.  A received array lives in the ZeroMQ
frame it arrived in, which belongs to that message alone: a stage may draw on it in
place (arrays decoded from ``bytes`` are read-only and must be copied first).
"""
from __future__ import annotations

from typing import Sequence, Union

import msgpack
import numpy as np

from pipeline.messages import EndOfStream, Face, FrameMessage, StageTiming

WIRE_VERSION = 2  # 2: frames say their pixel format, and which part of a split frame they are

Message = Union[list[FrameMessage], EndOfStream]


class CodecError(ValueError):
    """A multipart message that is not a dfstream message of this version."""


def _array_ref(array: np.ndarray, buffers: list) -> dict:
    array = np.ascontiguousarray(array)
    buffers.append(memoryview(array).cast("B") if array.size else b"")  # cast() refuses empty arrays
    return {"buf": len(buffers), "shape": list(array.shape), "dtype": array.dtype.str}


def _array_from(ref: dict | None, parts: Sequence) -> np.ndarray | None:
    if ref is None:
        return None
    part = parts[ref["buf"]]
    raw = part.buffer if hasattr(part, "buffer") else part
    return np.frombuffer(raw, dtype=np.dtype(ref["dtype"])).reshape(ref["shape"])


def _frame_header(msg: FrameMessage, buffers: list) -> dict:
    return {
        "stream": msg.stream_id,
        "seq": msg.seq,
        "index": msg.frame_index,
        "pts": msg.pts,
        "tb": list(msg.time_base),
        "capture": msg.capture_time,
        "image": None if msg.image is None else _array_ref(msg.image, buffers),
        "crops": None if msg.crops is None else _array_ref(msg.crops, buffers),
        "fmt": msg.pixel_format,
        "faces": [f.to_dict() for f in msg.faces],
        "to_detect": msg.to_detect,
        "to_classify": msg.to_classify,
        "detected": msg.detected,
        "analysed": msg.analysed,
        "part": msg.part,
        "timings": [[t.stage, t.start, t.end] for t in msg.timings],
    }


def _frame_from(h: dict, parts: Sequence) -> FrameMessage:
    return FrameMessage(
        stream_id=h["stream"],
        seq=h["seq"],
        frame_index=h["index"],
        pts=h["pts"],
        time_base=tuple(h["tb"]),
        capture_time=h["capture"],
        image=_array_from(h["image"], parts),
        crops=_array_from(h["crops"], parts),
        pixel_format=h["fmt"],
        faces=[Face.from_dict(f) for f in h["faces"]],
        to_detect=h["to_detect"],
        to_classify=h["to_classify"],
        detected=h["detected"],
        analysed=h["analysed"],
        part=h["part"],
        timings=[StageTiming(*t) for t in h["timings"]],
    )


def encode(message: Message) -> list:
    """Turn a packet of frames or an end-of-stream marker into multipart parts."""
    if isinstance(message, EndOfStream):
        header = {
            "v": WIRE_VERSION,
            "type": "eos",
            "stream": message.stream_id,
            "frames": message.frames,
            "dropped": message.dropped,
            "error": message.error,
        }
        return [msgpack.packb(header)]
    buffers: list = []
    frames = [_frame_header(m, buffers) for m in message]
    return [msgpack.packb({"v": WIRE_VERSION, "type": "frames", "frames": frames})] + buffers


def decode(parts: Sequence) -> Message:
    """Inverse of :func:`encode`; accepts bytes or ``zmq.Frame`` parts."""
    if not parts:
        raise CodecError("empty multipart message")
    first = parts[0]
    raw = first.bytes if hasattr(first, "bytes") else first
    try:
        header = msgpack.unpackb(raw)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CodecError(f"undecodable header: {exc}") from exc
    if not isinstance(header, dict) or header.get("v") != WIRE_VERSION:
        raise CodecError(f"not a dfstream v{WIRE_VERSION} message")
    if header["type"] == "eos":
        return EndOfStream(header["stream"], header["frames"], header["dropped"], header["error"])
    if header["type"] == "frames":
        return [_frame_from(h, parts) for h in header["frames"]]
    raise CodecError(f"unknown message type {header['type']!r}")
