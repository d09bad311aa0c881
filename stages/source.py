"""Source stage: decode a file, RTSP/HTTP stream or webcam with PyAV, or grab the screen.

Files are lossless: every frame is sent, in order, and a slow pipeline simply
blocks the decoder (bounded queues).  Live sources -- cameras, RTSP, and files
read at their own frame rate with ``--live`` -- must never build latency: a
reader thread decodes as frames arrive and keeps only the newest one; if the
pipeline has not taken the previous frame by then, it is dropped and counted.

Cameras (RTSP, HTTP, webcams) are watched over: when the connection is lost, a
read fails, the stream ends or no frame comes for ``stall_timeout_s``, the reader
opens the camera again with backoff (:mod:`stages.reconnect`, settings in
:class:`pipeline.config.ReconnectConfig`) and the stream carries on: the same
output file, timestamps that keep moving forward (the outage shows as a gap),
frame indices and sequence numbers that keep counting. A camera that comes back
at another size has its frames scaled to the size probed at the start (the
output file cannot change size). When the tries run out the stream goes
``offline`` and ends with a warning. Each move is a health change
(:class:`pipeline.health.HealthChange`) the runner collects with
:meth:`SourceStage.health_changes`.
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
from pipeline.health import Health, HealthChange
from pipeline.messages import FrameMessage, Packet, StageTiming
from pipeline.stage import Source, StageError
from pipeline.urls import redact
from stages.reconnect import Backoff, HealthTracker
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
    # never the camera's credentials: the name is in file names, events and metrics
    shown = redact(url).split("://", 1)[-1].replace("***@", "").replace("***", "")
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", shown).strip("_")
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


class StreamStalled(StageError):
    """A live connection that delivers no frame for the stall timeout."""


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
        self._last_capture = 0.0
        self._connection = 0  # which connection to the camera the frame being sent came from
        self._connection_of_last = 0
        # cameras only (files have no health): see stages.reconnect
        self.health = HealthTracker(self.stream) if self.stream.kind in LIVE_KINDS else None
        self._offline = False  # the reader gave up on the camera: the stream ends with a warning
        self.screen: screen.ScreenCapture | None = None

    # -- life cycle ---------------------------------------------------------
    def open(self) -> None:
        if self.health is not None:
            self.health.set(Health.STARTING, f"opening {self.stream.url}")
        self._frames = self._connect()

    @property
    def _watched(self) -> bool:
        """A camera that is reconnected after an outage (not a file, not --no-reconnect)."""
        return self.health is not None and self.config.reconnect.enabled

    def _connect(self):
        """Open the source and return its frame generator (StageError when it cannot be opened)."""
        cfg = self.config
        if self.stream.kind in SCREEN_KINDS:  # grabbed, and followed, by stages/screen.py
            self.screen = screen.ScreenCapture(self.stream, self._stop, on_health=self._screen_health)
            return self._counted(self.screen.frames())
        # a watched camera's blocking read gives up after the stall timeout: a stall, reconnect
        read_timeout = cfg.reconnect.stall_timeout_s if self._watched else cfg.read_timeout_s
        container = _open_container(self.stream.url, self.stream.kind, cfg.open_timeout_s, read_timeout)
        if not container.streams.video:
            container.close()
            raise StageError(f"{self.stream.url} has no video stream")
        self.container = container
        video = container.streams.video[0]
        # Files: frame + slice threads, decoding is the source's whole job. Live: slice threads
        # only, since frame threads hold back one decoded frame per extra thread (~33 ms each
        # at 30 fps) before the first one comes out.
        video.thread_type = "SLICE" if self.stream.live else "AUTO"
        if cfg.decode_threads:
            video.thread_count = cfg.decode_threads
        return self._decode(video)

    def _screen_health(self, state: Health, detail: str) -> None:
        """A grabbed window gone (``reconnecting``) or back (``streaming``), from stages.screen."""
        if self.health is not None:
            self.health.set(state, detail)

    def health_changes(self) -> list[HealthChange]:
        return self.health.drain() if self.health is not None else []

    def note_refused(self, refused_s: float) -> None:
        """The runner's live admission has refused frames for ``refused_s`` seconds (0: it took
        one): ``blocked`` while the camera streams but the pipeline cannot take its frames."""
        if self.health is None:
            return
        if refused_s >= self.config.reconnect.blocked_after_s and self.health.state == Health.STREAMING:
            self.health.set(Health.BLOCKED, f"the pipeline has taken no frame for {refused_s:.1f} s")
        elif refused_s == 0 and self.health.state == Health.BLOCKED:
            self.health.set(Health.STREAMING, "the pipeline takes frames again")

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
            wait_started = time.monotonic()
            # at most half a second, so the runner keeps answering the supervisor and reporting
            # health while a camera is away
            item = self._slot.take(timeout=0.5)
            if item is None and self._slot.finished:
                item = self._slot.take(timeout=0)
            if item is None and not self._slot.finished:
                self.waited_s += time.monotonic() - wait_started
                return []
            self.waited_s += time.monotonic() - wait_started
            if item is None:
                if not self._slot.finished:
                    return []
                self.finished = True
                if self._slot.error and self.frames_sent == 0 and not self._offline:
                    raise StageError(self._slot.error)
                # a camera given up on ends its stream; what was recorded is kept
                self.warning = self._slot.error
                return []
            frame, capture_time, index, self._connection = item
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
            if self._reader.is_alive():
                return  # still inside an open or a read: the process's exit closes the connection
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
        last_frame = time.monotonic()
        try:
            for packet in self.container.demux(video):
                if packet.size:
                    partial = partial or packet.is_corrupt
                    if packet.pos is not None and packet.pos >= 0:
                        last_end = max(last_end, packet.pos + packet.size)
                for frame in packet.decode():
                    self.frames_decoded += 1
                    last_frame = time.monotonic()
                    yield frame
                    if self._stop.is_set():
                        return
                if self._watched and time.monotonic() - last_frame > self.config.reconnect.stall_timeout_s:
                    # data comes, but nothing that decodes to a picture
                    raise StreamStalled(f"{url}: no frame for {self.config.reconnect.stall_timeout_s:g} s")
        except (av.error.TimeoutError, av.error.ExitError, TimeoutError):  # ExitError: PyAV's timeout= fired
            if self._watched:
                raise StreamStalled(f"{url}: no data for {self.config.reconnect.stall_timeout_s:g} s") from None
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
        try:
            if self.health is not None:
                self._read_camera()
            else:
                self._read_paced()
        except Exception as exc:  # the reader must always release the stage
            self._slot.finish(redact(f"{self.stream.url}: {type(exc).__name__}: {exc}"))

    def _read_paced(self) -> None:
        """A file read as a camera would deliver it: at its own frame rate; it ends with the file."""
        start_wall = None
        start_time = None
        try:
            for frame in self._frames:
                if self.stream.paced and frame.time is not None:
                    if start_wall is None:
                        start_wall, start_time = time.monotonic(), frame.time
                    delay = (frame.time - start_time) - (time.monotonic() - start_wall)
                    if delay > 0 and self._stop.wait(delay):
                        break
                self._slot.put((frame, time.time(), self.frames_decoded - 1, 0))
                if self._stop.is_set():
                    break
            self._slot.finish()
        except StageError as exc:
            self._slot.finish(str(exc))

    def _read_camera(self) -> None:
        """A camera: read until the connection ends, then (unless --no-reconnect) open it again
        with backoff until frames come, or until the tries run out (offline)."""
        cfg = self.config.reconnect
        backoff = Backoff(cfg)
        frames, connection, failed = self._frames, 0, 0
        while True:
            reason, stalled, got_frames = self._pump(frames, connection)
            if self._stop.is_set():
                self._slot.finish()
                return
            if not cfg.enabled:
                if reason is None:
                    self._slot.finish()  # a clean end of stream just ends it, as for a file
                else:
                    self._go_offline(reason)
                return
            if got_frames:
                failed = 0  # the last connection delivered: the backoff starts over
            if stalled:
                self.health.set(Health.STALLED, reason)
            reason = reason or f"{self.stream.url}: the stream ended"
            self._drop_container()
            while True:
                failed += 1
                if backoff.exhausted(failed):
                    self._go_offline(f"gave up after {cfg.attempts} reconnect attempts; last: {reason}")
                    return
                delay = backoff.delay(failed)
                tries = f" of {cfg.attempts}" if cfg.attempts else ""
                self.health.set(Health.RECONNECTING, f"attempt {failed}{tries} in {delay:.1f} s: {reason}", again=True)
                if self._stop.wait(delay):
                    self._slot.finish()
                    return
                try:
                    frames = self._connect()
                except StageError as exc:
                    reason = str(exc)
                    continue
                connection += 1
                break

    def _go_offline(self, reason: str) -> None:
        message = redact(f"{self.stream.name} is offline: {reason}")
        self._offline = True
        self.health.set(Health.OFFLINE, reason)
        self._drop_container()
        self._slot.finish(message)

    def _drop_container(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:
                pass  # a connection that broke may not close cleanly; it is gone either way
            self.container = None

    def _pump(self, frames, connection: int) -> tuple[str | None, bool, bool]:
        """Hand over the frames of one connection until it ends: (why it ended -- None for a
        clean end of stream or a stop --, whether it stalled, whether any frame came)."""
        got_frames = False
        try:
            for frame in frames:
                if not got_frames:
                    got_frames = True
                    self.health.set(Health.STREAMING, self._size_note(frame) if connection else "")
                self._slot.put((frame, time.time(), self.frames_decoded - 1, connection))
                if self._stop.is_set():
                    break
            return None, False, got_frames
        except StreamStalled as exc:
            return str(exc), True, got_frames
        except StageError as exc:
            return str(exc), False, got_frames

    def _probed_size(self) -> tuple[int, int]:
        """The decoded (not yet turned upright) size the stream was probed at."""
        if self.stream.quarter_turns % 2:
            return self.stream.height, self.stream.width
        return self.stream.width, self.stream.height

    def _size_note(self, frame: av.VideoFrame) -> str:
        width, height = self._probed_size()
        if (frame.width, frame.height) == (width, height):
            return "frames again after reconnecting"
        return (f"frames again after reconnecting, at {frame.width}x{frame.height}: scaled to the "
                f"{width}x{height} the stream started at")

    def _live_pts(self, pts: int | None, time_base: Fraction, index: int, capture_time: float,
                  connection: int) -> int:
        """Cameras and RTSP count from an arbitrary origin, and FFmpeg gives RTSP's first
        frame no pts at all: restart at 0, fill a missing pts from the frame index, and
        always move forward, so the sink's encoder never sees a repeated timestamp.

        Timestamps are in the stream's probed time base. A new connection (after a reconnect)
        starts a new origin: its first frame follows the last one sent by the wall-clock time
        between their captures, so the outage shows in the output as the gap it was."""
        stream_base = Fraction(*self.stream.time_base)
        step = max(1, round(1 / ((self.stream.fps or 30.0) * stream_base)))
        if pts is not None:
            pts = round(pts * time_base / stream_base)
        if self._last_pts is None:
            expected = 0
        elif connection != self._connection_of_last:
            self._first_pts = None
            expected = self._last_pts + max(step, round((capture_time - self._last_capture) / stream_base))
        else:
            expected = self._last_pts + max(1, index - self._last_index) * step
        if pts is None:
            pts = expected
        else:
            if self._first_pts is None:
                self._first_pts = pts - expected
            pts -= self._first_pts
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1
        self._last_pts, self._last_index = pts, index
        self._last_capture, self._connection_of_last = capture_time, connection
        return pts

    def _message(self, frame: av.VideoFrame, capture_time: float, index: int) -> FrameMessage:
        started = time.time()
        time_base = frame.time_base or Fraction(*self.stream.time_base)
        pts = frame.pts
        if self.stream.kind in LIVE_KINDS:
            pts = self._live_pts(pts, time_base, index, capture_time, self._connection)
            time_base = Fraction(*self.stream.time_base)
            width, height = self._probed_size()
            if (frame.width, frame.height) != (width, height):
                frame = frame.reformat(width=width, height=height)  # the output cannot change size
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
