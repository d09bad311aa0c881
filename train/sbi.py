"""Self-blended images (SBI): fake faces made from real faces alone.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images"
(CVPR 2022).  A face is blended onto itself: the *source* copy gets a small
colour / sharpness change and a small shift and scale, then it is pasted back
over the untouched *target* (the original image) inside a soft face-region mask.
The result carries what most face swaps leave behind -- a blending boundary, a
colour and sharpness mismatch between the inner face and its surroundings, a
slight misregistration -- without any particular generator's fingerprint, which
is why detectors trained on it generalise across generators.

The face region comes from 68 landmarks when the caller has them
(:mod:`engines.landmarks`): as in the paper, one of several hulls -- the whole
face, the face extended up the forehead, the inner face without the jaw line, the
lower face (what reenactment re-renders), or the eyes, nose and mouth as separate
parts.  With YuNet's 5 landmarks alone (eyes, nose tip, mouth corners) it is a
convex polygon fitted to them and extended up to the brows, out to the cheeks and
down to the chin.  Either way it is then randomly deformed, eroded/dilated and
blurred.

Everything here works on one image (uint8 BGR, H x W x 3) with its landmarks
in that image's coordinates -- in practice a wide-margin aligned crop from the
face cache, so the blend boundary lies well inside the final model crop.
"""
from __future__ import annotations

import cv2
import numpy as np

from engines.alignment import face_polygon
from engines.landmarks import BROWS, JAW, LEFT_EYE, MOUTH, NOSE, RIGHT_EYE

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
CURRICULUM_START = 2.0  # the first blends' strength when a curriculum is asked for
DENSE_HULLS = ("face", "extended", "inner", "lower", "parts")
# inside the face's own contour: without the forehead hull, which reaches into hair and background
INSIDE_HULLS = ("face", "inner", "lower", "parts")


def dense_polygons(points: np.ndarray, hull: str = "face") -> list[np.ndarray]:
    """Convex face-region polygons from 68 landmarks; ``hull`` is one of :data:`DENSE_HULLS`."""
    p = np.asarray(points, np.float64).reshape(68, 2)
    if hull == "face":
        parts = [p[:27]]
    elif hull == "extended":  # the brows lifted by most of the brow-to-nose-tip height: the forehead too
        lift = p[30] - p[BROWS].mean(axis=0)
        parts = [np.concatenate([p[JAW], p[BROWS] - 0.6 * lift])]
    elif hull == "inner":
        parts = [p[17:]]
    elif hull == "lower":  # below the eyes: what Face2Face / NeuralTextures re-render
        parts = [np.concatenate([p[2:15], p[29:36], p[MOUTH]])]
    elif hull == "parts":
        parts = [np.concatenate([p[17:22], p[LEFT_EYE]]), np.concatenate([p[22:27], p[RIGHT_EYE]]), p[NOSE], p[MOUTH]]
    else:
        raise ValueError(f"unknown hull {hull!r}: expected one of {', '.join(DENSE_HULLS)}")
    return [cv2.convexHull(part.astype(np.float32)).reshape(-1, 2) for part in parts]


