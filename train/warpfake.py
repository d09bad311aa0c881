"""Warp fakes: fakes made the way one-shot talking-head generators make a frame, from real video alone.

Most generated talking heads (LIA, EDTalk, AniTalker, LivePortrait; DreamTalk and StyleTalk through
PIRenderer) animate *one source image*: a network predicts a smooth dense motion field that carries
the source's face to the driving pose and expression, the source is resampled along it, and a
decoder refines the result (LivePortrait then pastes it back into the frame under a soft mask).
What such a frame carries is texture that belongs to another moment -- skin, teeth and wrinkles
stretched or squeezed to a new shape, the mouth's inside taken from a closed mouth -- and the
resampling's softness where the field stretches.  :func:`warp_fake` does the same with another
frame of the same clip as the source:

1. a thin-plate spline through the landmarks (68 when known, else 5) carries each point of the
   driving frame to where the source frame has it, pinned to the identity on the crop's border;
   evaluated on a coarse grid and upsampled, it is as smooth as a motion network's field,
2. the source is resampled along it (bilinear, like ``grid_sample``),
3. sometimes resampled down and up to a generator's resolution,
4. kept whole (EDTalk, AniTalker: the generator draws the whole crop), pasted back over the
   driving frame inside a soft head mask (LivePortrait), or given a refined face: the driving
   frame's own face inside the inner-face mask, the warped source around it -- a decoder renders
   the face crisply while hair, neck and background stay as the warp dragged them.

The fake is paired with the driving frame, which is real: the same person, camera and light, so
only the warping tells them apart.
"""
from __future__ import annotations

import cv2
import numpy as np

from engines.alignment import face_polygon
from train.sbi import dense_polygons, face_mask

FIELD_GRID = 28  # the motion field's coarse grid, points per side (a 224 px crop: one per 8 px)
BORDER_PINS = 8  # pinned points per side of the crop
MIN_MOTION = 0.02  # a source frame's mean landmark displacement, at least this share of the face's width ...
MAX_MOTION = 0.25  # ... and at most this (beyond: another person or a misdetection)
SOURCE_TRIES = 12  # other frames of the clip tried as the source
MODES = ("whole", "paste_back", "refined_face")  # drawn alike (see the module's step 4)
RESAMPLE_SHARE = 0.5  # of warp fakes also resampled down and up, as a 256 px generator would
RESAMPLE_SCALES = (0.5, 1.0)


