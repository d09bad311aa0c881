"""Self-blended images: the fake differs from its source only inside the blend mask."""
import cv2
import numpy as np
import pytest

from engines.alignment import template_points
from train.sbi import DENSE_HULLS, dense_polygons, face_mask, face_polygon, self_blend


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


def _dense_face(size=224):
    """A synthetic 68-point layout (jaw arc, brows, nose, eyes, mouth) around the image centre."""
    c, r = size / 2, size / 4
    jaw = [(c + r * np.cos(t), c + r * np.sin(t)) for t in np.linspace(np.pi * 0.95, np.pi * 0.05, 17)]
    brows = [(c - r * 0.8 + i * r * 0.18, c - r * 0.6) for i in range(10)]
    nose = [(c, c - r * 0.4 + i * r * 0.1) for i in range(4)] + [(c - r * 0.2 + i * r * 0.1, c + r * 0.05) for i in range(5)]
    eye = lambda x: [(x + r * 0.15 * np.cos(t), c - r * 0.35 + r * 0.07 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    mouth = [(c + r * 0.35 * np.cos(t), c + r * 0.45 + r * 0.12 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 20, endpoint=False)]
    points = np.array(jaw + brows + nose + eye(c - r * 0.4) + eye(c + r * 0.4) + mouth, np.float64)
    assert points.shape == (68, 2)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8), points


@pytest.mark.parametrize("hull", DENSE_HULLS)
def test_each_dense_hull_covers_its_own_landmarks_and_not_the_image_corners(hull):
    img, points = _dense_face()
    polys = dense_polygons(points, hull)
    mask = np.zeros(img.shape[:2], np.uint8)
    for poly in polys:
        cv2.fillConvexPoly(mask, np.round(poly).astype(np.int32), 1)
    assert mask[int(points[30, 1]), int(points[30, 0])] or hull == "parts" and mask[int(points[33, 1]), int(points[33, 0])]
    assert mask[int(points[62, 1]), int(points[62, 0])] or hull == "parts"  # inside the mouth
    assert not mask[0, 0] and not mask[-1, -1]
    if hull == "lower":  # below the eyes only
        assert not mask[int(points[19, 1]), int(points[19, 0])]
    if hull == "extended":  # the forehead, above the brows
        assert mask[int(points[19, 1]) - 10, int(points[19, 0])]


@pytest.mark.parametrize("seed", range(10))
def test_self_blend_with_dense_landmarks_changes_pixels_only_inside_the_mask(seed):
    img, points = _dense_face()
    from engines.landmarks import five_from_dense

    fake, mask = self_blend(img, five_from_dense(points), np.random.default_rng(seed), return_mask=True, dense=points)
    changed = np.any(fake != img, axis=2)
    assert changed.any(), "a self-blended fake must differ from its source"
    assert not (changed & (mask <= 0)).any()
    # the mask follows the dense hull: nothing far outside the face's 68 points is blended
    x0, y0 = points.min(0) - 40
    x1, y1 = points.max(0) + 40
    outside = np.ones_like(mask, bool)
    outside[int(max(y0, 0)):int(y1), int(max(x0, 0)):int(x1)] = False
    assert not (mask[outside] > 0).any()


def test_strength_one_is_the_plain_blend_and_a_stronger_blend_changes_the_face_more():
    img, lm = _face(seed=3)
    img = cv2.GaussianBlur(img, (0, 0), 4)  # smooth, like skin: the colour change is what shows
    plain, stronger = [], []
    for seed in range(30):
        default = self_blend(img, lm, np.random.default_rng(seed))
        assert np.array_equal(default, self_blend(img, lm, np.random.default_rng(seed), strength=1.0))
        plain.append(np.abs(default.astype(np.int16) - img).mean())
        stronger.append(np.abs(self_blend(img, lm, np.random.default_rng(seed), strength=2.0).astype(np.int16) - img).mean())
    assert np.mean(stronger) > 1.5 * np.mean(plain)


def test_the_curriculum_eases_the_blends_to_the_plain_ones_for_training_only():
    from train.datasets import FaceDataset
    from train.sbi import curriculum_strength

    assert [curriculum_strength(step, 1000) for step in (0, 250, 500, 1000, 4000)] == [2.0, 1.75, 1.5, 1.0, 1.0]
    assert curriculum_strength(0, 0) == 1.0  # 0 steps: no curriculum
    img, lm = _face(seed=4)
    cached = {"crops": img[None], "landmarks": lm[None].astype(np.float32), "labels": np.zeros(1, np.int64)}
    blend = 1  # the index of the face's self-blend: (face 0, kind 0), then (face 0, kind 2)
    for train, differs in ((True, True), (False, False)):
        dataset = FaceDataset(cached, (64, 64), 1.4, train=train)
        plain = dataset[blend][0]
        dataset.blend_strength = 2.0
        assert np.array_equal(plain, dataset[blend][0]) != differs  # validation blends stay plain


def test_inside_blends_keep_their_soft_edge_within_the_face_contour():
    img, points = _dense_face()
    from engines.landmarks import five_from_dense

    hull = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, np.round(cv2.convexHull(points.astype(np.float32))).astype(np.int32), 1)
    # the hull's vertices are jittered by 1.5 % of the face size (under 2 px here): allow 4 sigma
    near = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))).astype(bool)
    plain_outside = 0
    for seed in range(20):
        mask = face_mask(img.shape, five_from_dense(points), np.random.default_rng(seed), dense=points, inside=True)
        assert mask.max() > 0.99, "an inside mask must still blend something"
        assert not (mask[~near] > 0).any(), f"seed {seed}: the inside mask crossed the face contour"
        plain = face_mask(img.shape, five_from_dense(points), np.random.default_rng(seed), dense=points)
        plain_outside += bool((plain[~near] > 0).any())
    assert plain_outside >= 10  # the plain masks do cross it: the option changes something


def test_the_dataset_passes_inside_to_its_blends_and_leaves_the_real_faces_alone():
    from train.datasets import FaceDataset

    img, points = _dense_face()
    from engines.landmarks import five_from_dense

    cached = {"crops": img[None], "landmarks": five_from_dense(points)[None].astype(np.float32),
              "labels": np.zeros(1, np.int64), "dense": points[None].astype(np.float32)}
    plain, inside = (FaceDataset(cached, (96, 96), 1.4, train=False, inside=flag) for flag in (False, True))
    real, blend = 0, 1  # (face 0, kind 0), then its self-blend (face 0, kind 2)
    assert np.array_equal(plain[real][0], inside[real][0])
    assert not np.array_equal(plain[blend][0], inside[blend][0])
