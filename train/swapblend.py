"""Swap blends: fakes made the way real-time face swappers build a frame, from real faces alone.

A live swapper (inswapper in most live face-swap apps, DeepFaceLive's models) renders
*another person's* face at a low resolution (64-256 px across the aligned face),
matches its colours to the target, pastes it over the inner face with a soft mask, and the
frame is then compressed as a stream.  :func:`swap_blend` does the same with a real face
of another person standing in for the generator's output:

1. the donor face is warped onto the target's 5 landmarks (a similarity transform),
2. resampled down and up to a generator's resolution, and sometimes smoothed as a
   generator's skin is (edge-preserving filter),
3. given the target's colour statistics inside the face (LAB mean/std, as swappers do),
4. blended over the target inside a soft inner-face mask (:func:`train.sbi.face_mask`).

Real and fake come from the same source frames, so the capture (camera, codec, light)
is never the cue; the stream compression is the augmentation both labels share
(:func:`train.datasets.augment`).  Unlike a self-blend (:mod:`train.sbi`), the inner face
changes identity and texture, not only colour and registration.
"""
from __future__ import annotations

import cv2
import numpy as np

from engines.blending import color_transfer
from train.sbi import face_mask

RESOLUTION_SCALES = (0.3, 1.0)  # the donor's down-up resampling factor: a 64-128 px generator on our crops
SMOOTH_SHARE = 0.4  # of swaps whose face is also smoothed as a generator renders skin


def warp_donor(donor: np.ndarray, donor_landmarks: np.ndarray, target_landmarks: np.ndarray,
               shape: tuple[int, int]) -> np.ndarray:
    """The donor image warped so that its 5 landmarks land on the target's (similarity transform)."""
    m, _ = cv2.estimateAffinePartial2D(np.asarray(donor_landmarks, np.float32).reshape(5, 2),
                                       np.asarray(target_landmarks, np.float32).reshape(5, 2), method=cv2.LMEDS)
    if m is None:
        raise ValueError("landmarks too degenerate to align the donor face")
    return cv2.warpAffine(donor, m, (shape[1], shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def swap_blend(target: np.ndarray, target_landmarks: np.ndarray, donor: np.ndarray, donor_landmarks: np.ndarray,
               rng: np.random.Generator, dense: np.ndarray | None = None, return_mask: bool = False):
    """One swap-blended fake: ``donor``'s face (another person; uint8 BGR with its 5 landmarks) rendered
    into ``target`` (uint8 BGR, its 5 landmarks and, when known, its 68 ``dense`` ones, which shape
    the mask).  The output equals the target wherever the mask is 0."""
    h, w = target.shape[:2]
    face = warp_donor(donor, donor_landmarks, target_landmarks, (h, w))
    f = rng.uniform(*RESOLUTION_SCALES)
    small = cv2.resize(face, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
    face = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR)
    if rng.random() < SMOOTH_SHARE:
        face = cv2.bilateralFilter(face, 5, rng.uniform(20, 50), rng.uniform(2, 4))
    mask = face_mask(target.shape, target_landmarks, rng, dense, inside=True)
    face = color_transfer(face, target, mask)
    m = mask[..., None]
    fake = np.clip(face.astype(np.float32) * m + target.astype(np.float32) * (1.0 - m) + 0.5, 0, 255).astype(np.uint8)
    fake[mask <= 0] = target[mask <= 0]
    return (fake, mask) if return_mask else fake
