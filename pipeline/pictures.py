"""The picture a frame message carries, and the BGR views of it that stages use.

Frames travel between stages in the decoder's own layout, planar YUV 4:2:0 (I420,
``yuv420p``): half the bytes of BGR on every hop, and no colour conversion in the
source or in the sink's encoder.  The stages that need BGR convert only what they
use: the face detector a downscaled copy, crops and drawing the region around a
face.  Frames with an odd width or height, which 4:2:0 cannot hold exactly, travel
as BGR (``bgr24``); every function here takes either.

An I420 picture is one ``(H * 3 / 2) x W`` uint8 array, as PyAV's
``VideoFrame.to_ndarray(format="yuv420p")`` returns it: the Y plane, then U, then V.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BGR24 = "bgr24"
YUV420P = "yuv420p"
PIXEL_FORMATS = (BGR24, YUV420P)


def check_format(pixel_format: str) -> str:
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"unknown pixel format {pixel_format!r} (expected one of {', '.join(PIXEL_FORMATS)})")
    return pixel_format


def wire_format(width: int, height: int) -> str:
    """The format a decoded frame of this size travels in."""
    return YUV420P if width % 2 == 0 and height % 2 == 0 else BGR24


def frame_size(image: np.ndarray, pixel_format: str) -> tuple[int, int]:
    """(width, height) of the picture."""
    if check_format(pixel_format) == YUV420P:
        return image.shape[1], image.shape[0] * 2 // 3
    return image.shape[1], image.shape[0]


def planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of an I420 picture's Y (H x W), U and V (H/2 x W/2) planes; writable if ``image`` is."""
    width, height = image.shape[1], image.shape[0] * 2 // 3
    flat = image.reshape(-1)
    luma = width * height
    chroma = luma // 4
    return (flat[:luma].reshape(height, width),
            flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2))


