"""Annotate stage: restore frame order, track faces, smooth scores, draw.

Detect and infer replicas hand frames on in whatever order they finish, so this
stage first puts each stream back in sequence (a bounded reorder window); only
then can faces be tracked across frames and their scores smoothed.  It then
draws boxes coloured by verdict, track ids and scores, and a small HUD with the
stream's frame rate and capture-to-screen latency.  In swap mode it pastes the
swapped crops back into the frame instead.
"""
from __future__ import annotations

import collections
import time

import cv2
import numpy as np

from pipeline import pictures
from pipeline.config import AnnotateConfig
from pipeline.messages import (PICTURE_PART, SCORES_PART, VERDICT_FAKE, VERDICT_REAL, VERDICT_UNSCORABLE, FrameMessage, Packet,
                               StageTiming)
from pipeline.stage import Stage, StageError
from stages.tracking import FaceTracker

COLOURS = {VERDICT_FAKE: (40, 40, 230), VERDICT_REAL: (60, 200, 60), VERDICT_UNSCORABLE: (150, 150, 150)}  # BGR
UNSURE_COLOUR = (0, 190, 255)


class StreamOrder:
    """Hands out one stream's frames strictly by sequence number, each one whole: the two
    parts of a split frame (FrameMessage.part) are joined before it counts as arrived."""

    def __init__(self, window: int):
        self.window = window
        self.next_seq = 0
        self.held: dict[int, FrameMessage] = {}
        self.parts: dict[int, FrameMessage] = {}  # one part of a split frame, waiting for the other
        self.waiting_since: float | None = None  # when we started waiting for next_seq

    def push(self, message: FrameMessage) -> list[FrameMessage]:
        if message.seq < self.next_seq:
            return []  # a frame we already gave up on (live gap timeout)
        if message.part:
            other = self.parts.pop(message.seq, None)
            if other is None:
                self.parts[message.seq] = message
                return self.pop_ready()
            message = _join(message, other)
        self.held[message.seq] = message
        return self.pop_ready()

    def pop_ready(self) -> list[FrameMessage]:
        ready = []
        while self.next_seq in self.held:
            ready.append(self.held.pop(self.next_seq))
            self.next_seq += 1
        self.waiting_since = time.monotonic() if self.held or self.parts else None
        return ready

    def skip_gap(self) -> list[FrameMessage]:
        """Give up on the missing frame(s) and release what follows (live streams only). A
        picture whose scores never came is shown without them; scores without a picture go."""
        first_whole = min(self.held, default=None)
        for seq in sorted(self.parts):
            if first_whole is not None and seq > first_whole:
                break
            part = self.parts.pop(seq)
            if part.part == PICTURE_PART:
                part.part = ""
                self.held[seq] = part
        if self.held:
            self.next_seq = min(self.held)
        return self.pop_ready()

    def drain(self) -> list[FrameMessage]:
        out = []
        while self.held or self.parts:
            out.extend(self.skip_gap())
        return out


def _join(one: FrameMessage, other: FrameMessage) -> FrameMessage:
    """The whole frame from its picture part and its scores part (in either order)."""
    picture, scores = (one, other) if one.part == PICTURE_PART else (other, one)
    picture.faces = scores.faces
    picture.analysed = scores.analysed
    # both parts carry the stages up to detect; the scores part then went through batch and infer
    picture.timings = sorted(picture.timings + scores.timings[len(picture.timings):], key=lambda t: t.start)
    picture.part = ""
    return picture


class RateMeter:
    """Frames per second and mean latency over the last second, for the HUD."""

    def __init__(self):
        self.samples: collections.deque = collections.deque()

    def add(self, now: float, latency: float) -> tuple[float, float]:
        self.samples.append((now, latency))
        while self.samples and now - self.samples[0][0] > 1.0:
            self.samples.popleft()
        span = now - self.samples[0][0]
        fps = (len(self.samples) - 1) / span if span > 0 else 0.0
        return fps, float(np.mean([s[1] for s in self.samples]))


