"""Self-blended images: the fake differs from its source only inside the blend mask."""
import numpy as np
import pytest

from engines.alignment import template_points
from train.sbi import face_mask, face_polygon, self_blend


def _face(size=160, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return img, template_points((size, size), 1.8)


@pytest.mark.parametrize("seed", range(8))
def test_self_blend_changes_pixels_only_inside_the_mask(seed):
    img, lm = _face(seed=seed)
    fake, mask = self_blend(img, lm, np.random.default_rng(seed), return_mask=True)
    changed = np.any(fake != img, axis=2)
    assert changed.any(), "a self-blended fake must differ from its source"
    assert not (changed & (mask <= 0)).any(), "pixels outside the mask changed"
    assert fake.shape == img.shape and fake.dtype == np.uint8


def test_face_mask_covers_the_landmarks_and_not_the_corners():
    img, lm = _face()
    mask = face_mask(img.shape, lm)
    for x, y in lm:
        assert mask[int(y), int(x)] > 0.9
    for y, x in ((0, 0), (0, 159), (159, 0), (159, 159)):
        assert mask[y, x] == 0


def test_face_polygon_reaches_below_the_mouth_and_above_the_eyes():
    _, lm = _face()
    poly = face_polygon(lm)
    assert poly[:, 1].max() > lm[3:, 1].max() + 10  # chin
    assert poly[:, 1].min() < lm[:2, 1].min() - 10  # brows


def test_self_blend_is_reproducible_with_a_seeded_generator():
    img, lm = _face()
    a = self_blend(img, lm, np.random.default_rng(42))
    b = self_blend(img, lm, np.random.default_rng(42))
    c = self_blend(img, lm, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
