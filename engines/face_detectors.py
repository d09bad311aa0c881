"""Face detectors: image -> boxes, confidences and 5 landmarks.

- ``yunet``: YuNet (the default). The dynamic-input export runs through ONNX
  Runtime with its outputs decoded here, as OpenCV decodes them; a fixed-size
  export (OpenCV Zoo's ``face_detection_yunet_2023mar.onnx``) runs through
  ``cv2.FaceDetectorYN``, which reshapes it. Same weights, but OpenCV's DNN
  module took 2.6x the CPU per 640x360 frame on our 2-core VM (29 vs 11 ms);
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

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    def scaled(self, factor: float) -> "DetectedFace":
        return DetectedFace(tuple(v * factor for v in self.box), self.score, self.landmarks * factor)


class FaceDetector(ABC):
    name: str = ""

    @abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        """Faces in a BGR image, in that image's pixel coordinates."""

    def detect_downscaled(self, image: np.ndarray, max_side: int, pixel_format: str = "bgr24") -> list[DetectedFace]:
        """Detect on a BGR copy no larger than ``max_side`` (faster), report full-size coordinates.
        ``image`` is a BGR picture or, with ``pixel_format="yuv420p"``, an I420 one (pipeline.pictures)."""
        from pipeline.pictures import downscaled_bgr

        small, factor = downscaled_bgr(image, pixel_format, max_side)
        return [face.scaled(factor) for face in self.detect(small)]


class YuNetDetector(FaceDetector):
    """YuNet through OpenCV's DNN module (fixed-size exports)."""

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


class YuNetOnnxDetector(FaceDetector):
    """YuNet's dynamic-input export through ONNX Runtime.

    The network is anchor-free: for each stride it scores every grid cell and
    regresses a box and 5 landmarks relative to it. Decoding and NMS follow
    OpenCV's ``FaceDetectorYN`` so both runtimes find the same faces.
    """

    name = "yunet"
    STRIDES = (8, 16, 32)

    def __init__(self, model_path: str | Path, min_score: float = 0.6, nms_threshold: float = 0.3, top_k: int = 50,
                 threads: int | None = None):
        import onnxruntime as ort

        from engines.onnxruntime_engine import model_source, session_options

        try:
            self._session = ort.InferenceSession(model_source(model_path), sess_options=session_options(threads),
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise FaceDetectorError(f"{model_path} is not an ONNX model ONNX Runtime can load ({exc})") from None
        self._input_name = self._session.get_inputs()[0].name
        self._output_names = [o.name for o in self._session.get_outputs()]
        expected = {f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in self.STRIDES}
        if not expected <= set(self._output_names):
            raise FaceDetectorError(f"{model_path} is not a YuNet face detector model (outputs {self._output_names})")
        self._min_score = min_score
        self._nms_threshold = nms_threshold
        self._top_k = top_k
        self._padded: np.ndarray | None = None

    def detect(self, image_bgr):
        height, width = image_bgr.shape[:2]
        # The strides need sides divisible by 32: pad bottom and right with black, as OpenCV does.
        # The input is kept from call to call (a fresh 3 MB array costs its page faults each time).
        shape = (1, 3, -(-height // 32) * 32, -(-width // 32) * 32)
        if self._padded is None or self._padded.shape != shape:
            self._padded = np.zeros(shape, np.float32)
        padded = self._padded
        padded[0, :, :height, :width] = image_bgr.transpose(2, 0, 1)
        padded[0, :, height:, :] = 0
        padded[0, :, :height, width:] = 0
        outputs = dict(zip(self._output_names, self._session.run(None, {self._input_name: padded})))
        boxes, scores, landmarks = [], [], []
        for stride in self.STRIDES:
            score = np.sqrt(np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1) * np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1))
            cells = np.nonzero(score >= self._min_score)[0]
            if not len(cells):
                continue
            row, col = np.divmod(cells, padded.shape[3] // stride)
            origin = np.column_stack([col, row]).astype(np.float64)
            box = outputs[f"bbox_{stride}"][0, cells].astype(np.float64)
            centre = (origin + box[:, :2]) * stride
            size = np.exp(box[:, 2:]) * stride
            boxes.append(np.column_stack([centre - size / 2, size]))  # x, y, w, h
            kps = outputs[f"kps_{stride}"][0, cells].astype(np.float64).reshape(-1, 5, 2)
            landmarks.append((kps + origin[:, None, :]) * stride)
            scores.append(score[cells])
        if not boxes:
            return []
        boxes, scores, landmarks = np.concatenate(boxes), np.concatenate(scores), np.concatenate(landmarks)
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self._min_score, self._nms_threshold, top_k=self._top_k)
        faces = []
        for i in np.ravel(keep):
            x, y, w, h = boxes[i]
            faces.append(DetectedFace((x, y, x + w, y + h), float(scores[i]), landmarks[i]))
        return faces


def has_dynamic_input(model_path: str | Path) -> bool:
    """Whether an ONNX model's input height and width are left open (symbolic).

    Asked of ONNX Runtime, which the detector loads anyway (``import onnx`` alone takes
    1.7 s of a stage's start-up); a small face detector loads in milliseconds."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise FaceDetectorError(f"{model_path} is not an ONNX model ({exc.__class__.__name__})") from None
    dims = session.get_inputs()[0].shape
    return len(dims) == 4 and not (isinstance(dims[2], int) and isinstance(dims[3], int))


class ScrfdDetector(FaceDetector):
    """SCRFD or RetinaFace ONNX files, decoded by insightface's model zoo."""

    name = "scrfd"

    def __init__(self, model_path: str | Path, min_score: float = 0.5, input_size: tuple[int, int] = (640, 640),
                 threads: int | None = None):
        from insightface.model_zoo import get_model

        from engines.onnxruntime_engine import session_options

        model = get_model(str(model_path), providers=["CPUExecutionProvider"], sess_options=session_options(threads))
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


def create_face_detector(kind: str, model_path: str | Path | None, min_score: float = 0.6,
                         threads: int | None = None) -> FaceDetector:
    """Build the face detector ``kind`` ("yunet", "scrfd", "haar"); ``threads``: ONNX Runtime
    intra-op threads (None or 0: one per usable core)."""
    if kind == "haar":
        return HaarDetector()
    if model_path is None:
        raise FaceDetectorError(f"the {kind} face detector needs a model file")
    if not Path(model_path).is_file():
        raise FaceDetectorError(f"face detector model not found: {model_path}")
    if kind == "yunet":
        if has_dynamic_input(model_path):
            return YuNetOnnxDetector(model_path, min_score=min_score, threads=threads)
        return YuNetDetector(model_path, min_score=min_score)
    if kind == "scrfd":
        return ScrfdDetector(model_path, min_score=min_score, threads=threads)
    raise FaceDetectorError(f"unknown face detector {kind!r} (expected yunet, scrfd or haar)")
