"""Infer stage: run the detector (or the swapper) on batches of aligned crops.

The stage knows models only through the ``engines`` interface: whether the
batch runs on TensorRT, ONNX Runtime or torch is the engine's business.
"""
from __future__ import annotations

import time

import numpy as np

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
        self.faces = 0
        self.batches = 0

    def open(self) -> None:
        from engines.loader import MODEL_ERRORS, load_engine

        cfg = self.config
        kind = KIND_SWAPPER if cfg.mode == "swap" else KIND_DETECTOR
        try:
            self.engine = load_engine(cfg.model_path, engine=cfg.engine, threads=cfg.threads, kind=kind)
            if cfg.mode == "swap" and cfg.detector_path:
                self.detector = load_engine(cfg.detector_path, engine=cfg.engine, threads=cfg.threads, kind=KIND_DETECTOR)
        except MODEL_ERRORS as exc:
            raise StageError(str(exc)) from None

    def process(self, packet: Packet) -> list[Packet]:
        started = time.time()
        with_crops = [m for m in packet if m.crops is not None and len(m.crops)]
        if with_crops:
            crops = np.concatenate([m.crops for m in with_crops])
            if self.config.mode == "swap":
                self._swap(with_crops, crops)
            else:
                self._score(with_crops, self.engine.run(crops))
            self.faces += len(crops)
            self.batches += 1
        ended = time.time()
        for message in packet:
            message.timings.append(StageTiming(self.name, started, ended))
        return [packet]

    def _score(self, messages, scores: np.ndarray) -> None:
        offset = 0
        for message in messages:
            for face in message.faces:
                if face.crop_index >= 0:
                    face.fake_score = float(scores[offset + face.crop_index])
            offset += len(message.crops)

    def _swap(self, messages, crops: np.ndarray) -> None:
        swapped = self.engine.run(crops)
        scores = self.detector.run(swapped) if self.detector is not None else None
        offset = 0
        for message in messages:
            count = len(message.crops)
            message.crops = np.ascontiguousarray(swapped[offset:offset + count])
            for face in message.faces:
                if face.crop_index >= 0:
                    face.swapped = True
                    if scores is not None:
                        face.fake_score = float(scores[offset + face.crop_index])
            offset += count

    def stats(self) -> dict:
        return {"faces": self.faces, "batches": self.batches, "engine": self.engine.describe() if self.engine else ""}

    def close(self) -> None:
        for engine in (self.engine, self.detector):
            if engine is not None:
                engine.close()