def _stack_i420(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    height, width = y.shape
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(height * 3 // 2, width)


def to_bgr(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """The whole picture as H x W x 3 BGR (a BGR picture is returned as it is)."""
    if check_format(pixel_format) == BGR24:
        return image
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)


def turned(image: np.ndarray, pixel_format: str, quarter_turns: int) -> np.ndarray:
    """The picture turned counter-clockwise by ``quarter_turns`` x 90 degrees (a new array).
    I420 planes are turned one by one: no colour conversion, and the result is I420 again."""
    quarter_turns %= 4
    if quarter_turns == 0:
        return image
    if check_format(pixel_format) == BGR24:
        return np.ascontiguousarray(np.rot90(image, quarter_turns))
    return _stack_i420(*(np.rot90(plane, quarter_turns) for plane in planes(image)))


def downscaled_bgr(image: np.ndarray, pixel_format: str, max_side: int) -> tuple[np.ndarray, float]:
    """A BGR copy no larger than ``max_side``, and the factor that takes its coordinates back
    to the picture's.  I420 planes are shrunk before converting, so only the small copy is."""
    width, height = frame_size(image, pixel_format)
    factor = max(width, height) / float(max_side)
    if factor <= 1.0:
        return to_bgr(image, pixel_format), 1.0
    if pixel_format == BGR24:
        size = (round(width / factor), round(height / factor))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), width / size[0]
    # even sizes, so the small copy is I420 too; the factor follows the width
    small_w, small_h = max(2, 2 * round(width / factor / 2)), max(2, 2 * round(height / factor / 2))
    y, u, v = planes(image)
    small = _stack_i420(cv2.resize(y, (small_w, small_h), interpolation=cv2.INTER_AREA),
                        cv2.resize(u, (small_w // 2, small_h // 2), interpolation=cv2.INTER_AREA),
                        cv2.resize(v, (small_w // 2, small_h // 2), interpolation=cv2.INTER_AREA))
    return cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420), width / small_w


@dataclass
class Region:
    """A rectangle of a picture as BGR, with where it sits: x0, y0 (inclusive), x1, y1 (exclusive)."""

    bgr: np.ndarray
    x0: int
    y0: int
    x1: int
    y1: int
    as_read: np.ndarray | None = None  # I420 pictures: the converted pixels before any drawing

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.x0, self.y0], dtype=np.float64)


def _bounds(box, width: int, height: int, even: bool) -> tuple[int, int, int, int] | None:
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    if even:  # 4:2:0 regions start and end on whole chroma samples
        x0, y0 = x0 - x0 % 2, y0 - y0 % 2
        x1, y1 = min(x1 + x1 % 2, width), min(y1 + y1 % 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def read_region(image: np.ndarray, pixel_format: str, box, write_back: bool = True) -> Region | None:
    """The part of the picture inside ``box`` (x1, y1, x2, y2, clipped to the frame) as BGR,
    or None when the box lies outside it.  A BGR picture gives a view: drawing on it draws on
    the picture.  An I420 picture gives a converted copy: hand it back with :func:`write_region`
    (``write_back=False``: it will only be read, so nothing is kept to tell what changed)."""
    width, height = frame_size(image, pixel_format)
    bounds = _bounds(box, width, height, even=pixel_format == YUV420P)
    if bounds is None:
        return None
    x0, y0, x1, y1 = bounds
    if pixel_format == BGR24:
        return Region(image[y0:y1, x0:x1], x0, y0, x1, y1)
    y, u, v = planes(image)
    cut = _stack_i420(y[y0:y1, x0:x1], u[y0 // 2:y1 // 2, x0 // 2:x1 // 2], v[y0 // 2:y1 // 2, x0 // 2:x1 // 2])
    bgr = cv2.cvtColor(cut, cv2.COLOR_YUV2BGR_I420)
    return Region(bgr, x0, y0, x1, y1, as_read=bgr.copy() if write_back else None)


def write_region(image: np.ndarray, pixel_format: str, region: Region) -> None:
    """Put a region read with :func:`read_region` (and drawn on) back into the picture.

    Only the pixels that were changed are written (for I420, the chroma samples they share):
    YUV -> BGR -> YUV is not exact for saturated colours, and a box drawn round a face must
    leave the face itself as it was."""
    if pixel_format == BGR24:
        if not np.shares_memory(region.bgr, image):
            image[region.y0:region.y1, region.x0:region.x1] = region.bgr
        return
    if region.as_read is None:
        raise ValueError("this region was read with write_back=False")
    height, width = region.bgr.shape[:2]
    # OpenCV for the masks: numpy's reductions over 3 channels or 2 x 2 blocks cost 10x more
    difference = cv2.transform(cv2.absdiff(region.bgr, region.as_read), np.ones((1, 3), np.float32))
    if not cv2.countNonZero(difference):
        return
    changed = difference > 0
    changed_chroma = cv2.resize(changed.view(np.uint8), (width // 2, height // 2), interpolation=cv2.INTER_AREA) > 0
    new_y, new_u, new_v = planes(cv2.cvtColor(region.bgr, cv2.COLOR_BGR2YUV_I420))
    y, u, v = planes(image)
    x0, y0, x1, y1 = region.x0, region.y0, region.x1, region.y1
    np.copyto(y[y0:y1, x0:x1], new_y, where=changed)
    np.copyto(u[y0 // 2:y1 // 2, x0 // 2:x1 // 2], new_u, where=changed_chroma)
    np.copyto(v[y0 // 2:y1 // 2, x0 // 2:x1 // 2], new_v, where=changed_chroma)


def draw_rectangle(image: np.ndarray, pixel_format: str, corner1: tuple[int, int], corner2: tuple[int, int],
                   colour_bgr: tuple[int, int, int], thickness: int) -> None:
    """``cv2.rectangle`` (an outline) on the picture itself: on I420 the outline is drawn into each
    plane, chroma at half size, so the pixels inside a face's box are never converted."""
    if pixel_format == BGR24:
        cv2.rectangle(image, corner1, corner2, colour_bgr, thickness)
        return
    colour = planes(cv2.cvtColor(np.full((2, 2, 3), colour_bgr, np.uint8), cv2.COLOR_BGR2YUV_I420))
    y, u, v = planes(image)
    cv2.rectangle(y, corner1, corner2, int(colour[0][0, 0]), thickness)
    half1, half2 = (corner1[0] // 2, corner1[1] // 2), (corner2[0] // 2, corner2[1] // 2)
    for plane, value in ((u, colour[1][0, 0]), (v, colour[2][0, 0])):
        cv2.rectangle(plane, half1, half2, int(value), max(1, thickness // 2))
