"""Per-stream face tracks: IoU association, per-track score smoothing, verdicts.

Used by the annotate stage, which sees each stream's frames in order.  A face
found by the detector continues the track whose last box overlaps it most (IoU
at least ``iou_match``); on frames where the detector did not run, each live
track keeps its last box.  A track's P(fake) is an exponential moving average
of its per-frame scores, and its verdict is read from that average by the model's
lines (:class:`pipeline.config.VerdictRule`: fake from the threshold plus the band a
real face's average strays by, real only under the model's line for real less that
band), so one noisy frame does not flip a face from real to fake.  With eyes read (a model whose
metadata carries :class:`engines.blinks.BlinkEvidence`), that average is raised to
the score of the track's blinks over its last minute where they are more surprising
for a real person.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.blinks import BlinkEvidence, BlinkRate, RecentBlinks, raise_score
from pipeline.config import AnnotateConfig, VerdictRule
from pipeline.messages import VERDICT_FAKE, VERDICT_REAL, VERDICT_UNSCORABLE, VERDICT_UNSURE, Face, FrameMessage


MAX_ENDED_TRACKS = 100  # finished tracks kept for the end-of-run summary


def iou(a, b) -> float:
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def moving_average(previous: float | None, score: float, alpha: float) -> float:
    """A track's moving average after one more score (``alpha``: the newest score's weight)."""
    return score if previous is None else alpha * score + (1 - alpha) * previous


def verdict_of(score: float | None, scores: int, rule: VerdictRule) -> str:
    """The verdict a P(fake) reads as under ``rule``, given how many scores it rests on."""
    if score is None or scores < rule.min_scores:
        return VERDICT_UNSURE
    if score >= rule.fake_from:
        return VERDICT_FAKE
    return VERDICT_REAL if score <= rule.real_up_to else VERDICT_UNSURE


@dataclass
class Track:
    track_id: int
    face: Face
    missed: int = 0
    scores: int = 0
    smoothed: float | None = None
    score_sum: float = 0.0
    too_small: bool = False  # its face was last seen too small or blurred for the detector to judge
    blinks: RecentBlinks = field(default_factory=RecentBlinks)  # its eye openings (with eye landmarks on)
    blink_rate: BlinkRate | None = None  # over its last minute, as last read
    # that rate as a P(fake) (BlinkEvidence.score), worked out when it is read, not on every frame drawn;
    # None: blinks not part of the score, or seen too briefly
    blink_score: float | None = None

    @property
    def blinks_per_minute(self) -> float | None:
        return None if self.blink_rate is None else self.blink_rate.per_minute


class FaceTracker:
    """Tracks of one stream; feed it that stream's frames in order."""

    def __init__(self, config: AnnotateConfig):
        self.config = config
        self.evidence = BlinkEvidence.from_dict(config.blink_evidence) if config.blink_evidence else None
        self.tracks: list[Track] = []
        self.ended: list[Track] = []  # tracks that left the picture, kept for the summary
        self._next_id = 1

    def update(self, message: FrameMessage) -> None:
        """Give every face of ``message`` a track id, smoothed score and verdict;
        on frames without detection, fill in the faces of the live tracks."""
        if message.detected:
            self._associate(message.faces)
            seconds = message.capture_time if message.pts is None else message.pts_seconds
            for face in message.faces:
                track = self._track(face.track_id)
                self._read_eyes(face, track, seconds)
                self._score(face, track)
        else:
            # only tracks seen at the last detection: a missed one may have left the picture
            message.faces = [self._held(track) for track in self.tracks if track.missed == 0]

    def score(self, track: Track) -> float | None:
        """The track's P(fake) on the current frame: the moving average of its scores, raised to its
        blinks' score where that is higher."""
        return self._raised(track.smoothed, track)

    def overall_score(self, track: Track) -> float | None:
        """The track's P(fake) as a whole: the mean of all its scores, as ``dfstream eval`` scores a
        video (raised to its blinks' score likewise), so that the report does not hang on the last frames."""
        return self._raised(track.score_sum / track.scores if track.scores else None, track)

    def verdict(self, track: Track) -> str:
        """The verdict drawn on the current frame, from :meth:`score`; ``unscorable`` while a face too
        small or blurred to judge has never been scored."""
        if track.too_small and not track.scores:
            return VERDICT_UNSCORABLE
        return verdict_of(self.score(track), track.scores, self.config.verdict)

    def overall_verdict(self, track: Track) -> str:
        """The verdict on the whole track, from :meth:`overall_score`."""
        if track.too_small and not track.scores:
            return VERDICT_UNSCORABLE
        return verdict_of(self.overall_score(track), track.scores, self.config.verdict.for_means())

    def _raised(self, score: float | None, track: Track) -> float | None:
        return raise_score(score, track.blink_score)

    def _associate(self, faces: list[Face]) -> None:
        pairs = sorted(
            ((iou(t.face.box, f.box), ti, fi) for ti, t in enumerate(self.tracks) for fi, f in enumerate(faces)),
            reverse=True,
        )
        matched_tracks, matched_faces = set(), set()
        for overlap, ti, fi in pairs:
            if overlap < self.config.iou_match:
                break
            if ti in matched_tracks or fi in matched_faces:
                continue
            matched_tracks.add(ti)
            matched_faces.add(fi)
            track = self.tracks[ti]
            track.face, track.missed = faces[fi], 0
            faces[fi].track_id = track.track_id
        survivors = []
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.missed += 1
                if track.missed > self.config.track_max_missed:
                    self.ended = (self.ended + [track])[-MAX_ENDED_TRACKS:]
                    continue
            survivors.append(track)
        for fi, face in enumerate(faces):
            if fi not in matched_faces:
                face.track_id = self._next_id
                survivors.append(Track(self._next_id, face))
                self._next_id += 1
        self.tracks = survivors

    def _track(self, track_id: int) -> Track:
        return next(t for t in self.tracks if t.track_id == track_id)

    def _score(self, face: Face, track: Track) -> None:
        if face.unscorable or face.fake_score is not None:
            track.too_small = face.unscorable
        if face.fake_score is not None:
            track.smoothed = moving_average(track.smoothed, face.fake_score, self.config.ema_alpha)
            track.scores += 1
            track.score_sum += face.fake_score
        face.smoothed_score = self.score(track)
        face.verdict = self.verdict(track)

    def _read_eyes(self, face: Face, track: Track, seconds: float) -> None:
        if face.eye_opening is not None:
            track.blinks.add(seconds, face.eye_opening)
            track.blink_rate = track.blinks.rate()
            track.blink_score = None if self.evidence is None else self.evidence.score(track.blink_rate)
        face.blinks_per_minute = track.blinks_per_minute
        face.blink_score = track.blink_score

    def _held(self, track: Track) -> Face:
        held = Face(
            box=track.face.box,
            score=track.face.score,
            landmarks=track.face.landmarks,
            track_id=track.track_id,
            smoothed_score=self.score(track),
            verdict=self.verdict(track),
            blinks_per_minute=track.blinks_per_minute,
            blink_score=track.blink_score,
        )
        return held

    def summary(self) -> list[dict]:
        """Per-track figures at the end of a stream (for the report)."""
        return [
            {
                "track_id": t.track_id,
                "scores": t.scores,
                "mean_score": t.score_sum / t.scores if t.scores else None,  # of its frames
                "score": self.overall_score(t),  # the track as a whole: mean_score, raised to its blinks'
                "smoothed_score": self.score(t),  # as last drawn
                "verdict": self.verdict(t),  # as last drawn
                "overall_verdict": self.overall_verdict(t),  # from score
                "blinks_per_minute": t.blinks_per_minute,  # over its last minute (None: eyes not read, or too briefly)
                "blink_score": t.blink_score,
            }
            for t in sorted(self.ended + self.tracks, key=lambda t: t.track_id)
        ]
