"""Source stage: decode a file, RTSP/HTTP stream or webcam with PyAV, or grab the screen.

Files are lossless: every frame is sent, in order, and a slow pipeline simply
blocks the decoder (bounded queues).  Live sources -- cameras, RTSP, and files
read at their own frame rate with ``--live`` -- must never build latency: a
reader thread decodes as frames arrive and keeps only the newest one; if the
pipeline has not taken the previous frame by then, it is dropped and counted.
"""
from __future__ import annotations

import os
import re
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av

from pipeline import pictures
from pipeline.config import (
    LIVE_KINDS,
    SOURCE_FILE,
    SOURCE_HTTP,
    SOURCE_RTSP,
    SOURCE_WEBCAM,
    SCREEN_FPS,
    SCREEN_KINDS,
    SourceConfig,
    StreamInfo,
)
from pipeline.messages import FrameMessage, Packet, StageTiming
from pipeline.stage import Source, StageError
from stages import screen

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def source_kind(url: str) -> str:
    """file, rtsp, http, webcam, screen or window, from how the source is written."""
    if screen.is_screen_source(url):
        return screen.parse_source(url).kind
    match = _SCHEME.match(url)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("rtsp", "rtsps"):
            return SOURCE_RTSP
        if scheme in ("http", "https"):
            return SOURCE_HTTP
        if scheme == "file":
            return SOURCE_FILE
        raise StageError(f"unsupported source {url!r}: scheme {scheme}:// is not one of rtsp, http, https, file")
    if url.isdigit() or url.startswith("/dev/video"):
        return SOURCE_WEBCAM
    return SOURCE_FILE


def _webcam_device(url: str) -> str:
    return f"/dev/video{url}" if url.isdigit() else url


def _looks_like_mp4(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(12)[4:8] == b"ftyp"


def _open_container(url: str, kind: str, open_timeout: float, read_timeout: float):
    """av.open with the options each kind of source needs; raises StageError with one line."""
    started = time.monotonic()
    try:
        if kind == SOURCE_FILE:
            path = url[len("file://"):] if url.startswith("file://") else url
            if not os.path.exists(path):
                raise StageError(f"no such file: {path}")
            if os.path.isdir(path):
                raise StageError(f"{path} is a directory, not a video file")
            return av.open(path)
        if kind == SOURCE_WEBCAM:
            device = _webcam_device(url)
            if not os.path.exists(device):
                raise StageError(f"no webcam at {device}")
            return av.open(device, format="v4l2", timeout=(open_timeout, read_timeout))
        options = {"rtsp_transport": "tcp"} if kind == SOURCE_RTSP else {}
        return av.open(url, options=options, timeout=(open_timeout, read_timeout))
    except StageError:
        raise
    except (av.error.TimeoutError, av.error.ExitError, TimeoutError):  # ExitError: PyAV's timeout= fired
        raise StageError(f"{url} did not answer within {open_timeout:g} s") from None
    except av.error.InvalidDataError:
        if kind == SOURCE_FILE and _looks_like_mp4(path):
            raise StageError(f"{url} cannot be opened: an MP4 without its index, probably truncated") from None
        if kind == SOURCE_FILE:
            raise StageError(f"{url} is not a video file (no decodable stream found)") from None
        if time.monotonic() - started >= 0.9 * open_timeout:
            # FFmpeg reports a server that accepts the connection but never speaks as bad data
            raise StageError(f"{url} did not answer within {open_timeout:g} s") from None
        raise StageError(f"cannot open {url}: the server's answer is not a stream FFmpeg can read") from None
    except av.error.FFmpegError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StageError(f"cannot open {url}: {reason}") from None
    except OSError as exc:
        raise StageError(f"cannot open {url}: {exc.strerror or exc}") from None


def _stream_name(url: str, kind: str, stream_id: int) -> str:
    if kind == SOURCE_FILE:
        return Path(url).stem or f"stream{stream_id}"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.split("://", 1)[-1]).strip("_")
    return cleaned[-40:] or f"stream{stream_id}"


