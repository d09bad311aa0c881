"""The typed messages that travel between stages.

A frame travels from the source to the sink as one :class:`FrameMessage`.  Each
stage adds to it: detect adds faces and their aligned crops, infer adds scores
(or swapped crops), annotate adds tracks and verdicts and draws on the image.
The wire format lives in :mod:`pipeline.codec`; nothing here knows about ZeroMQ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

VERDICT_REAL = "real"
VERDICT_FAKE = "fake"
VERDICT_UNSURE = "uncertain"
VERDICT_UNSCORABLE = "unscorable"  # too small to judge: no score, not a guess

PICTURE_PART = "picture"
SCORES_PART = "scores"


@dataclass
class Face:
    """One face in one frame, in the frame's own pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float  # face detector confidence
    landmarks: list[tuple[float, float]]  # 5 points: eyes, nose, mouth corners
    crop_index: int = -1  # row in FrameMessage.crops, -1 when no crop was made
    track_id: int = -1
    fake_score: float | None = None  # P(fake) from the detector for this frame
    smoothed_score: float | None = None  # per-track EMA of fake_score, raised to blink_score where higher
    verdict: str | None = None
    swapped: bool = False
    unscorable: bool = False  # smaller than the detector's min_face_px: left unscored
    eye_opening: float | None = None  # eye aspect ratio on this frame (with eye landmarks on), engines.blinks
    blinks_per_minute: float | None = None  # its track's, over the last minute; None until seen long enough
    # its track's blinks as a P(fake) (engines.blinks.BlinkEvidence: as surprising for a real person); None:
    # blinks not part of the model's score, or seen too briefly
    blink_score: float | None = None

    def to_dict(self) -> dict:
        return {
            "box": [float(v) for v in self.box],
            "score": float(self.score),
            "landmarks": [[float(x), float(y)] for x, y in self.landmarks],
            "crop_index": self.crop_index,
            "track_id": self.track_id,
            "fake_score": self.fake_score,
            "smoothed_score": self.smoothed_score,
            "verdict": self.verdict,
            "swapped": self.swapped,
            "unscorable": self.unscorable,
            "eye_opening": self.eye_opening,
            "blinks_per_minute": self.blinks_per_minute,
            "blink_score": self.blink_score,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Face":
        return cls(
            box=tuple(d["box"]),
            score=d["score"],
            landmarks=[tuple(p) for p in d["landmarks"]],
            crop_index=d.get("crop_index", -1),
            track_id=d.get("track_id", -1),
            fake_score=d.get("fake_score"),
            smoothed_score=d.get("smoothed_score"),
            verdict=d.get("verdict"),
            swapped=d.get("swapped", False),
            unscorable=d.get("unscorable", False),
            eye_opening=d.get("eye_opening"),
            blinks_per_minute=d.get("blinks_per_minute"),
            blink_score=d.get("blink_score"),
        )


@dataclass
class StageTiming:
    """When one stage started and finished its work on a frame (wall clock)."""

    stage: str
    start: float
    end: float


@dataclass
class FrameMessage:
    """One decoded video frame and everything the stages learned about it."""

    stream_id: int
    seq: int  # contiguous per stream after any live-source drops; used for ordering
    frame_index: int  # index of the frame in the decoded source, gaps = dropped frames
    pts: int | None
    time_base: tuple[int, int]
    capture_time: float  # wall clock when the source had the frame
    image: np.ndarray | None  # the picture (see pipeline.pictures); None once no later stage needs pixels
    faces: list[Face] = field(default_factory=list)
    crops: np.ndarray | None = None  # N x h x w x 3 uint8 BGR, aligned
    pixel_format: str = "bgr24"  # of ``image``: "yuv420p" (I420, as decoded) or "bgr24"
    # The source decides which frames the face detector looks at (and which of those are
    # classified): one place for the schedule, which live streams adapt to the detector's load.
    to_detect: bool = False
    to_classify: bool = False
    detected: bool = False  # the face detector ran on this frame
    analysed: bool = False  # crops were made for classification on this frame
    # A frame whose faces are being scored travels in two parts, so its picture need not ride
    # through batch and infer: PICTURE_PART (picture, faces) goes from detect straight to
    # annotate, SCORES_PART (faces, crops, no picture) through batch and infer; annotate joins
    # them by stream and sequence number. "" is a whole frame.
    part: str = ""
    timings: list[StageTiming] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int]:
        return (self.stream_id, self.seq)

    @property
    def pts_seconds(self) -> float | None:
        """The frame's time in its stream, from its timestamp; None when it has none."""
        return None if self.pts is None else float(self.pts * Fraction(*self.time_base))


@dataclass
class EndOfStream:
    """Sent once per stream by every replica after its last frame of that stream."""

    stream_id: int
    frames: int  # frames the source sent
    dropped: int  # frames a live source dropped to stay current
    error: str | None = None  # set when the source stopped on an error


# A packet is what one ZeroMQ multipart message carries: usually one frame, a
# whole batch of frames between the batch and infer stages.
Packet = list[FrameMessage]
