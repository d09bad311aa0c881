"""Blinks along a face track: a cue that does not rest on pixels.

A person on camera blinks about every three seconds (a median of 20 a minute over this project's
real clips); a talking head animated from one photo often never does, because nothing in its
input asks for a blink. :func:`eye_aspect_ratio` reads how open the eyes are from 68 iBUG
landmarks (Soukupova and Cech's eye aspect ratio); :func:`count_blinks` counts the closings in a
series of them. The series is read against its own median, so a person's eye shape and the
landmark model's habits cancel out: a blink is the eyes closing to under ``CLOSED`` of their usual
opening, counted again only after they reopen past ``REOPENED`` (so landmark jitter around one
closing is one blink).

Measured as an offline cue (``dfstream lofo blinks``, the research log); in the pipeline each track
keeps its last minute of eye openings (:class:`RecentBlinks`) and reports its blinks per minute.

A detector whose metadata carries :class:`BlinkEvidence` (the default, since 2026-12-07) joins the
two: a video's (a track's) score is raised to the score its blinks are as surprising as, when they
are the more surprising of the two -- a face is as suspect as its most suspect cue.
"""
from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

CLOSED = 0.75  # of the median opening: a closing
REOPENED = 0.85  # of the median opening: open again, the next closing is a new blink
MIN_SECONDS = 2.0  # of frames with a face: under this a rate says nothing (a blink is ~3 s apart)
WINDOW_S = 60.0  # a track's blinks per minute are those of its last minute
MAX_GAP_S = 0.5  # a longer gap between two readings of the eyes is time the face was not seen

LANDMARK_MODEL = "pfld68"  # the registry's 68-point model the eyes are read with

LEFT_EYE = slice(36, 42)  # iBUG 300-W order, as engines.landmarks returns them
RIGHT_EYE = slice(42, 48)


def landmarks_installed() -> bool:
    """Whether :data:`LANDMARK_MODEL` is installed (it is not redistributed: `make models` installs it from
    the shared folder, `dfstream models fetch pfld68 --from DIR` elsewhere)."""
    from engines.registry import get_entry, installed_path

    return installed_path(get_entry(LANDMARK_MODEL)) is not None


def eye_aspect_ratio(points68: np.ndarray) -> float:
    """The mean over both eyes of (the two lid-to-lid heights) / (2 x the corner-to-corner width)."""
    def one(eye: np.ndarray) -> float:
        heights = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
        return float(heights / (2 * np.linalg.norm(eye[0] - eye[3]) + 1e-6))

    points68 = np.asarray(points68, np.float64)
    return (one(points68[LEFT_EYE]) + one(points68[RIGHT_EYE])) / 2