class AnnotateStage(Stage):
    name = "annotate"

    def __init__(self, config: AnnotateConfig):
        self.config = config
        self.streams = {s.stream_id: s for s in config.streams}
        self.order = {s.stream_id: StreamOrder(config.reorder_window) for s in config.streams}
        self.trackers = {s.stream_id: FaceTracker(config) for s in config.streams}
        self.meters = {s.stream_id: RateMeter() for s in config.streams}
        self.gaps_skipped = 0
        self._paste = None

    def open(self) -> None:
        if self.config.mode == "swap":
            from engines.blending import paste_swap

            self._paste = paste_swap

    def process(self, packet: Packet) -> list[Packet]:
        out = []
        for message in packet:
            order = self.order.get(message.stream_id)
            if order is None:
                raise StageError(f"annotate got a frame of unknown stream {message.stream_id}")
            if len(order.held) >= order.window and not self.streams[message.stream_id].live:
                raise StageError(f"stream {message.stream_id}: frame {order.next_seq} never arrived")
            out.extend([m] for m in map(self.annotate, order.push(message)))
        return out

    def frames_in(self, packet: Packet) -> int:
        return sum(1 for message in packet if message.part != SCORES_PART)  # a split frame counts once

    def next_deadline(self) -> float | None:
        waits = [o.waiting_since for sid, o in self.order.items() if o.waiting_since and self.streams[sid].live]
        return min(waits) + self.config.gap_timeout_s if waits else None

    def tick(self) -> list[Packet]:
        out = []
        now = time.monotonic()
        for stream_id, order in self.order.items():
            if self.streams[stream_id].live and order.waiting_since and now - order.waiting_since >= self.config.gap_timeout_s:
                self.gaps_skipped += 1
                out.extend([m] for m in map(self.annotate, order.skip_gap()))
        return out

    def end_of_stream(self, stream_id: int) -> list[Packet]:
        return [[m] for m in map(self.annotate, self.order[stream_id].drain())]

    def stats(self) -> dict:
        return {
            "gaps_skipped": self.gaps_skipped,
            "tracks": {str(sid): tracker.summary() for sid, tracker in self.trackers.items()},
        }

    # -- one frame, in order --------------------------------------------------
    def annotate(self, message: FrameMessage) -> FrameMessage:
        started = time.time()
        self.trackers[message.stream_id].update(message)
        if message.image is not None:  # None: no video output, nothing to draw on
            self._render(message, started)
        message.crops = None  # the sink needs only the picture
        message.timings.append(StageTiming(self.name, started, time.time()))
        return message

    def _render(self, message: FrameMessage, started: float) -> None:
        """Paste swapped faces back and draw boxes and the HUD onto the frame."""
        needs_pixels = self.config.draw or (self._paste is not None and message.crops is not None)
        if needs_pixels and not message.image.flags.writeable:
            # a picture received through ZeroMQ is its message's own memory, drawn on in place
            # (pipeline.codec); one decoded from immutable bytes is copied first
            message.image = np.array(message.image)
        if self._paste is not None and message.crops is not None:
            self._paste_swaps(message)
        if self.config.draw:
            self._draw_faces(message)
            if self.config.hud:
                # the rate frames were captured at (what the viewer gets), not annotate's burst rate
                fps, latency = self.meters[message.stream_id].add(message.capture_time, started - message.capture_time)
                self._draw_hud(message, fps, latency)

    def _paste_swaps(self, message: FrameMessage) -> None:
        from engines.alignment import alignment_matrix

        chosen = self._faces_to_swap(message)
        chosen_ids = {id(face) for face in chosen}
        for face in message.faces:
            if id(face) not in chosen_ids:
                face.swapped = False  # swapped by infer, but not one the user asked for
        for face in chosen:
            if face.swapped and face.crop_index >= 0:
                matrix = alignment_matrix(np.asarray(face.landmarks), tuple(self.config.crop_size), self.config.crop_margin)
                self._paste(message.image, message.pixel_format, message.crops[face.crop_index], matrix)

    def _faces_to_swap(self, message: FrameMessage):
        choice = self.config.swap_faces
        if choice == "all":
            return message.faces
        if choice == "largest":
            return message.faces[:1]  # detect sorts faces by area, largest first
        return [f for f in message.faces if str(f.track_id) == str(choice)]

    # Drawing goes through pipeline.pictures: on an I420 frame box outlines are drawn into its
    # planes, and labels and the HUD on BGR copies of just their regions.
    def _draw_faces(self, message: FrameMessage) -> None:
        width, _ = pictures.frame_size(message.image, message.pixel_format)
        thickness = max(2, width // 480)
        scale = max(0.5, width / 1600)
        for face in message.faces:
            colour = COLOURS.get(face.verdict, UNSURE_COLOUR)
            x1, y1, x2, y2 = (int(round(v)) for v in face.box)
            score = face.smoothed_score if face.smoothed_score is not None else face.fake_score
            label = f"#{face.track_id} {face.verdict or 'uncertain'}"
            if score is not None:
                label += f" {score:.2f}"
            if face.swapped:
                label += " swapped"
            if face.blinks_per_minute is not None:
                label += f" {face.blinks_per_minute:.0f} blinks/min"
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            top = max(0, y1 - th - base - 4)
            pictures.draw_rectangle(message.image, message.pixel_format, (x1, y1), (x2, y2), colour, thickness)
            label_box = (x1, top, x1 + tw + 7, top + th + base + 5)
            region = pictures.read_region(message.image, message.pixel_format, label_box)
            if region is None:
                continue  # the label lies outside the frame
            dx, dy = region.x0, region.y0
            cv2.rectangle(region.bgr, (x1 - dx, top - dy), (x1 + tw + 6 - dx, top + th + base + 4 - dy), colour, -1)
            cv2.putText(region.bgr, label, (x1 + 3 - dx, top + th + 2 - dy), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1, cv2.LINE_AA)
            pictures.write_region(message.image, message.pixel_format, region)

    def _draw_hud(self, message: FrameMessage, fps: float, latency: float) -> None:
        stream = self.streams[message.stream_id]
        text = f"dfstream  {stream.name}  {fps:4.1f} fps  {latency * 1000:4.0f} ms  faces {len(message.faces)}"
        width, _ = pictures.frame_size(message.image, message.pixel_format)
        scale = max(0.45, width / 2000)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        region = pictures.read_region(message.image, message.pixel_format, (0, 0, tw + 12, th + base + 10))
        region.bgr[:] = (region.bgr * 0.4).astype(np.uint8)
        cv2.putText(region.bgr, text, (6, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        pictures.write_region(message.image, message.pixel_format, region)
