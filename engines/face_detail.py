"""How much fine detail an aligned face crop holds: the blur half of "too small or blurred to judge".

A face shot out of focus, smeared by motion or upscaled from a few pixels has lost the fine
texture every detector looks at; a score for it would be a guess. :func:`face_detail` measures
that texture so the model's metadata can set a floor (``ModelMetadata.min_face_detail``, set
by ``dfstream calibrate`` from validation faces: see :mod:`train.detail_floor`).

A face smoother than the picture around it is another matter: that is what a pasted face looks
like (a swapper's low-resolution render, a lip-sync model's mouth) and what the default detector
judges. So a face under the floor is still scored where the rest of its crop -- hair, ears,
collar, background -- holds detail (:func:`surroundings_detail`, ``min_surroundings_detail``):
only a picture blurred all over is too blurred to judge.
"""
from __future__ import annotations

import cv2
import numpy as np

# added to the contrast so that a flat, dark crop (sensor noise over nothing) does not read as detailed
CONTRAST_FLOOR = 4.0


# the grey level is the mean of the three channels (as float32, not the integer luma a colour
# conversion would round to); cv2.transform computes it in one pass, 14x faster than numpy's mean
_CHANNEL_MEAN = np.full((1, 3), 1.0 / 3.0, np.float32)


def _grey(crop: np.ndarray) -> np.ndarray:
    grey = crop.astype(np.float32)
    return cv2.transform(grey, _CHANNEL_MEAN) if grey.ndim == 3 else grey


def _spread(grey: np.ndarray, laplacian: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The measure itself: the Laplacian's spread over the grey levels' (plus the contrast floor),
    over the pixels ``mask`` keeps (all: None)."""
    laplacian_std = cv2.meanStdDev(laplacian, mask=mask)[1][0, 0]
    grey_std = cv2.meanStdDev(grey, mask=mask)[1][0, 0]
    return float(laplacian_std / (grey_std + CONTRAST_FLOOR))


def face_detail(crop: np.ndarray) -> float:
    """The spread of the Laplacian over the contrast, in the inner half of an aligned crop.

    ``crop``: H x W x 3 (any channel order) or H x W, uint8. The inner half is the face itself
    for every crop margin the models use, not the background around it. Dimensionless: a
    change of brightness leaves it, one of contrast barely moves it (the contrast floor);
    it falls steeply as the face is blurred or upscaled from fewer pixels."""
    grey = _grey(crop)
    h, w = grey.shape
    inner = grey[h // 4: h - h // 4, w // 4: w - w // 4]
    return _spread(inner, cv2.Laplacian(inner, cv2.CV_32F, ksize=1))


def surroundings_detail(crop: np.ndarray) -> float:
    """The same measure over the rest of the crop: the frame around the inner half, less the crop's
    outermost pixels (where the Laplacian reads the border's reflection)."""
    grey = _grey(crop)
    h, w = grey.shape
    ring = np.zeros((h, w), np.uint8)
    ring[1:-1, 1:-1] = 1
    ring[h // 4: h - h // 4, w // 4: w - w // 4] = 0
    return _spread(grey, cv2.Laplacian(grey, cv2.CV_32F, ksize=1), ring)
