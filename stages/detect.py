"""Detect stage: find faces and cut aligned crops for the model.

Each frame is handled on its own, so detect replicas can share frames in any
order.  Faces are found on the frames the source marked ``to_detect``, on a
downscaled copy; crops are cut from those marked ``to_classify``.  Carrying
boxes across the frames in between (tracking) needs frames in order, so it
happens after the reorder point, in the annotate stage.
"""
from __future__ import annotations

import time

import numpy as np

from engines.alignment import align_faces
from engines.face_detectors import FaceDetector, FaceDetectorError, create_face_detector
from pipeline.config import DetectConfig
from pipeline.messages import Face, FrameMessage, Packet, StageTiming
from pipeline.stage import Stage, StageError


class DetectStage(Stage):
    name = "detect"

    def __init__(self, config: DetectConfig):
        self.config = config
        self.detector: FaceDetector | None = None
        self.faces_found = 0

    def open(self) -> None:
        cfg = self.config
        try:
            self.detector = create_face_detector(cfg.face_detector, cfg.face_detector_path, cfg.min_face_score,
                                                 threads=cfg.threads)
        except FaceDetectorError as exc:
            raise StageError(str(exc)) from None

    def process(self, packet: Packet) -> list[Packet]:
        for message in packet:
            self.process_frame(message)
        return [packet]

    def process_frame(self, message: FrameMessage, force: bool = False) -> FrameMessage:
        """Detect (and crop) on this frame if the source asked for it, or if ``force``."""
        started = time.time()
        cfg = self.config
        if force or message.to_detect:
            message.faces = self.find_faces(message.image)
            message.detected = True
            if force or message.to_classify:
                self.cut_crops(message)
        if not cfg.keep_image:
            message.image = None
        message.timings.append(StageTiming(self.name, started, time.time()))
        return message

    def find_faces(self, image: np.ndarray) -> list[Face]:
        cfg = self.config
        found = self.detector.detect_downscaled(image, cfg.detect_max_side)
        found = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= cfg.min_face_size]
        found.sort(key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
        self.faces_found += min(len(found), cfg.max_faces)
        return [
            Face(box=tuple(f.box), score=f.score, landmarks=[tuple(p) for p in f.landmarks.tolist()])
            for f in found[: cfg.max_faces]
        ]

    def cut_crops(self, message: FrameMessage) -> None:
        cfg = self.config
        if not message.faces:
            message.analysed = True
            return
        message.crops = align_faces(message.image, [f.landmarks for f in message.faces], tuple(cfg.crop_size), cfg.crop_margin)
        for index, face in enumerate(message.faces):
            face.crop_index = index
        message.analysed = True

    def takes_bypass(self, message: FrameMessage) -> bool:
        return message.crops is None  # nothing for the batch and infer stages

    def stats(self) -> dict:
        return {"faces": self.faces_found}