def probe(url: str, stream_id: int = 0, paced: bool = False, open_timeout: float = 10.0,
          capture_fps: float | None = None) -> StreamInfo:
    """Open a source once to learn its size, rate and time base, and to fail early and clearly.
    ``capture_fps``: the rate screen sources are grabbed at (default SCREEN_FPS)."""
    kind = source_kind(url)
    if kind in SCREEN_KINDS:
        return screen.probe_screen(url, stream_id, capture_fps or SCREEN_FPS)
    container = _open_container(url, kind, open_timeout, open_timeout)
    try:
        if not container.streams.video:
            raise StageError(f"{url} has no video stream")
        video = container.streams.video[0]
        codec = video.codec_context
        width, height = codec.width, codec.height
        rate = video.average_rate or video.guessed_rate or video.base_rate or Fraction(30)
        time_base = video.time_base or Fraction(1, 90000)
        # files: the first frame carries the display matrix (FFmpeg copies the stream's)
        frame = _first_frame(container) if kind == SOURCE_FILE or not width or not height else None
        quarter_turns = 0
        if frame is not None:
            width, height = frame.width, frame.height
            quarter_turns = _upright_turns(frame)
        elif not width or not height:
            raise StageError(f"{url} has no decodable video frames")
        if quarter_turns % 2:
            width, height = height, width
        live = kind in LIVE_KINDS or paced
        frames = video.frames if (kind == SOURCE_FILE and video.frames > 0) else None
        return StreamInfo(
            stream_id=stream_id,
            url=url,
            kind=kind,
            live=live,
            name=_stream_name(url, kind, stream_id),
            width=int(width),
            height=int(height),
            fps=float(rate),
            time_base=(time_base.numerator, time_base.denominator),
            frame_count=frames,
            has_audio=bool(container.streams.audio) and kind == SOURCE_FILE,
            paced=paced,
            quarter_turns=quarter_turns,
        )
    finally:
        container.close()


def _first_frame(container) -> av.VideoFrame | None:
    """The first decodable frame, or None; a file that cannot be decoded fails in the stage,
    with the frame count that tells where."""
    try:
        return next(container.decode(video=0), None)
    except av.error.FFmpegError:
        return None


def _upright_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show the frame as its display matrix says
    (PyAV's ``rotation`` is that matrix's counter-clockwise angle, in degrees; 0 without one)."""
    return round(frame.rotation / 90) % 4


class _NewestFrameSlot:
    """One-frame mailbox between the reader thread and the stage: a new frame
    replaces an unread one (drop-oldest), so what the pipeline takes is always current."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.dropped = 0
        self.finished = False
        self.error: str | None = None

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def finish(self, error: str | None = None) -> None:
        with self._cond:
            self.finished = True
            self.error = error
            self._cond.notify()

    def take(self, timeout: float):
        """The newest frame, or None if the stream finished or nothing came in ``timeout``."""
        with self._cond:
            if self._item is None and not self.finished:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


