"""Face detectors: image -> boxes, confidences and 5 landmarks.

- ``yunet``: OpenCV's YuNet through ``cv2.FaceDetectorYN`` (the default);
- ``scrfd``: SCRFD / RetinaFace ONNX files through insightface's model zoo;
- ``haar``: OpenCV's Haar cascade, shipped inside opencv-python 4.x, so it needs
  no model file; it finds no landmarks, so they are placed from the box with the
  alignment template (coarser crops, but the pipeline still runs).

All return landmarks in insightface's order: the eye, then the mouth corner, that
appear on the *left of the image* come first.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.alignment import ARCFACE_TEMPLATE_112


class FaceDetectorError(RuntimeError):
    """A face detector that cannot be created from what was given."""


@dataclass
class DetectedFace:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # 5 x 2

    def scaled(self, factor: float) -> "DetectedFace":
        return DetectedFace(tuple(v * factor for v in self.box), self.score, self.landmarks * factor)


class FaceDetector(ABC):
    name: str = ""

    @abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        """Faces in a BGR image, in that image's pixel coordinates."""

    def detect_downscaled(self, image_bgr: np.ndarray, max_side: int) -> list[DetectedFace]:
        """Detect on a copy no larger than ``max_side`` (faster), report full-size coordinates."""
        height, width = image_bgr.shape[:2]
        factor = max(height, width) / float(max_side)
        if factor <= 1.0:
            return self.detect(image_bgr)
        small = cv2.resize(image_bgr, (round(width / factor), round(height / factor)), interpolation=cv2.INTER_AREA)
        return [face.scaled(factor) for face in self.detect(small)]


class YuNetDetector(FaceDetector):
    name = "yunet"

    def __init__(self, model_path: str | Path, min_score: float = 0.6, nms_threshold: float = 0.3, top_k: int = 50):
        try:
            self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), min_score, nms_threshold, top_k)
        except cv2.error as exc:
            raise FaceDetectorError(f"{model_path} is not a YuNet face detector model") from exc
        self._size = (320, 320)

    def detect(self, image_bgr):
        height, width = image_bgr.shape[:2]
        if (width, height) != self._size:
            self._net.setInputSize((width, height))
            self._size = (width, height)
        _, rows = self._net.detect(image_bgr)
        faces = []
        for row in rows if rows is not None else []:
            x, y, w, h = (float(v) for v in row[:4])
            faces.append(DetectedFace((x, y, x + w, y + h), float(row[14]), row[4:14].reshape(5, 2).astype(np.float64)))
        return faces


class ScrfdDetector(FaceDetector):
    """SCRFD or RetinaFace ONNX files, decoded by insightface's model zoo."""

    name = "scrfd"

    def __init__(self, model_path: str | Path, min_score: float = 0.5, input_size: tuple[int, int] = (640, 640)):
        from insightface.model_zoo import get_model

        from engines.onnxruntime_engine import session_options

        model = get_model(str(model_path), providers=["CPUExecutionProvider"], sess_options=session_options())
        if model is None or not hasattr(model, "detect"):
            raise FaceDetectorError(f"{model_path} is not a face detector insightface recognises")
        model.prepare(ctx_id=-1, input_size=input_size, det_thresh=min_score)
        self._model = model

    def detect(self, image_bgr):
        boxes, keypoints = self._model.detect(image_bgr)
        faces = []
        for i, row in enumerate(boxes):
            landmarks = keypoints[i].astype(np.float64) if keypoints is not None else _landmarks_from_box(row[:4])
            faces.append(DetectedFace(tuple(float(v) for v in row[:4]), float(row[4]), landmarks))
        return faces


class HaarDetector(FaceDetector):
    name = "haar"

    def __init__(self, min_neighbors: int = 5):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FaceDetectorError(f"OpenCV's Haar cascade is missing ({path}); install opencv-python 4.x")
        self._min_neighbors = min_neighbors

    def detect(self, image_bgr):
        gray = cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))
        min_side = max(24, min(gray.shape) // 20)
        rects, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=self._min_neighbors, minSize=(min_side, min_side), outputRejectLevels=True
        )
        faces = []
        for (x, y, w, h), weight in zip(rects, np.ravel(weights) if len(rects) else []):
            box = (float(x), float(y), float(x + w), float(y + h))
            score = float(1.0 / (1.0 + np.exp(-(weight - 2.0))))  # cascade level weight -> (0, 1)
            faces.append(DetectedFace(box, score, _landmarks_from_box(box)))
        return faces


def _landmarks_from_box(box) -> np.ndarray:
    """Average landmark positions inside a tight frontal face box (Haar boxes)."""
    x1, y1, x2, y2 = box
    # The ArcFace template spans roughly x 0.2..0.8 and y 0.3..0.95 of a Haar box.
    unit = (ARCFACE_TEMPLATE_112 - [38.0, 40.0]) / [36.0, 62.0]
    return np.column_stack([x1 + (0.3 + 0.4 * unit[:, 0]) * (x2 - x1), y1 + (0.3 + 0.55 * unit[:, 1]) * (y2 - y1)])


def create_face_detector(kind: str, model_path: str | Path | None, min_score: float = 0.6) -> FaceDetector:
    """Build the face detector ``kind`` ("yunet", "scrfd", "haar")."""
    if kind == "haar":
        return HaarDetector()
    if model_path is None:
        raise FaceDetectorError(f"the {kind} face detector needs a model file")
    if not Path(model_path).is_file():
        raise FaceDetectorError(f"face detector model not found: {model_path}")
    if kind == "yunet":
        return YuNetDetector(model_path, min_score=min_score)
    if kind == "scrfd":
        return ScrfdDetector(model_path, min_score=min_score)
    raise FaceDetectorError(f"unknown face detector {kind!r} (expected yunet, scrfd or haar)")