def face_mask(shape: tuple[int, int], landmarks: np.ndarray, rng: np.random.Generator | None = None,
              dense: np.ndarray | None = None, inside: bool = False) -> np.ndarray:
    """Soft face-region mask in [0, 1] (float32, H x W), randomly deformed when ``rng`` is given.
    ``dense``: 68 landmarks; the region is then one of their hulls (random with ``rng``, else the face).
    ``inside`` (with ``rng``): the soft edge stays within the hull -- no forehead hull, the region
    eroded by the blurs' reach -- so no seam crosses the face's contour into hair or background."""
    h, w = shape[:2]
    if dense is not None:
        hulls = INSIDE_HULLS if inside else DENSE_HULLS
        polys = dense_polygons(dense, str(rng.choice(hulls)) if rng is not None else "face")
    elif rng is None:
        polys = [face_polygon(landmarks)]
    else:
        polys = [face_polygon(landmarks, scale=rng.uniform(0.85, 1.1), chin=rng.uniform(0.8, 1.15), brow=rng.uniform(0.7, 1.2))]
    if rng is not None:
        # per-vertex jitter: an irregular hull, like a landmark-hull with noise
        size = np.ptp(np.concatenate(polys), axis=0).mean()
        polys = [poly + rng.normal(0, (0.03 if dense is None else 0.015) * size, poly.shape) for poly in polys]
    mask = np.zeros((h, w), np.float32)
    for poly in polys:
        cv2.fillConvexPoly(mask, np.round(poly).astype(np.int32), 1.0)
    if rng is None:
        k = max(3, (int(0.05 * w) // 2) * 2 + 1)
        return cv2.GaussianBlur(mask, (k, k), 0)
    if inside:
        return _blurred_inside(mask, rng)
    # SBI-style deformation: erode or dilate, then blur with two random kernels
    r = int(rng.integers(0, max(2, w // 40)))
    if r:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        changed = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
        mask = changed if changed.any() else mask  # a small part may erode away: the fake must differ
    return _soften(mask, _blur_kernels(w, rng))


def _blur_kernels(width: int, rng: np.random.Generator) -> list[int]:
    """The two random Gaussian kernel sizes that soften a blend mask's edge."""
    return [int(rng.integers(1, max(3, width // 12))) * 2 + 1 for _ in range(2)]


def _soften(mask: np.ndarray, kernels: list[int]) -> np.ndarray:
    """Blur with each kernel in turn, rescaled so the mask's core stays at 1."""
    for k in kernels:
        mask = cv2.GaussianBlur(mask, (k, k), 0)
        mask = np.clip(mask / max(mask.max(), 1e-6), 0, 1)
    return mask


def _blurred_inside(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The SBI deformation (erode, two random blurs) with the region first eroded by the blurs'
    reach (two sigmas each, as OpenCV sizes a kernel's sigma), then cut to the region: the soft
    edge ends inside it, at under 2 % of full strength.  Never an empty mask: a region too small
    for the erosion is blurred from its own outline."""
    w = region.shape[1]
    kernels = _blur_kernels(w, rng)
    reach = int(rng.integers(0, max(2, w // 40))) + sum(round(2 * (0.3 * ((k - 1) * 0.5 - 1) + 0.8)) for k in kernels)
    shrunk = cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
    return _soften(shrunk if shrunk.any() else region, kernels) * region


def _color_jitter(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    x = img.astype(np.float32)
    if rng.random() < 0.8:  # brightness / contrast
        x = (x - 128) * rng.uniform(1 - 0.15 * strength, 1 + 0.15 * strength) + 128 + rng.uniform(-20 * strength, 20 * strength)
    if rng.random() < 0.6:  # per-channel shift
        x = x + rng.uniform(-15 * strength, 15 * strength, size=3)
    x = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # hue / saturation
        hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV).astype(np.int16)
        hue = int(round(6 * strength))
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-hue, hue + 1))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength), 0, 255)
        x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    return x


def _sharpness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random()
    if u < 0.35:
        k = int(rng.integers(1, 3)) * 2 + 1
        return cv2.GaussianBlur(img, (k, k), 0)
    if u < 0.6:
        blur = cv2.GaussianBlur(img, (0, 0), 1.0)
        return cv2.addWeighted(img, 1.0 + rng.uniform(0.3, 1.0), blur, -rng.uniform(0.3, 1.0), 0)
    if u < 0.75:  # down-up resampling, as a generator's output resolution does
        h, w = img.shape[:2]
        f = rng.uniform(0.4, 0.8)
        small = cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def _small_affine(img: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    h, w = img.shape[:2]
    lm = np.asarray(landmarks).reshape(5, 2)
    face = max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]), 8.0)
    centre = lm.mean(axis=0)
    sx = rng.uniform(1 - 0.05 * strength, 1 + 0.05 * strength)
    sy = sx * rng.uniform(1 - 0.03 * strength, 1 + 0.03 * strength)
    tx, ty = rng.uniform(-0.04 * strength, 0.04 * strength, 2) * face
    m = np.array([[sx, 0, (1 - sx) * centre[0] + tx], [0, sy, (1 - sy) * centre[1] + ty]], np.float64)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def curriculum_strength(step: int, steps: int, start: float = CURRICULUM_START) -> float:
    """Blend strength at ``step`` of a curriculum of ``steps``: from ``start`` down to 1, linearly."""
    if steps <= 0:
        return 1.0
    return 1.0 + (start - 1.0) * max(0.0, 1.0 - step / steps)


def self_blend(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator | None = None,
               return_mask: bool = False, dense: np.ndarray | None = None, strength: float = 1.0,
               inside: bool = False):
    """One self-blended fake from a real face image (uint8 BGR) and its 5 landmarks
    (and its 68 landmarks, ``dense``, when known: they shape the blend mask).

    ``strength`` > 1 makes an easier fake for the start of training: the colour change,
    shift and scale of the source are that many times as large and the blend ratio too
    (at most 1).  At 1 the random draws, and so the fakes, are those of the plain recipe.
    ``inside``: keep the blend's soft edge within the face hull (:func:`face_mask`).

    The target is the image itself, unchanged: the output equals the input wherever
    the blend mask is 0.  Returns the fake (and the blend mask, H x W float32, if asked).
    """
    rng = rng if rng is not None else np.random.default_rng()
    source = image
    # at least one visible change, so the label is never a lie
    for _ in range(3):
        source = _color_jitter(source, rng, strength) if rng.random() < 0.7 else source
        source = _sharpness(source, rng)
        if rng.random() < 0.7:
            source = _small_affine(source, landmarks, rng, strength)
        if source is not image:
            break
    if source is image:
        source = _color_jitter(image, rng, strength)
    mask = face_mask(image.shape, landmarks, rng, dense, inside=inside) * min(1.0, float(rng.choice(BLEND_RATIOS)) * strength)
    m = mask[..., None]
    fake = source.astype(np.float32) * m + image.astype(np.float32) * (1.0 - m)
    fake = np.clip(fake + 0.5, 0, 255).astype(np.uint8)
    # where the mask is exactly 0 keep the original bytes (no rounding drift)
    fake[mask <= 0] = image[mask <= 0]
    return (fake, mask) if return_mask else fake
