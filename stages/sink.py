"""Sink stage: encode annotated video, show the live window, write events and the call report.

Video outputs are written to a hidden ``.partial`` file beside the target and renamed
only when the stream ends cleanly (or is stopped with Ctrl-C), so a failed run
never leaves a file that looks complete.  The events file is different: it is a
log, written in place one JSON line at a time as things happen (``tail -f``
works), each line with one ``write`` so no reader and no failure ever sees half
a line; a failed run keeps the lines written so far.  Each output keeps the input's
resolution and timestamps, and a file source's audio is copied across packet
for packet (no re-encode), interleaved with the video as it is written.
"""
from __future__ import annotations

import json
import os
import time
from fractions import Fraction
from pathlib import Path

import cv2  # before av, see below
import av
import numpy as np

from pipeline import pictures
from pipeline.config import SCREEN_KINDS, SinkConfig, StreamInfo
from pipeline.health import HealthChange, utc_time
from pipeline.messages import EndOfStream, Face, FrameMessage, Packet
from pipeline.stage import Stage, StageError
from pipeline.urls import redact

# cv2 is imported before av on purpose: both wheels bundle a libxcb-shm-0be6dfbf.so.0
# (same name, different builds: OpenCV's uses the system libxcb, PyAV's its own copy).
# With PyAV's loaded first, OpenCV's Qt gets it, mixes two libxcbs, and the --display
# window hangs forever inside cv2.namedWindow (spinning in xcb_wait_for_reply).

CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
AUDIO_LEAD_S = 0.5  # mux audio up to this far ahead of the video written so far
TIMING_SAMPLES = 20000  # latency and stage-time samples kept for the percentiles


class RecentSamples:
    """The last ``size`` samples of a timing, in one array filled at creation: a service that runs
    for months holds the same memory from its first minute (a deque of floats grew for as long as
    it took to fill, an hour and more on a slow camera)."""

    def __init__(self, size: int = TIMING_SAMPLES):
        self.values = np.full(size, np.nan)  # written now, so its pages are resident from the start
        self.count = 0  # samples ever added; the next one goes to count % size

    def add(self, value: float) -> None:
        self.values[self.count % len(self.values)] = value
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, len(self.values))

    def percentile(self, q: float) -> float | None:
        """The q-th percentile of the samples kept, in the samples' unit; None before the first."""
        return float(np.percentile(self.values[:len(self)], q)) if self.count else None


def face_record(face: Face) -> dict:
    """What the events file and the published faces say of a face, rounded once for both."""
    def rounded(value, digits):
        return None if value is None else round(float(value), digits)

    return {"box": [round(float(v), 1) for v in face.box], "track_id": face.track_id,
            "score": rounded(face.fake_score, 4), "smoothed_score": rounded(face.smoothed_score, 4),
            "verdict": face.verdict, "blinks_per_minute": rounded(face.blinks_per_minute, 1),
            "blink_score": rounded(face.blink_score, 4)}


def output_path(pattern: str, stream: StreamInfo) -> Path:
    return Path(pattern.format(stream=stream.name, index=stream.stream_id))


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


