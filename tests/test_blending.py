"""engines.blending: pasting a swapped crop back into the frame."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.alignment import align_face, alignment_matrix, template_points
from engines.blending import color_transfer, face_mask, paste_swapped_face

DATA = Path(os.environ.get("DFSTREAM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CROP = (64, 64)
MARGIN = 1.1


def _frame(height=360, width=480, seed=0) -> np.ndarray:
    """A smooth colour gradient with a little texture (so interpolation errors stay small)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack([x / width * 200 + 20, y / height * 180 + 30, (x + y) / (width + height) * 150 + 50], -1)
    frame += np.random.default_rng(seed).normal(0, 2, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _landmarks(center=(240, 180), scale=1.5) -> np.ndarray:
    """5 face landmarks of a face about 100 px wide centred at ``center``."""
    pts = template_points((64, 64), 1.0) - 32
    return pts * scale + np.asarray(center, np.float64)


def _bounds(matrix, size, frame_shape):
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size[1], 0, 1], [0, size[0], 1], [size[1], size[0], 1]], np.float64) @ inverse.T
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    return max(x0, 0), max(y0, 0), min(x1 + 1, frame_shape[1]), min(y1 + 1, frame_shape[0])


def test_paste_changes_only_pixels_near_the_face_and_keeps_shape_and_dtype():
    frame = _frame()
    before = frame.copy()
    matrix = alignment_matrix(_landmarks(), CROP, MARGIN)
    swapped = np.full((*CROP, 3), (40, 200, 60), np.uint8)  # a face that is clearly not the original
    paste_swapped_face(frame, swapped, matrix, original_crop=None)

    assert frame.shape == before.shape and frame.dtype == np.uint8
    changed = np.any(frame != before, axis=2)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = _bounds(matrix, CROP, frame.shape)
    assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
    # the face centre is replaced, the frame corners are untouched
    cx, cy = _landmarks().mean(0).astype(int)
    assert np.abs(frame[cy, cx].astype(int) - before[cy, cx].astype(int)).sum() > 10
    assert np.array_equal(frame[:20, :20], before[:20, :20])


def test_pasting_the_unchanged_crop_leaves_the_frame_nearly_unchanged():
    frame = _frame()
    before = frame.copy()
    crop, matrix = align_face(frame, _landmarks(), CROP, MARGIN)
    paste_swapped_face(frame, crop, matrix, original_crop=crop)
    diff = np.abs(frame.astype(int) - before.astype(int))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 12  # interpolation only


def test_colour_transfer_moves_the_swapped_face_to_the_original_colours():
    rng = np.random.default_rng(1)
    source = np.clip(rng.normal((60, 60, 160), 10, (*CROP, 3)), 0, 255).astype(np.uint8)  # reddish
    reference = np.clip(rng.normal((150, 120, 90), 10, (*CROP, 3)), 0, 255).astype(np.uint8)  # bluish
    out = color_transfer(source, reference, face_mask(*CROP))
    assert out.shape == source.shape and out.dtype == np.uint8
    assert np.abs(out.mean((0, 1)) - reference.mean((0, 1))).max() < 12
    assert np.abs(source.mean((0, 1)) - reference.mean((0, 1))).max() > 50


def test_mask_is_feathered_and_zero_at_the_crop_border():
    mask = face_mask(*CROP)
    assert mask.max() == pytest.approx(1.0, abs=0.02) and mask[0].max() == 0 and mask[:, -1].max() == 0
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 50  # a soft edge, not a hard cut


def test_face_partly_or_wholly_outside_the_frame_is_handled():
    frame = _frame()
    before = frame.copy()
    crop = np.full((*CROP, 3), 255, np.uint8)
    paste_swapped_face(frame, crop, alignment_matrix(_landmarks(center=(5, 5)), CROP, MARGIN))
    assert frame.shape == before.shape and not np.array_equal(frame, before)
    assert np.array_equal(frame[200:, 200:], before[200:, 200:])
    frame2 = before.copy()
    paste_swapped_face(frame2, crop, alignment_matrix(_landmarks(center=(5000, 5000)), CROP, MARGIN))
    assert np.array_equal(frame2, before)


def test_bad_shapes_are_refused():
    frame = _frame()
    matrix = alignment_matrix(_landmarks(), CROP, MARGIN)
    with pytest.raises(ValueError):
        paste_swapped_face(frame[..., 0], np.zeros((*CROP, 3), np.uint8), matrix)
    with pytest.raises(ValueError):
        paste_swapped_face(frame, np.zeros((*CROP, 3), np.uint8), matrix, original_crop=np.zeros((32, 32, 3), np.uint8))


@pytest.mark.skipif(not (DATA / "real" / "face_recognition_examples" / "two_people.jpg").is_file(),
                    reason="needs ../shared/data (or $DFSTREAM_DATA) with real/face_recognition_examples/two_people.jpg")
def test_paste_into_a_real_photo_touches_only_the_detected_face(monkeypatch):
    if (DATA / "models").is_dir() and not os.environ.get("DFSTREAM_MODELS"):
        monkeypatch.setenv("DFSTREAM_MODELS", str(DATA / "models"))
    from stages.faces import FaceCropper, default_detect_config

    path = DATA / "real" / "face_recognition_examples" / "two_people.jpg"
    face = FaceCropper(default_detect_config(CROP, MARGIN)).crops_from_image(path, max_faces=1, keep_frames=True)[0]
    frame = face.frame.copy()
    before = frame.copy()
    swapped = cv2.flip(face.crop, 1)  # a different face image of the right size
    paste_swapped_face(frame, swapped, alignment_matrix(face.landmarks, CROP, MARGIN), face.crop)
    changed = np.any(frame != before, axis=2)
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    assert changed.any()
    assert xs.min() >= x1 - w and xs.max() <= x2 + w and ys.min() >= y1 - h and ys.max() <= y2 + h