def _tps_kernel(at: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The thin-plate kernel r^2 log r between each of ``at`` (M x 2) and each of ``points`` (N x 2)."""
    d = np.linalg.norm(at[:, None] - points[None], axis=2)
    return np.where(d > 0, d * d * np.log(np.maximum(d, 1e-12)), 0.0)


def _tps_fit(points: np.ndarray, values: np.ndarray, regularisation: float = 1e-3):
    """Thin-plate spline coefficients mapping ``points`` (N x 2) to ``values`` (N x 2)."""
    n = len(points)
    k = _tps_kernel(points, points) + regularisation * np.eye(n)
    p = np.hstack([np.ones((n, 1)), points])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
    b = np.zeros((n + 3, 2))
    b[:n] = values
    return np.linalg.solve(a, b)


def _tps_eval(points: np.ndarray, coefficients: np.ndarray, at: np.ndarray) -> np.ndarray:
    n = len(points)
    return _tps_kernel(at, points) @ coefficients[:n] + np.hstack([np.ones((len(at), 1)), at]) @ coefficients[n:]


def _border_pins(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape[:2]
    t = np.linspace(0.0, 1.0, BORDER_PINS, endpoint=False)
    xs, ys = (w - 1) * t, (h - 1) * t
    return np.concatenate([np.stack([xs, np.zeros_like(xs)], 1), np.stack([np.full_like(ys, w - 1), ys], 1),
                           np.stack([w - 1 - xs, np.full_like(xs, h - 1)], 1), np.stack([np.zeros_like(ys), h - 1 - ys], 1)])


def motion_field(driving_points: np.ndarray, source_points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) for :func:`cv2.remap`: for each pixel of the fake, where to read the source.
    A thin-plate spline through the landmarks, the crop's border pinned in place."""
    h, w = shape[:2]
    pins = _border_pins(shape)
    at_driving = np.concatenate([np.asarray(driving_points, np.float64).reshape(-1, 2), pins])
    at_source = np.concatenate([np.asarray(source_points, np.float64).reshape(-1, 2), pins])
    # fitted on coordinates scaled to [0, 1]: the spline's kernel is then well conditioned at any crop size
    scale = float(max(h, w))
    coefficients = _tps_fit(at_driving / scale, (at_source - at_driving) / scale)
    gy, gx = np.meshgrid(np.linspace(0, h - 1, FIELD_GRID), np.linspace(0, w - 1, FIELD_GRID), indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    shift = _tps_eval(at_driving / scale, coefficients, grid / scale).reshape(FIELD_GRID, FIELD_GRID, 2) * scale
    shift = cv2.resize(shift.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xx + shift[..., 0], yy + shift[..., 1]


def head_mask(shape: tuple[int, int], landmarks: np.ndarray, dense: np.ndarray | None,
              rng: np.random.Generator) -> np.ndarray:
    """A soft mask over the face and forehead, grown past the contour: where a paste-back puts the generated crop."""
    h, w = shape[:2]
    polys = dense_polygons(dense, "extended") if dense is not None else [face_polygon(landmarks, scale=1.1, brow=1.2)]
    mask = np.zeros((h, w), np.float32)
    for poly in polys:
        cv2.fillConvexPoly(mask, np.round(poly).astype(np.int32), 1.0)
    face = float(np.ptp(np.asarray(landmarks)[:, 0])) + 1.0
    grow = max(1, int(face * rng.uniform(0.1, 0.3)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    sigma = face * rng.uniform(0.08, 0.2)
    return np.clip(cv2.GaussianBlur(mask, (0, 0), sigma), 0.0, 1.0)


def choose_source(points: np.ndarray, candidates: list[np.ndarray], rng: np.random.Generator) -> int | None:
    """Which of ``candidates`` (landmarks of other frames of the clip) to warp from: one whose mean
    landmark displacement from ``points`` lies between MIN_MOTION and MAX_MOTION of the face's width,
    tried in random order; None when no candidate does."""
    face = float(np.ptp(np.asarray(points)[:, 0])) + 1.0
    for i in rng.permutation(len(candidates)):
        motion = float(np.linalg.norm(np.asarray(candidates[i]) - points, axis=1).mean()) / face
        if MIN_MOTION <= motion <= MAX_MOTION:
            return int(i)
    return None


def warp_fake(driving: np.ndarray, driving_landmarks: np.ndarray, source: np.ndarray, source_points: np.ndarray,
              driving_points: np.ndarray, rng: np.random.Generator, dense: np.ndarray | None = None,
              return_mask: bool = False, mode: str | None = None):
    """One warp fake: ``source`` (uint8 BGR, another frame of the clip) resampled so that its landmarks
    ``source_points`` land on ``driving_points`` (the driving frame's, same kind: 68 or 5), then kept whole,
    pasted back over ``driving``, or given ``driving``'s own inner face: ``mode``, one of :data:`MODES`
    (None: drawn). ``driving``'s 5 ``driving_landmarks`` and, when known, 68 ``dense`` ones shape the masks.
    With ``return_mask``: (fake, mask), the mask where the two images meet, None for a fake kept whole."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"unknown warp mode {mode!r}: expected one of {', '.join(MODES)}")
    h, w = driving.shape[:2]
    map_x, map_y = motion_field(driving_points, source_points, (h, w))
    fake = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    if rng.random() < RESAMPLE_SHARE:
        f = rng.uniform(*RESAMPLE_SCALES)
        small = cv2.resize(fake, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        fake = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR)
    mode = mode or MODES[int(rng.integers(len(MODES)))]
    mask = None
    if mode == "paste_back":
        mask = head_mask((h, w), driving_landmarks, dense, rng)
        inside, outside = fake, driving
    elif mode == "refined_face":
        mask = face_mask((h, w), driving_landmarks, rng, dense, inside=True)
        inside, outside = driving, fake
    if mask is not None:
        m = mask[..., None]
        fake = np.clip(inside.astype(np.float32) * m + outside.astype(np.float32) * (1.0 - m) + 0.5, 0, 255).astype(np.uint8)
    return (fake, mask) if return_mask else fake
