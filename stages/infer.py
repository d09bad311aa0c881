"""Infer stage: run the detector (or the swapper) on batches of aligned crops, and
with eye landmarks on, read each face's eye opening on its crop (engines.blinks).

The stage knows models only through the ``engines`` interface: whether the
batch runs on TensorRT, ONNX Runtime or torch is the engine's business.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from engines.alignment import alignment_matrix
from engines.blinks import eye_aspect_ratio
from engines.metadata import KIND_DETECTOR, KIND_SWAPPER
from pipeline.config import InferConfig
from pipeline.messages import Packet, StageTiming
from pipeline.stage import Stage, StageError


class InferStage(Stage):
    name = "infer"

    def __init__(self, config: InferConfig):
        self.config = config
        self.engine = None
        self.detector = None  # swap mode with a detector: scores the swapped faces
        self.landmarker = None  # engines.landmarks.DenseLandmarker, with eye landmarks on
        self.faces = 0
        self.batches = 0

    def open(self) -> None:
        from engines.loader import MODEL_ERRORS, load_engine

        cfg = self.config
        kind = KIND_SWAPPER if cfg.mode == "swap" else KIND_DETECTOR
        try:
            if cfg.swap_source:
                from stages.faces import load_inswapper

                self.engine = load_inswapper(cfg.model_path, cfg.embedder_path, list(cfg.swap_source), threads=cfg.threads)
            else:
                self.engine = load_engine(cfg.model_path, engine=cfg.engine, threads=cfg.threads, kind=kind)
            if cfg.mode == "swap" and cfg.detector_path:
                self.detector = load_engine(cfg.detector_path, engine=cfg.engine, threads=cfg.threads, kind=KIND_DETECTOR)
        except MODEL_ERRORS as exc:
            raise StageError(str(exc)) from None
        if cfg.eye_landmarks:
            from engines.landmarks import create_landmarker

            try:
                self.landmarker = create_landmarker(cfg.eye_landmarks, threads=cfg.threads or 1)
            except (OSError, ValueError) as exc:  # not installed (ModelNotFoundError), damaged, not a landmark model
                raise StageError(f"eye landmarks: {exc}") from None

    def process(self, packet: Packet) -> list[Packet]:
        started = time.time()
        with_crops = [m for m in packet if m.crops is not None and len(m.crops)]
        if with_crops:
            crops = np.concatenate([m.crops for m in with_crops])
            if self.config.mode == "swap":
                self._swap(with_crops, crops)
            else:
                self._score(with_crops, self.engine.run(crops))
                if self.landmarker is not None:
                    self._read_eyes(with_crops)
            self.faces += len(crops)
            self.batches += 1
        ended = time.time()
        for message in packet:
            message.timings.append(StageTiming(self.name, started, ended))
        return [packet]

    def _score(self, messages, scores: np.ndarray) -> None:
        metadata = self.engine.metadata
        offset = 0
        for message in messages:
            for face in message.faces:
                if face.crop_index >= 0:
                    if metadata.scorable(face.box, message.crops[face.crop_index]):
                        face.fake_score = float(scores[offset + face.crop_index])
                    else:  # a score from a face this small or blurred would be a guess
                        face.unscorable = True
            offset += len(message.crops)

    def _read_eyes(self, messages) -> None:
        """Each cropped face's eye aspect ratio, read on its aligned crop (a similarity transform keeps
        the eyes' proportions, and the crop is BGR whatever the frame's pixel format), the whole batch
        in one run of the landmark model."""
        metadata = self.engine.metadata
        crops, points, faces = [], [], []
        for message in messages:
            for face in message.faces:
                if face.crop_index < 0:
                    continue
                matrix = alignment_matrix(np.asarray(face.landmarks), metadata.input_size, metadata.crop_margin)
                points.append(np.asarray(face.landmarks, np.float64) @ matrix[:, :2].T + matrix[:, 2])
                crops.append(message.crops[face.crop_index])
                faces.append(face)
        for face, points68 in zip(faces, self.landmarker.predict_each(crops, points)):
            face.eye_opening = eye_aspect_ratio(points68)

    def _swap(self, messages, crops: np.ndarray) -> None:
        swapped = self.engine.run(crops)
        offset = 0
        for message in messages:
            count = len(message.crops)
            message.crops = np.ascontiguousarray(swapped[offset:offset + count])
            for face in message.faces:
                face.swapped = face.crop_index >= 0
            offset += count
        if self.detector is not None:
            self._score_swapped(messages)

    def _score_swapped(self, messages) -> None:
        """The detector's view of each swapped face: its own aligned crop of the frame
        with the swapped face blended in, exactly as the viewer will see it."""
        from engines.alignment import alignment_matrix, cut_crops
        from engines.blending import paste_swap
        from pipeline.pictures import BGR24

        swap_meta, detect_meta = self.engine.metadata, self.detector.metadata
        views, owners = [], []
        for message in messages:
            for face in message.faces:
                if face.crop_index < 0:
                    continue
                landmarks = np.asarray(face.landmarks)
                to_detector = alignment_matrix(landmarks, detect_meta.input_size, detect_meta.crop_margin)
                view = cut_crops(message.image, message.pixel_format, [to_detector], detect_meta.input_size)[0]
                to_swapper = alignment_matrix(landmarks, swap_meta.input_size, swap_meta.crop_margin)
                # detector-crop coordinates -> swapper-crop coordinates
                detector_to_swapper = _compose(to_swapper, cv2.invertAffineTransform(to_detector))
                paste_swap(view, BGR24, message.crops[face.crop_index], detector_to_swapper)
                views.append(view)
                owners.append(face)
        if views:
            for face, score in zip(owners, self.detector.run(np.stack(views))):
                face.fake_score = float(score)

    def stats(self) -> dict:
        return {"faces": self.faces, "batches": self.batches, "engine": self.engine.describe() if self.engine else ""}

    def close(self) -> None:
        for engine in (self.engine, self.detector):
            if engine is not None:
                engine.close()


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine ``outer`` applied after 2x3 affine ``inner``."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]