class SourceStage(Source):
    name = "source"

    def __init__(self, config: SourceConfig):
        self.config = config
        self.stream = config.stream
        self.container = None
        self.finished = False
        self.warning: str | None = None  # why a live stream ended early, or a file ended short of its claimed count
        self.frames_sent = 0
        self.pictures_sent = 0  # frames sent with their pixels (see SourceConfig.all_pixels)
        self.frames_to_detect = 0
        self.detections_postponed = 0  # due frames sent round a busy detector (SourceConfig.detect_when_free)
        self._next_detect_seq = 0  # the first frame sent from this one on goes to the face detector
        # Live runs: the runner's answer to "is a detect replica free for a frame now?"
        self.detector_free: Callable[[], bool] | None = None
        self.waited_s = 0.0  # live: time spent waiting for the camera's next frame (not work)
        self.frames_decoded = 0
        self._frames = None
        self._slot: _NewestFrameSlot | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._last_index = 0
        self.screen: screen.ScreenCapture | None = None

    # -- life cycle ---------------------------------------------------------
    def open(self) -> None:
        cfg = self.config
        if self.stream.kind in SCREEN_KINDS:  # grabbed, and followed, by stages/screen.py
            self.screen = screen.ScreenCapture(self.stream, self._stop)
            self._frames = self._counted(self.screen.frames())
            return
        self.container = _open_container(self.stream.url, self.stream.kind, cfg.open_timeout_s, cfg.read_timeout_s)
        if not self.container.streams.video:
            raise StageError(f"{self.stream.url} has no video stream")
        video = self.container.streams.video[0]
        # Files: frame + slice threads, decoding is the source's whole job. Live: slice threads
        # only, since frame threads hold back one decoded frame per extra thread (~33 ms each
        # at 30 fps) before the first one comes out.
        video.thread_type = "SLICE" if self.stream.live else "AUTO"
        if cfg.decode_threads:
            video.thread_count = cfg.decode_threads
        self._frames = self._decode(video)

    def start(self) -> None:
        """Begin reading. Live sources start their reader (and a paced file its clock) only
        now, once every stage is ready, so no frame goes stale waiting for model loading."""
        if self.stream.live and self._reader is None:
            self._slot = _NewestFrameSlot()
            self._reader = threading.Thread(target=self._read_live, name="source-reader", daemon=True)
            self._reader.start()

    def process(self, packet: Packet | None = None) -> list[Packet]:
        """Produce the next frame (the source has no input)."""
        if self.finished:
            return []
        self.start()
        if self._slot is not None:
            item, wait_started = None, time.monotonic()
            while item is None and not self._slot.finished:
                item = self._slot.take(timeout=0.5)
                if item is None and self.screen is not None:
                    break  # a window that is gone: back to the runner, which sees Ctrl-C meanwhile
            if item is None:
                item = self._slot.take(timeout=0)
            if item is None and not self._slot.finished:
                self.waited_s += time.monotonic() - wait_started
                return []
            self.waited_s += time.monotonic() - wait_started
            if item is None:
                self.finished = True
                if self._slot.error and self.frames_sent == 0:
                    raise StageError(self._slot.error)
                # a camera that goes quiet mid-run ends its stream; what was recorded is kept
                self.warning = self._slot.error
                return []
            frame, capture_time, index = item
        else:
            frame = next(self._frames, None)
            capture_time, index = time.time(), self.frames_decoded - 1
            if frame is None:
                self.finished = True
                return []
        return [[self._message(frame, capture_time, index)]]

    def stop(self) -> None:
        """Stop reading early (Ctrl-C); what was sent so far still flows to the sink."""
        self._stop.set()
        self.finished = True

    def close(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if self.container is not None:
            self.container.close()
            self.container = None
        if self.screen is not None:
            self.screen.close()
            self.screen = None

    @property
    def dropped(self) -> int:
        return self._slot.dropped if self._slot is not None else 0

    def detect_due(self) -> bool:
        """Whether the next frame sent is due for face detection."""
        return self.frames_sent >= self._next_detect_seq

    def _schedule_detection(self) -> tuple[bool, bool]:
        """(to_detect, to_classify) for the next frame, and move the schedule on."""
        cfg = self.config
        if not self.detect_due():
            return False, False
        if cfg.detect_when_free and self.detector_free is not None and not self.detector_free():
            self.detections_postponed += 1
            return False, False
        to_classify = self.frames_to_detect % max(1, cfg.classify_every // cfg.detect_every) == 0
        self.frames_to_detect += 1
        self._next_detect_seq = self.frames_sent + cfg.detect_every
        return True, to_classify

    def takes_bypass(self, message: FrameMessage) -> bool:
        return not message.to_detect

    def stats(self) -> dict:
        return {"decoded": self.frames_decoded, "dropped": self.dropped, "pictures_sent": self.pictures_sent,
                "to_detect": self.frames_to_detect, "detections_postponed": self.detections_postponed}

    # -- decoding -----------------------------------------------------------
    def _decode(self, video):
        """Yield decoded frames; turn FFmpeg failures and truncation into StageError.

        A file that ends short of the frame count its container claims is *truncated* when
        its last packet was cut (partial, or running to the file's last byte); otherwise the
        count was wrong (common: 62 claimed, 61 there) and what was there is kept, with a
        :attr:`warning` that names the counts."""
        url = self.stream.url
        last_end, partial = 0, False
        try:
            for packet in self.container.demux(video):
                if packet.size:
                    partial = partial or packet.is_corrupt
                    if packet.pos is not None and packet.pos >= 0:
                        last_end = max(last_end, packet.pos + packet.size)
                for frame in packet.decode():
                    self.frames_decoded += 1
                    yield frame
                    if self._stop.is_set():
                        return
        except (av.error.TimeoutError, av.error.ExitError, TimeoutError):  # ExitError: PyAV's timeout= fired
            raise StageError(f"{url} stopped sending frames (no data for {self.config.read_timeout_s:g} s)") from None
        except av.error.FFmpegError as exc:
            raise StageError(f"{url}: decoding failed after {self.frames_decoded} frames ({exc.strerror or exc})") from None
        expected = self.stream.frame_count
        if self.stream.kind == SOURCE_FILE and expected and self.frames_decoded < expected and not self._stop.is_set():
            size = os.path.getsize(url) if os.path.isfile(url) else 0
            if partial or (size and last_end >= size):
                raise StageError(f"{url} is truncated: decoded {self.frames_decoded} of {expected} frames")
            self.warning = (f"{url}: its container claims {expected} frames but {self.frames_decoded} decoded; "
                            "processed the frames that are there")

    def _counted(self, frames):
        for frame in frames:
            self.frames_decoded += 1
            yield frame

    def _read_live(self) -> None:
        """Reader thread for live sources: decode as frames come, keep the newest."""
        start_wall = None
        start_time = None
        try:
            for frame in self._frames:
                if self.stream.paced and frame.time is not None:
                    # a file read as a camera would deliver it: at its own frame rate
                    if start_wall is None:
                        start_wall, start_time = time.monotonic(), frame.time
                    delay = (frame.time - start_time) - (time.monotonic() - start_wall)
                    if delay > 0 and self._stop.wait(delay):
                        break
                self._slot.put((frame, time.time(), self.frames_decoded - 1))
                if self._stop.is_set():
                    break
            self._slot.finish()
        except StageError as exc:
            self._slot.finish(str(exc))
        except Exception as exc:  # the reader must always release the stage
            self._slot.finish(f"{self.stream.url}: {type(exc).__name__}: {exc}")

    def _live_pts(self, pts: int | None, time_base: Fraction, index: int) -> int:
        """Cameras and RTSP count from an arbitrary origin, and FFmpeg gives RTSP's first
        frame no pts at all: restart at 0, fill a missing pts from the frame index, and
        always move forward, so the sink's encoder never sees a repeated timestamp."""
        step = max(1, round(1 / ((self.stream.fps or 30.0) * time_base)))
        expected = 0 if self._last_pts is None else self._last_pts + max(1, index - self._last_index) * step
        if pts is None:
            pts = expected
        else:
            if self._first_pts is None:
                self._first_pts = pts - expected
            pts -= self._first_pts
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1
        self._last_pts, self._last_index = pts, index
        return pts

    def _message(self, frame: av.VideoFrame, capture_time: float, index: int) -> FrameMessage:
        started = time.time()
        time_base = frame.time_base or Fraction(*self.stream.time_base)
        pts = frame.pts
        if self.stream.kind in LIVE_KINDS:
            pts = self._live_pts(pts, time_base, index)
        to_detect, to_classify = self._schedule_detection()
        image = None
        pixel_format = pictures.wire_format(frame.width, frame.height)
        if self.config.all_pixels or to_detect:
            image = pictures.turned(frame.to_ndarray(format=pixel_format), pixel_format, self.stream.quarter_turns)
            self.pictures_sent += 1
        message = FrameMessage(
            stream_id=self.stream.stream_id,
            seq=self.frames_sent,
            frame_index=index,
            pts=pts,
            time_base=(time_base.numerator, time_base.denominator),
            capture_time=capture_time,
            image=image,
            pixel_format=pixel_format,
            to_detect=to_detect,
            to_classify=to_classify,
        )
        message.timings.append(StageTiming(self.name, started, time.time()))
        self.frames_sent += 1
        return message
