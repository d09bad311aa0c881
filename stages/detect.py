"""Detect stage: find faces and cut aligned crops for the model.

Each frame is handled on its own, so detect replicas can share frames in any
order.  Faces are found on the frames the source marked ``to_detect``, on a
downscaled copy; crops are cut from those marked ``to_classify``.  Carrying
boxes across the frames in between (tracking) needs frames in order, so it
happens after the reorder point, in the annotate stage.  With video output, a frame
with crops leaves in two parts: its picture straight to annotate, its crops through
batch and infer, so the picture is not carried through two stages that never look
at it; annotate joins the parts.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from engines.alignment import alignment_matrix, cut_crops
from engines.face_detectors import FaceDetector, FaceDetectorError, create_face_detector
from pipeline import pictures
from pipeline.config import DetectConfig
from pipeline.messages import PICTURE_PART, SCORES_PART, Face, FrameMessage, Packet, StageTiming
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
        out = []
        for message in packet:
            self.process_frame(message)
            if self.config.split_frames and message.crops is not None and message.image is not None:
                # the picture goes round batch and infer (takes_bypass), the crops through them
                out.append([replace(message, crops=None, part=PICTURE_PART)])
                out.append([replace(message, image=None, part=SCORES_PART)])
            else:
                out.append([message])
        return out

    def process_frame(self, message: FrameMessage, force: bool = False) -> FrameMessage:
        """Detect (and crop) on this frame if the source asked for it, or if ``force``."""
        started = time.time()
        cfg = self.config
        if force or message.to_detect:
            message.faces = self.find_faces(message.image, message.pixel_format)
            message.detected = True
            if force or message.to_classify:
                self.cut_crops(message)
        if not cfg.keep_image:
            message.image = None
        message.timings.append(StageTiming(self.name, started, time.time()))
        return message

    def find_faces(self, image: np.ndarray, pixel_format: str = pictures.BGR24) -> list[Face]:
        cfg = self.config
        width, height = pictures.frame_size(image, pixel_format)
        # a face cut by the frame's edge gets a box that reaches past it: keep boxes inside the
        # frame (events and drawing); landmarks stay where the detector put them, for alignment
        found = self.detector.detect_downscaled(image, cfg.detect_max_side, pixel_format)
        found = [replace(f, box=_inside(f.box, width, height)) for f in found]
        found = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= cfg.min_face_size]
        found.sort(key=lambda f: f.area, reverse=True)
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
        size = tuple(cfg.crop_size)
        matrices = [alignment_matrix(np.asarray(f.landmarks), size, cfg.crop_margin) for f in message.faces]
        message.crops = cut_crops(message.image, message.pixel_format, matrices, size)
        for index, face in enumerate(message.faces):
            face.crop_index = index
        message.analysed = True

    def takes_bypass(self, message: FrameMessage) -> bool:
        return message.crops is None  # nothing for the batch and infer stages

    def stats(self) -> dict:
        return {"faces": self.faces_found}


def _inside(box, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
