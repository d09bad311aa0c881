"""Paste a swapped face crop back into its frame: inverse alignment, feathered mask, colour transfer.

The swapper works on aligned crops; the frame needs the result where the face was.
:func:`paste_swapped_face` warps the crop back through the inverse of the alignment
transform, but only over the face's bounding region of the frame (a 1080p frame
with a 60-pixel face costs a 60-pixel warp, not a full-frame one), blends it in with
an elliptical mask feathered in proportion to the face size, and first moves the
swapped crop's colours to those of the original face (Reinhard: per-channel mean
and standard deviation in LAB, measured inside the mask), so skin tone and lighting
match the scene.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from engines.alignment import crop_footprint, shift_matrix, warp_crop
from pipeline import pictures


@lru_cache(maxsize=16)
def face_mask(height: int, width: int, feather: float = 0.12) -> np.ndarray:
    """float32 H x W mask in [0, 1]: an ellipse over the face, feathered towards the crop border.

    Cached per crop size (read-only array)."""
    mask = np.zeros((height, width), np.float32)
    center = (int(round(width / 2)), int(round(height * 0.54)))
    axes = (int(width * 0.40), int(height * 0.46))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1)
    erode = max(1, int(feather * width / 2))
    mask = cv2.erode(mask, np.ones((erode, erode), np.uint8))
    blur = max(3, int(feather * width) | 1)
    mask = cv2.GaussianBlur(mask, (blur, blur), 0)
    mask[:1], mask[-1:], mask[:, :1], mask[:, -1:] = 0, 0, 0, 0  # never touch the crop's own border
    mask.setflags(write=False)
    return mask


def color_transfer(source: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Reinhard colour transfer: give uint8 BGR ``source`` the LAB mean/std of ``reference`` (inside ``mask``)."""
    src = cv2.cvtColor(source, cv2.COLOR_BGR2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_BGR2LAB).astype(np.float32)
    select = (mask > 0.5) if mask is not None else np.ones(src.shape[:2], bool)
    if select.sum() < 16:
        select = np.ones(src.shape[:2], bool)
    s, r = src[select], ref[select]
    s_mean, s_std = s.mean(0), s.std(0) + 1e-3
    r_mean, r_std = r.mean(0), r.std(0) + 1e-3
    scale = np.clip(r_std / s_std, 0.5, 2.0)  # a flat or saturated crop must not explode
    out = (src - s_mean) * scale + r_mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def paste_swapped_face(
    frame: np.ndarray,
    crop: np.ndarray,
    matrix_frame_to_crop: np.ndarray,
    original_crop: np.ndarray | None = None,
) -> None:
    """Blend the swapped ``crop`` (uint8 BGR, aligned by ``matrix_frame_to_crop``) into ``frame`` in place.

    ``original_crop``: the aligned crop the swapper was given; the swapped face takes its
    colours first (without it, the original face is cut from ``frame`` again).  Pixels outside the face's bounding region are never
    written; the frame keeps its shape and dtype.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected H x W x 3 frame and crop, got {frame.shape} and {crop.shape}")
    height, width = crop.shape[:2]
    mask = face_mask(height, width)
    matrix = np.asarray(matrix_frame_to_crop, dtype=np.float64).reshape(2, 3)
    if original_crop is None:  # the frame still holds the original face: cut it again (crop-sized, cheap)
        original_crop = warp_crop(frame, matrix, (height, width))
    if original_crop.shape != crop.shape:
        raise ValueError(f"original crop {original_crop.shape} and swapped crop {crop.shape} differ in shape")
    crop = color_transfer(crop, original_crop, mask)

    inverse = cv2.invertAffineTransform(matrix)
    # The crop's footprint in the frame bounds everything the paste can touch.
    left, top, right, bottom = crop_footprint(matrix, (height, width))
    frame_h, frame_w = frame.shape[:2]
    x0, y0 = max(int(np.floor(left)), 0), max(int(np.floor(top)), 0)
    x1, y1 = min(int(np.ceil(right)), frame_w), min(int(np.ceil(bottom)), frame_h)
    if x1 <= x0 or y1 <= y0:
        return  # the face lies outside the frame
    roi_w, roi_h = x1 - x0, y1 - y0
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)  # warp straight into the region's own coordinates
    warped = cv2.warpAffine(crop, shifted, (roi_w, roi_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, shifted, (roi_w, roi_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = alpha[..., None]
    region = frame[y0:y1, x0:x1]
    blended = warped.astype(np.float32) * alpha + region.astype(np.float32) * (1.0 - alpha)
    region[...] = np.clip(blended + 0.5, 0, 255).astype(frame.dtype)


def paste_swap(image: np.ndarray, pixel_format: str, crop: np.ndarray, matrix_frame_to_crop: np.ndarray) -> None:
    """:func:`paste_swapped_face` into a frame message's picture (I420 or BGR, :mod:`pipeline.pictures`)
    in place, converting only the region the crop covers.  Every swap is pasted back through
    here: into the output frame (annotate) and into the detector's view of it (infer's self-check)."""
    size = crop.shape[:2]
    region = pictures.read_region(image, pixel_format, crop_footprint(matrix_frame_to_crop, size))
    if region is not None:
        paste_swapped_face(region.bgr, crop, shift_matrix(matrix_frame_to_crop, region.origin))
        pictures.write_region(image, pixel_format, region)