class VideoWriter:
    """One output file: H.264 video with the source's timestamps, plus its audio."""

    def __init__(self, final: Path, stream: StreamInfo, config: SinkConfig):
        self.final = final
        self.partial = partial_path(final)
        self.stream = stream
        self.frames = 0
        self.last_time = 0.0
        final.parent.mkdir(parents=True, exist_ok=True)
        fmt = CONTAINER_FORMATS.get(final.suffix.lower())
        if fmt is None:
            raise StageError(f"cannot write {final}: unknown container {final.suffix!r} (use {', '.join(CONTAINER_FORMATS)})")
        self.container = av.open(str(self.partial), "w", format=fmt)
        self.time_base = Fraction(*stream.time_base)
        self.video = self.container.add_stream(config.codec, rate=Fraction(stream.fps).limit_denominator(100000))
        self.video.width, self.video.height = stream.width, stream.height
        # 4:2:0 needs even sizes; keep odd-sized inputs at their exact size with 4:4:4
        even = stream.width % 2 == 0 and stream.height % 2 == 0
        self.video.pix_fmt = "yuv420p" if even else "yuv444p"
        self.video.time_base = self.time_base
        self.video.codec_context.time_base = self.time_base
        preset = config.live_preset if stream.live else config.preset
        options = {"preset": preset, "crf": str(config.crf)} if "264" in config.codec else {}
        if options and stream.live and config.live_tune:
            options["tune"] = config.live_tune
        self.video.options = options
        threads = config.live_encode_threads if stream.live else config.encode_threads
        if threads:
            self.video.codec_context.thread_count = threads
        self._frame: av.VideoFrame | None = None  # reused for I420 pictures PyAV cannot wrap
        self.audio_in = None
        self.audio_packets = None
        self.audio_out = None
        self.pending_audio = None
        if stream.has_audio:
            self._open_audio()

    def _open_audio(self) -> None:
        self.audio_in = av.open(self.stream.url)
        source = self.audio_in.streams.audio[0]
        self.audio_out = self.container.add_stream_from_template(source)
        self.audio_packets = self.audio_in.demux(source)

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Copy audio packets up to ``seconds`` (None: all that remain)."""
        if self.audio_packets is None:
            return
        while True:
            packet = self.pending_audio or next(self.audio_packets, None)
            self.pending_audio = None
            if packet is None:
                self.audio_packets = None
                return
            if packet.dts is None:
                continue  # demuxer flush packet
            if seconds is not None and packet.pts is not None and packet.pts * packet.time_base > seconds:
                self.pending_audio = packet
                return
            packet.stream = self.audio_out
            self.container.mux(packet)

    def _frame_from_i420(self, image: np.ndarray) -> av.VideoFrame:
        """The encoder's input frame for an I420 picture.

        Where PyAV can read the planes in place (a height divisible by 4: every common size) the
        frame wraps the picture's memory, no copy (0.2 ms a 720p frame saved); otherwise one frame
        is reused and filled -- a fresh one per picture (``from_ndarray``) would cost a
        picture-sized allocation, and its page faults, every time. make_writable() copies only if
        the encoder still holds the last one."""
        width, height = pictures.frame_size(image, pictures.YUV420P)
        if height % 4 == 0:
            return av.VideoFrame.from_numpy_buffer(image, format="yuv420p")
        frame = self._frame
        if frame is None or (frame.width, frame.height) != (width, height):
            frame = self._frame = av.VideoFrame(width, height, "yuv420p")
        frame.make_writable()
        for plane, source in zip(frame.planes, pictures.planes(image)):
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            rows[:, :plane.width] = source
        return frame

    def write(self, message: FrameMessage) -> None:
        image = np.ascontiguousarray(message.image)
        if message.pixel_format == pictures.YUV420P:
            frame = self._frame_from_i420(image)  # as decoded: no conversion
        elif self.video.pix_fmt == "yuv420p":
            # OpenCV converts a 720p frame in 0.3 ms, swscale's bgr24 path in 4.4 ms (dfstream bench)
            frame = self._frame_from_i420(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420))
        else:
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        if message.pts is not None:
            frame.pts = message.pts
            frame.time_base = Fraction(*message.time_base)
            self.last_time = float(message.pts * frame.time_base)
        else:
            frame.pts = round(self.frames / self.stream.fps / self.time_base)
            frame.time_base = self.time_base
            self.last_time = self.frames / self.stream.fps
        self._mux_audio_until(self.last_time + AUDIO_LEAD_S)
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def finish(self, all_audio: bool) -> Path:
        """Flush the encoder, close the file and give it its real name."""
        for packet in self.video.encode(None):
            self.container.mux(packet)
        self._mux_audio_until(None if all_audio else self.last_time + AUDIO_LEAD_S)
        self.container.close()
        if self.audio_in is not None:
            self.audio_in.close()
        os.replace(self.partial, self.final)
        return self.final

    def discard(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass  # the file is being thrown away anyway
        if self.audio_in is not None:
            self.audio_in.close()
        self.partial.unlink(missing_ok=True)


class FramePublisher:
    """Sends what the sink writes to whoever subscribes at ``config.publish_url`` (dfstream
    monitor): a ``faces`` message per analysed frame (JSON) and, at most ``publish_fps`` times
    a second per stream, a ``frame`` message with the annotated picture as JPEG.

    A PUB socket never blocks the sink: with no subscriber, or one that is behind, messages
    are dropped (the sink must keep its camera's pace). Multipart messages:
    ``[b"faces", json]`` and ``[b"frame", json, jpeg]``; the JSON carries the stream, frame
    index, capture time (UTC) and, for faces, one record per face as in the events file."""

    JPEG_QUALITY = 80
    HWM = 50  # messages held for a slow subscriber before dropping

    def __init__(self, config: SinkConfig):
        import zmq

        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 500)  # the last messages still reach the monitor at the end
        self.socket.setsockopt(zmq.SNDHWM, self.HWM)
        self.socket.connect(config.publish_url)
        self.interval = 1.0 / config.publish_fps if config.publish_fps > 0 else 0.0
        self.last_frame: dict[int, float] = {}
        self.flags = zmq.NOBLOCK

    def publish(self, message: FrameMessage, stream: StreamInfo) -> None:
        import zmq

        header = {"stream": stream.name, "stream_id": message.stream_id, "frame_index": message.frame_index,
                  "time": utc_time(message.capture_time), "capture_time": message.capture_time}
        try:
            if message.analysed and message.faces:
                faces = [face_record(face) for face in message.faces]
                self.socket.send_multipart([b"faces", json.dumps({**header, "faces": faces}).encode()], self.flags)
            now = time.monotonic()
            if message.image is not None and now - self.last_frame.get(message.stream_id, -1e9) >= self.interval:
                self.last_frame[message.stream_id] = now
                bgr = pictures.to_bgr(message.image, message.pixel_format)
                ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.JPEG_QUALITY])
                if ok:
                    self.socket.send_multipart([b"frame", json.dumps(header).encode(), jpeg.tobytes()], self.flags)
        except zmq.Again:
            pass  # nobody listening, or behind: dropped, as a live view should

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class EventsFile:
    """The events file: JSON lines appended as they happen, each with a single ``write``
    straight to the file (no buffer to flush), so ``tail -f`` sees every line at once and a
    crash never leaves half of one. A write that fails part-way (a full disk) is cut back
    off the file before the error is raised."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.size = 0

    def write(self, record: dict) -> None:
        data = (json.dumps(record) + "\n").encode()
        written = 0
        try:
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError as exc:
            if written:
                os.ftruncate(self.fd, self.size)
            raise StageError(f"cannot write the events file {self.path}: {exc.strerror or exc}") from None
        self.size += written

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SinkStage(Stage):
    name = "sink"

    def __init__(self, config: SinkConfig):
        self.config = config
        self.streams = {s.stream_id: s for s in config.streams}
        self.writers: dict[int, VideoWriter] = {}
        self.finished: dict[int, str] = {}  # stream id -> output path written
        self.frames: dict[int, int] = {s.stream_id: 0 for s in config.streams}
        self.next_seq: dict[int, int] = {s.stream_id: 0 for s in config.streams}
        # the most recent samples only: a camera watched for a day must not grow the sink
        self.latencies = {s.stream_id: RecentSamples() for s in config.streams}
        self.stage_times: dict[str, RecentSamples] = {}
        self.stage_waits: dict[str, RecentSamples] = {}
        self.source_totals: dict[int, dict] = {}
        self.events: EventsFile | None = None
        self.stop_requested = False
        self.aborted = False
        self.publisher: FramePublisher | None = None
        self.report = None  # stages.call_report.CallReport with --report
        self.paint_watches = {}  # stream id -> stages.window_check.PaintWatch, with --display

    def open(self) -> None:
        cfg = self.config
        if cfg.publish_url:
            self.publisher = FramePublisher(cfg)
        if cfg.output_pattern:
            for stream in self.streams.values():
                self.writers[stream.stream_id] = VideoWriter(output_path(cfg.output_pattern, stream), stream, cfg)
        if cfg.events_path:
            self.events = EventsFile(Path(cfg.events_path))
        if cfg.report_path:
            from stages.call_report import CallReport

            self.report = CallReport(cfg, self.streams)
        if cfg.display:
            from stages.window_check import PaintWatch

            for stream in self.streams.values():
                self._open_window(stream)
                self.paint_watches[stream.stream_id] = PaintWatch(self._window(stream))

    def process(self, packet: Packet) -> list[Packet]:
        for message in packet:
            self.write(message)
        return []

    def write(self, message: FrameMessage) -> None:
        stream_id = message.stream_id
        if message.seq != self.next_seq[stream_id]:
            if not self.streams[stream_id].live:
                raise StageError(f"stream {stream_id}: frame {message.seq} arrived where {self.next_seq[stream_id]} was due")
        self.next_seq[stream_id] = message.seq + 1
        now = time.time()
        self.latencies[stream_id].add(now - message.capture_time)
        self._record_timings(message)
        writer = self.writers.get(stream_id)
        if writer is not None:
            writer.write(message)
        if self.events is not None and message.analysed:
            self._write_events(message)
        if self.config.display:
            self._show(message)
        if self.publisher is not None:
            self.publisher.publish(message, self.streams[stream_id])
        if self.report is not None:
            self.report.add(message)
            if self.report.due():
                self.report.write()
        self.frames[stream_id] += 1

    def _record_timings(self, message: FrameMessage) -> None:
        previous_end = message.capture_time
        for timing in message.timings:
            if timing.stage not in self.stage_times:
                self.stage_times[timing.stage], self.stage_waits[timing.stage] = RecentSamples(), RecentSamples()
            self.stage_times[timing.stage].add(timing.end - timing.start)
            self.stage_waits[timing.stage].add(max(0.0, timing.start - previous_end))
            previous_end = timing.end

    def _write_events(self, message: FrameMessage) -> None:
        stream = self.streams[message.stream_id]
        seconds = message.pts_seconds
        when = utc_time(message.capture_time)
        for face in message.faces:
            record = {
                "type": "face",
                "time": when,  # UTC, when the source had the frame
                "stream": stream.name,
                "stream_id": message.stream_id,
                "frame_index": message.frame_index,
                "pts": message.pts,
                "time_s": seconds,
                "face_score": round(float(face.score), 4),
                "swapped": face.swapped,
                **face_record(face),
            }
            self.events.write(record)

    def health_changed(self, change: HealthChange) -> None:
        if self.events is not None:
            record = change.record()
            record["stream"], record["detail"] = redact(record["stream"]), redact(record["detail"])
            self.events.write(record)

    def _window(self, stream: StreamInfo) -> str:
        return f"dfstream - {stream.name}"

    def _open_window(self, stream: StreamInfo) -> None:
        # GUI_NORMAL: no Qt toolbar eating into the picture
        cv2.namedWindow(self._window(stream), cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        cv2.resizeWindow(self._window(stream), min(stream.width, 1280), min(stream.height, 720))
        if stream.kind in SCREEN_KINDS:
            # beside what is grabbed, never over it: dfstream must not watch its own drawing
            from stages.screen import overlay_place_for

            place = overlay_place_for(stream)
            cv2.resizeWindow(self._window(stream), place.width, place.height)
            cv2.moveWindow(self._window(stream), place.x, place.y)

    def _show(self, message: FrameMessage) -> None:
        stream = self.streams[message.stream_id]
        picture = pictures.to_bgr(message.image, message.pixel_format)
        cv2.imshow(self._window(stream), picture)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):  # q or Esc closes the overlay and stops the run
            self.stop_requested = True
        watch = self.paint_watches.get(message.stream_id)
        if watch is None:
            return
        from stages.screen import say

        if watch.drawn(picture, time.monotonic()):
            say(f"the --display window of {stream.name} shows nothing drawn (Qt missed its MapNotify?); opening it again")
            cv2.destroyWindow(self._window(stream))
            cv2.waitKey(1)
            self._open_window(stream)
        elif watch.gave_up:
            say(f"the --display window of {stream.name} still shows nothing drawn after opening it "
                f"{watch.reopens} more times; going on without looking")
            del self.paint_watches[message.stream_id]

    def stream_finished(self, info: EndOfStream) -> None:
        """Called by the runner once a stream's last frame has been written."""
        self.source_totals[info.stream_id] = {"frames": info.frames, "dropped": info.dropped, "error": info.error}
        writer = self.writers.pop(info.stream_id, None)
        if writer is None:
            return
        if info.error:
            writer.discard()
            return
        self.finished[info.stream_id] = str(writer.finish(all_audio=not self.streams[info.stream_id].live))

    def stats(self) -> dict:
        def pct(samples: RecentSamples, q):
            value = samples.percentile(q)
            return None if value is None else round(value * 1000, 2)

        latency = {}
        for stream_id, values in self.latencies.items():
            latency[str(stream_id)] = {"p50_ms": pct(values, 50), "p95_ms": pct(values, 95), "p99_ms": pct(values, 99)}
        return {
            "frames": {str(k): v for k, v in self.frames.items()},
            "latency": latency,
            "stage_ms": {s: {"p50": pct(v, 50), "p99": pct(v, 99)} for s, v in self.stage_times.items()},
            "wait_ms": {s: {"p50": pct(v, 50), "p99": pct(v, 99)} for s, v in self.stage_waits.items()},
            "outputs": {str(k): v for k, v in self.finished.items()},
            "source_totals": {str(k): v for k, v in self.source_totals.items()},
            "report": str(self.report.folder) if self.report is not None and self.report.writes else None,
        }

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        # Streams still open here were cut short: by Ctrl-C (keep a playable
        # file) or by a failure (throw it away).
        for stream_id, writer in list(self.writers.items()):
            if self.aborted:
                writer.discard()
            else:
                self.finished[stream_id] = str(writer.finish(all_audio=False))
        self.writers.clear()
        if self.report is not None and not self.aborted:
            self.report.write(final=True)  # aborted: the last periodic report stays as it was
        if self.events is not None:
            self.events.close()  # a log of what happened: kept whatever the run's outcome
        if self.config.display:
            for watch in self.paint_watches.values():
                watch.close()
            cv2.destroyAllWindows()
        if self.publisher is not None:
            self.publisher.close()
