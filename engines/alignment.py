"""5-point face alignment: the crops every dfstream model is trained and run on.

The template is insightface's ArcFace 5-point layout (eyes, nose tip, mouth
corners on a 112 x 112 canvas), scaled to the model's input size.  ``margin``
zooms the template out: a deepfake detector needs the face *boundary* in view,
because that is where blending leaves its traces, so detector models use a
margin above 1.  The margin is part of each model's metadata.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from pipeline import pictures

ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template_points(size: tuple[int, int], margin: float = 1.0) -> np.ndarray:
    """Where the 5 landmarks land in a crop of ``size`` = (height, width)."""
    height, width = size
    points = ARCFACE_TEMPLATE_112 / 112.0 * np.array([width, height])
    center = np.array([width / 2.0, height / 2.0])
    return (points - center) / margin + center


def alignment_matrix(landmarks: np.ndarray, size: tuple[int, int], margin: float = 1.0) -> np.ndarray:
    """2 x 3 similarity transform taking frame coordinates to crop coordinates."""
    src = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    transform = SimilarityTransform.from_estimate(src, template_points(size, margin))
    if not transform:
        # Degenerate landmarks (all on one point): fall back to a box-centred scale.
        center = src.mean(axis=0)
        scale = size[1] / max(float(np.ptp(src[:, 0])) * 3.0, 1.0)
        return np.array([[scale, 0, size[1] / 2 - scale * center[0]], [0, scale, size[0] / 2 - scale * center[1]]])
    return transform.params[:2]


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The crop of ``size`` = (height, width) that ``matrix`` (frame -> crop) cuts from ``image``."""
    return cv2.warpAffine(image, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def align_face(image: np.ndarray, landmarks, size: tuple[int, int], margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Cut the aligned crop for one face; returns (crop, matrix frame->crop)."""
    matrix = alignment_matrix(np.asarray(landmarks), size, margin)
    return warp_crop(image, matrix, size), matrix


def crop_footprint(matrix: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The frame box (x1, y1, x2, y2) a crop's pixels are sampled from, with a pixel to spare
    for interpolation: cutting the crop from just this box gives the same crop."""
    height, width = size
    inverse = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64) @ inverse.T
    return (corners[:, 0].min() - 2, corners[:, 1].min() - 2, corners[:, 0].max() + 2, corners[:, 1].max() + 2)


def shift_matrix(matrix: np.ndarray, origin) -> np.ndarray:
    """``matrix`` (frame -> crop) for a region of the frame whose top-left corner is ``origin``."""
    shifted = np.array(matrix, dtype=np.float64)
    shifted[:, 2] += shifted[:, :2] @ np.asarray(origin, dtype=np.float64)
    return shifted


def align_faces(image: np.ndarray, landmarks_list, size: tuple[int, int], margin: float = 1.0) -> np.ndarray:
    """Crops for several faces of one frame as one N x H x W x 3 array."""
    crops = np.empty((len(landmarks_list), size[0], size[1], 3), dtype=np.uint8)
    for i, landmarks in enumerate(landmarks_list):
        crops[i], _ = align_face(image, landmarks, size, margin)
    return crops


def face_polygon(landmarks: np.ndarray, scale: float = 1.0, chin: float = 1.0, brow: float = 1.0) -> np.ndarray:
    """A face-region polygon (K x 2) from 5 landmarks (left eye, right eye, nose, left mouth, right mouth)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_l, eye_r, nose, mouth_l, mouth_r = lm
    eyes = (eye_l + eye_r) / 2
    mouth = (mouth_l + mouth_r) / 2
    down = mouth - eyes
    d = max(np.linalg.norm(down), 1.0)
    down /= d
    right = eye_r - eye_l
    w = max(np.linalg.norm(right), 1.0)
    right /= w
    centre = (eyes + mouth) / 2
    pts = [
        eye_l - 0.55 * w * right - 0.55 * d * brow * down,  # brows
        eye_r + 0.55 * w * right - 0.55 * d * brow * down,
        eyes - 0.75 * d * brow * down,  # forehead centre
        eye_l - 0.75 * w * right + 0.15 * d * down,  # temples / cheeks
        eye_r + 0.75 * w * right + 0.15 * d * down,
        mouth_l - 0.55 * w * right + 0.1 * d * down,  # jaw
        mouth_r + 0.55 * w * right + 0.1 * d * down,
        mouth_l - 0.25 * w * right + 0.65 * d * chin * down,  # chin
        mouth_r + 0.25 * w * right + 0.65 * d * chin * down,
        mouth + 0.8 * d * chin * down,
        nose,
    ]
    pts = np.asarray(pts)
    pts = centre + (pts - centre) * scale
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)


def cut_crops(image: np.ndarray, pixel_format: str, matrices, size: tuple[int, int]) -> np.ndarray:
    """The N x H x W x 3 BGR crops that frame -> crop ``matrices`` cut from a frame message's picture
    (:mod:`pipeline.pictures`), converting only the part of it they come from; the same crops as
    cutting from the whole BGR frame."""
    crops = np.empty((len(matrices), size[0], size[1], 3), dtype=np.uint8)
    if not len(matrices):
        return crops
    footprints = np.array([crop_footprint(m, size) for m in matrices])
    box = (*footprints[:, :2].min(axis=0), *footprints[:, 2:].max(axis=0))
    region = pictures.read_region(image, pixel_format, box, write_back=False)
    if region is None:  # every crop lies outside the frame: sample its border, as warping the whole frame does
        width, height = pictures.frame_size(image, pixel_format)
        region = pictures.read_region(image, pixel_format, (0, 0, width, height), write_back=False)
    for index, matrix in enumerate(matrices):
        crops[index] = warp_crop(region.bgr, shift_matrix(matrix, region.origin), size)
    return crops