def count_blinks(openings) -> int:
    """Closings in a series of eye aspect ratios (NaN where no face was found: skipped)."""
    values = np.asarray(openings, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return 0
    relative = values / np.median(values)
    blinks, armed = 0, True
    for value in relative:
        if armed and value < CLOSED:
            blinks, armed = blinks + 1, False
        elif not armed and value > REOPENED:
            armed = True
    return blinks


@dataclass(frozen=True)
class BlinkRate:
    """Blinks of one face track over the seconds it was seen."""

    blinks: int
    seconds: float  # of frames with the face

    @property
    def per_minute(self) -> float | None:
        """None when the face was seen too briefly for a rate to mean anything."""
        return None if self.seconds < MIN_SECONDS else 60.0 * self.blinks / self.seconds


def blink_rate(openings, fps: float) -> BlinkRate:
    """The rate of a track from its per-frame eye aspect ratios (NaN: no face in that frame)."""
    values = np.asarray(openings, np.float64)
    return BlinkRate(count_blinks(values), float(np.isfinite(values).sum()) / fps)


class RecentBlinks:
    """One face track's eye openings over the last :data:`WINDOW_S` seconds, read as they come (on the
    run's classified frames: the cadence :attr:`BlinkEvidence.every_n_frames` names)."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.readings: collections.deque = collections.deque()  # (time in seconds, eye aspect ratio)

    def add(self, time_s: float, opening: float) -> None:
        self.readings.append((time_s, opening))
        while self.readings and self.readings[0][0] < time_s - self.window_s:
            self.readings.popleft()

    def rate(self) -> BlinkRate:
        """Blinks over the seconds the face was seen in the window (gaps over :data:`MAX_GAP_S` not counted)."""
        if len(self.readings) < 2:
            return BlinkRate(0, 0.0)
        times = np.array([t for t, _ in self.readings])
        seen = float(np.minimum(np.diff(times), MAX_GAP_S).clip(min=0).sum())
        return BlinkRate(count_blinks([o for _, o in self.readings]), seen)


def raise_score(score: float | None, blink_score: float | None) -> float | None:
    """A face is as suspect as its most suspect cue: ``score``, or ``blink_score`` where that is higher
    (no score: nothing to raise; no blink score: the score alone)."""
    if score is None or blink_score is None:
        return score
    return max(score, blink_score)


@dataclass(frozen=True)
class BlinkEvidence:
    """How surprising a face's blinks are for a real person, on a detector's score scale.

    Real people's blink counts over ``T`` seconds are negative binomial: Poisson counts whose rate
    varies across people as a gamma distribution (``shape``, ``scale_per_s``; fitted on real videos,
    :func:`train.blinks.fit_blink_counts`). Reading the count with the seconds seen is the point:
    no blink in 3 s is ordinary, none in 60 s is not. The surprise P(as few blinks) is put on the
    detector's scale as the video score whose standardised logit -- against the detector's video
    scores on real videos (``score_logit_mean``, ``score_logit_sd``) -- is as far in the real
    videos' tail: one surprise for both cues, and the larger wins (Tippett's rule)."""

    shape: float  # gamma shape k of real people's blink rates
    scale_per_s: float  # gamma scale theta, blinks per second: the mean rate is shape x scale
    score_logit_mean: float  # logit of the detector's video score on real videos: mean
    score_logit_sd: float  # ... and spread
    # The eyes were read on every n-th frame when the counts were fitted: read less often, fewer
    # blinks are seen (a closing lasts a few frames), so a count is only compared with counts read
    # at the same cadence (a run's classify cadence; eval and predict read at this one).
    every_n_frames: int = 1

    def __post_init__(self):
        if min(self.shape, self.scale_per_s, self.score_logit_sd) <= 0:
            raise ValueError(f"blink evidence needs a positive shape, scale and spread: {self}")
        if self.every_n_frames < 1:
            raise ValueError(f"blink evidence read every {self.every_n_frames} frames: at least 1")

    def p_as_few(self, rate: BlinkRate) -> float | None:
        """P(a real person seen for ``rate.seconds`` blinks at most ``rate.blinks`` times); None when
        the face was seen too briefly (:data:`MIN_SECONDS`)."""
        if rate.seconds < MIN_SECONDS:
            return None
        p = 1.0 / (1.0 + self.scale_per_s * rate.seconds)
        log_head = self.shape * math.log(p) - math.lgamma(self.shape)
        total = sum(math.exp(log_head + math.lgamma(j + self.shape) - math.lgamma(j + 1) + j * math.log1p(-p))
                    for j in range(rate.blinks + 1))
        return min(1.0, total)

    def score(self, rate: BlinkRate) -> float | None:
        """The detector score as surprising for a real video as these blinks; None when seen too briefly."""
        p = self.p_as_few(rate)
        if p is None:
            return None
        z = -NormalDist().inv_cdf(min(max(p, 1e-12), 1 - 1e-12))
        return 1.0 / (1.0 + math.exp(-(self.score_logit_mean + self.score_logit_sd * z)))

    def raise_score(self, score: float | None, rate: BlinkRate | None) -> float | None:
        """``score`` (a video's or a track's P(fake)), or its blinks' score where that is higher."""
        return raise_score(score, None if rate is None else self.score(rate))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BlinkEvidence":
        """Models calibrated before the cadence was recorded read the eyes on every frame."""
        return cls(**{k: float(d[k]) for k in ("shape", "scale_per_s", "score_logit_mean", "score_logit_sd")},
                   every_n_frames=int(d.get("every_n_frames", 1)))


def blink_evidence(metadata) -> BlinkEvidence | None:
    """A detector's evidence from its metadata (``ModelMetadata.blinks``); None when blinks are not part of its score."""
    return BlinkEvidence.from_dict(metadata.blinks) if metadata.blinks else None
