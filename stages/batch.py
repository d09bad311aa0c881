"""Batch stage: gather face crops across frames and streams into model-sized batches.

A batch leaves when it holds ``max_batch`` faces, or ``timeout_ms`` after its
first face arrived -- whichever comes first -- so a quiet stream never waits for
a busy one.  In a live run it also leaves once every live stream has a frame in
it: no more faces can come before the next frame interval.  Frames with no crops to classify are passed on at once.
"""
from __future__ import annotations

import time

from pipeline.config import BatchConfig
from pipeline.messages import FrameMessage, Packet, StageTiming
from pipeline.stage import Stage


class BatchStage(Stage):
    name = "batch"

    def __init__(self, config: BatchConfig):
        self.config = config
        self.pending: list[FrameMessage] = []
        self.pending_faces = 0
        self.first_face_at: float | None = None
        self.batches_sent = 0
        self.faces_sent = 0

    def process(self, packet: Packet) -> list[Packet]:
        out: list[Packet] = []
        for message in packet:
            started = time.time()
            faces = 0 if message.crops is None else len(message.crops)
            if faces == 0:
                message.timings.append(StageTiming(self.name, started, time.time()))
                out.append([message])
                continue
            if self.first_face_at is None:
                self.first_face_at = time.monotonic()
            message.timings.append(StageTiming(self.name, started, started))  # end set when the batch leaves
            self.pending.append(message)
            self.pending_faces += faces
            if self.pending_faces >= self.config.max_batch or self._every_live_stream_waiting():
                out.append(self._flush())
        return out

    def _every_live_stream_waiting(self) -> bool:
        live = self.config.live_streams
        return live > 0 and len({m.stream_id for m in self.pending}) >= live

    def next_deadline(self) -> float | None:
        if self.first_face_at is None:
            return None
        return self.first_face_at + self.config.timeout_ms / 1000.0

    def tick(self) -> list[Packet]:
        return [self._flush()] if self.pending else []

    def end_of_stream(self, stream_id: int) -> list[Packet]:
        return [self._flush()] if self.pending else []

    def stats(self) -> dict:
        mean = self.faces_sent / self.batches_sent if self.batches_sent else 0.0
        return {"batches": self.batches_sent, "mean_batch": round(mean, 2)}

    def _flush(self) -> Packet:
        batch, self.pending = self.pending, []
        now = time.time()
        for message in batch:
            message.timings[-1].end = now
        self.batches_sent += 1
        self.faces_sent += self.pending_faces
        self.pending_faces = 0
        self.first_face_at = None
        return batch
