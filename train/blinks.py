"""A video's blink rate (:mod:`engines.blinks`) measured offline over its first minute (the span a run
judges a track's blinks over): the largest face of each frame, found every few frames, its 68 landmarks
read on every frame or every n-th (a run's classify cadence, :data:`pipeline.config.CLASSIFY_EVERY`, is
what the default detector's counts are fitted at)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.blinks import LANDMARK_MODEL, MIN_SECONDS, WINDOW_S, BlinkRate, blink_rate, eye_aspect_ratio
from pipeline.config import CLASSIFY_EVERY, DETECT_EVERY  # a run's: faces found every DETECT_EVERY frames

DETECT_SIDE = 640  # frames are shrunk to this longest side to find faces


def check_degradation(degradation) -> None:
    """Blinks are read on whole frames at a frame scale; a face height (scaling each file by its first
    face) is refused, one message for every command that measures them."""
    if degradation is not None and degradation.face_height is not None:
        raise ValueError("blinks are read at a frame scale, not at a face height (--face-height)")


class BlinkMeter:
    """Measures videos one after another with one face detector and one landmark model."""

    def __init__(self, face_detector: str = "auto", landmarks: str = LANDMARK_MODEL, threads: int | None = 1):
        from engines.face_detectors import create_face_detector
        from engines.landmarks import create_landmarker
        from engines.registry import resolve_face_detector

        self.detector = create_face_detector(*resolve_face_detector(face_detector), min_score=0.7, threads=threads)
        self.landmarker = create_landmarker(landmarks, threads=threads)

    def measure(self, path: str | Path, max_seconds: float = WINDOW_S, degradation=None, every: int = 1) -> BlinkRate:
        """The blinks of a video's first ``max_seconds`` (by default the span a run judges a track's blinks
        over). ``degradation`` (stages.faces.Degradation, a frame scale, dim room and codec; not a face
        height): the frames as a call would deliver them. ``every``: read the eyes on every n-th frame only
        (a run's classify cadence; a face is then found on each frame read)."""
        if every < 1:
            raise ValueError(f"every {every} frames: at least 1")
        # in frames read; in between the landmarks follow the last box (a head moves little in 0.1 s)
        detect_every = max(1, DETECT_EVERY // every)
        import av

        check_degradation(degradation)
        openings, face = [], None
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            max_frames = max(1, round(max_seconds * fps))
            recoder = degradation.recoder(fps) if degradation is not None and degradation.active else None
            for index, frame in enumerate(container.decode(stream)):
                if index >= max_frames:
                    break
                image = frame.to_ndarray(format="bgr24")
                if recoder is not None:  # every frame, read or not: the codec sees the whole stream
                    image = recoder.apply(image)
                if index % every:
                    continue
                if recoder is None and degradation is not None and degradation.active:
                    image = degradation.apply(image, index)
                if (index // every) % detect_every == 0:
                    faces = self.detector.detect_downscaled(image, DETECT_SIDE)
                    face = max(faces, key=lambda f: f.area) if faces else None
                if face is None:
                    openings.append(np.nan)
                    continue
                openings.append(eye_aspect_ratio(self.landmarker.predict(image, [face.landmarks])[0]))
        return blink_rate(openings, fps / every)


def fit_blink_counts(rates: list[BlinkRate]) -> tuple[float, float]:
    """(shape, scale per second) of the gamma distribution of real people's blink rates, by maximum
    likelihood of their counts (negative binomial given each video's seconds; :class:`BlinkEvidence`).
    Videos seen for under :data:`engines.blinks.MIN_SECONDS` say nothing and are left out."""
    from scipy import optimize, stats

    seen = [r for r in rates if r.seconds >= MIN_SECONDS]
    if len(seen) < 10 or not any(r.blinks for r in seen):
        raise ValueError(f"{len(seen)} real videos seen for {MIN_SECONDS:g} s or more, "
                         f"{sum(r.blinks for r in seen)} blinks in all: too few to fit real people's blink rates")
    counts = np.array([r.blinks for r in seen], np.float64)
    seconds = np.array([r.seconds for r in seen], np.float64)

    def minus_log_likelihood(log_params):
        shape, scale = np.exp(log_params)
        return -stats.nbinom.logpmf(counts, shape, 1.0 / (1.0 + scale * seconds)).sum()

    start = np.log([1.0, max(counts.sum() / seconds.sum(), 1e-3)])
    fit = optimize.minimize(minus_log_likelihood, start, method="Nelder-Mead")
    if not fit.success:
        raise ValueError(f"real people's blink rates could not be fitted: {fit.message}")
    shape, scale = np.exp(fit.x)
    return float(shape), float(scale)


def blink_plan(metadata, blinks: bool | None, degradation=None, every: int | None = None):
    """For ``dfstream eval`` and ``predict``: (the BlinkEvidence a video's score is raised by, or None;
    whether to count blinks at all; the cadence to read the eyes at). ``blinks`` None: counted when the
    model's score uses them, unless the landmark model is not installed or frames are scaled to a face
    height (said, and the frames alone score); True: counted (and their rate reported); False: not
    counted. The cadence (``every`` frames) is the one the model's evidence was fitted at, or else a
    run's classify cadence."""
    import logging

    from engines.blinks import blink_evidence, landmarks_installed

    log = logging.getLogger(__name__)
    evidence = None if blinks is False else blink_evidence(metadata)
    if blinks is None and evidence is not None:
        if degradation is not None and degradation.face_height is not None:
            log.warning("blinks are not read at a face height: video scores are the frames' alone")
            evidence = None
        elif not landmarks_installed():
            log.warning("blinks are part of %s's score but the landmark model %s is not installed (dfstream models "
                        "fetch %s --from DIR): video scores are the frames' alone", metadata.name, LANDMARK_MODEL,
                        LANDMARK_MODEL)
            evidence = None
    count = bool(blinks) or evidence is not None
    if count:
        check_degradation(degradation)
    if evidence is not None and every not in (None, evidence.every_n_frames):
        raise ValueError(f"{metadata.name}'s blink counts were fitted on eyes read every {evidence.every_n_frames} "
                         f"frame(s), not every {every}")
    cadence = evidence.every_n_frames if evidence is not None else (every or CLASSIFY_EVERY)
    return evidence, count, cadence
