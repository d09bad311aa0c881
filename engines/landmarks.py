"""Dense (68-point) facial landmarks from a face's 5 detector landmarks.

Used by training: self-blended fakes (:mod:`train.sbi`) are blended inside a mask
drawn from 68 landmarks -- the jaw line, brows, eyes, nose and mouth -- as in the SBI
paper, instead of a polygon guessed from YuNet's 5 points; and for the eyes' opening,
whose closings are blinks (:mod:`engines.blinks`), offline and in the infer stage.

The model is a third-party ONNX file without dfstream metadata, so what it
expects (how the face is boxed, how pixels are scaled) is its registry entry's
:class:`LandmarkInput`, like a timm per-weight config; its input size is read
from the ONNX file itself.  Points come back in iBUG 300-W order: 0-16 jaw,
17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engines.registry import LandmarkInput, get_entry, resolve

JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE = slice(27, 36)
LEFT_EYE = slice(36, 42)  # the eye on the left of the image
RIGHT_EYE = slice(42, 48)
MOUTH = slice(48, 68)


def five_point_scale(landmarks5: np.ndarray) -> float:
    """Distance from the midpoint of the eyes to the midpoint of the mouth corners."""
    lm = np.asarray(landmarks5, np.float64).reshape(5, 2)
    return float(max(np.linalg.norm((lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2), 1.0))


def five_from_dense(points: np.ndarray) -> np.ndarray:
    """The 5 detector-style landmarks (eye centres, nose tip, mouth corners) of 68 points."""
    p = np.asarray(points, np.float64).reshape(68, 2)
    return np.array([p[LEFT_EYE].mean(0), p[RIGHT_EYE].mean(0), p[30], p[48], p[54]])


class DenseLandmarker:
    """ONNX Runtime landmark model: (image, 5 landmarks per face) -> N x points x 2."""

    def __init__(self, model_path: str | Path, spec: LandmarkInput, threads: int | None = 1):
        import onnxruntime as ort

        from engines.onnxruntime_engine import model_source, session_options

        options = session_options(threads)
        options.log_severity_level = 3  # the exported file lists its weights as inputs; ORT warns once per tensor
        self.session = ort.InferenceSession(model_source(model_path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        height, width = self.input.shape[2:]
        if not isinstance(height, int) or not isinstance(width, int):
            raise ValueError(f"{model_path}: landmark model input size is not fixed ({self.input.shape})")
        self.size = (height, width)
        self.spec = spec
        coords = [o.name for o in self.session.get_outputs() if o.shape and o.shape[-1] == 2 * spec.points]
        if not coords:
            raise ValueError(f"{model_path}: no output of {2 * spec.points} values ({spec.points} points)")
        self.output = coords[0]

    def _box(self, landmarks5: np.ndarray) -> tuple[np.ndarray, float]:
        lm = np.asarray(landmarks5, np.float64).reshape(5, 2)
        side = self.spec.box_scale * five_point_scale(lm)
        return lm.mean(axis=0) - side / 2, side

    def predict(self, image_bgr: np.ndarray, faces_landmarks5: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Dense landmarks (N x points x 2, image coordinates) of the faces in one image."""
        faces_landmarks5 = list(faces_landmarks5)
        return self.predict_each([image_bgr] * len(faces_landmarks5), faces_landmarks5)

    def predict_each(self, images_bgr: list[np.ndarray], faces_landmarks5: list[np.ndarray]) -> np.ndarray:
        """Dense landmarks (N x points x 2, each in its own image's coordinates) of one face in each of N
        images (the aligned crops of a batch), in one run of the model."""
        if not len(faces_landmarks5):
            return np.zeros((0, self.spec.points, 2), np.float32)
        height, width = self.size
        patches, boxes = [], []
        for image_bgr, lm in zip(images_bgr, faces_landmarks5):
            origin, side = self._box(lm)
            m = np.array([[width / side, 0, -origin[0] * width / side], [0, height / side, -origin[1] * height / side]])
            patches.append(cv2.warpAffine(image_bgr, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
            boxes.append((origin, side))
        x = np.asarray(patches, np.float32)
        if self.spec.rgb:
            x = x[..., ::-1]
        x = (x * self.spec.pixel_scale - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
        out = self.session.run([self.output], {self.input.name: x})[0]
        points = out.reshape(len(x), self.spec.points, 2).astype(np.float64)
        result = np.stack([p * side + origin for p, (origin, side) in zip(points, boxes)])
        return result.astype(np.float32)


def create_landmarker(name: str, threads: int | None = 1) -> DenseLandmarker:
    """The registered landmark model ``name``, resolved (and verified) like any named model."""
    entry = get_entry(name)
    if entry.landmark_input is None:
        raise ValueError(f"model {name!r} is not a landmark model")
    return DenseLandmarker(resolve(name), entry.landmark_input, threads=threads)
