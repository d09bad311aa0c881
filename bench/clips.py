"""The clips the benchmark runs on, made once in a cache folder (never in the repository).

The default clip is a 1280x720, 30 fps H.264 clip with two real faces, cut from
``real/deepfacelive_sample_videos/Ben_Stiller_Owen_Wilson.mp4`` in the shared
data folder (``../shared/data`` beside the repository, or ``$DFSTREAM_DATA``):
its first N seconds re-encoded (libx264 preset medium, crf 20, no audio) and
re-timed from 29.97 to exactly 30 frames per second.

A clip given with ``--clip`` is used as it is when it is no longer than
``--seconds``; a longer one is cut to its first ``--seconds`` by copying its
packets up to the next keyframe (no re-encode, so its decode cost is the
original's) when that keyframe is close, and by re-encoding otherwise.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = "real/deepfacelive_sample_videos/Ben_Stiller_Owen_Wilson.mp4"
DEFAULT_SIZE = (1280, 720)
DEFAULT_FPS = 30


class ClipError(RuntimeError):
    """A clip the benchmark cannot use; the message is one line for the user."""


@dataclass
class Clip:
    path: str
    origin: str  # where it came from
    how: str  # "as given", "packets copied", "re-encoded", "default clip"
    width: int
    height: int
    fps: float
    frames: int
    seconds: float
    codec: str
    has_audio: bool

    def to_dict(self) -> dict:
        return asdict(self)


def shared_data() -> Path:
    return Path(os.environ.get("DFSTREAM_DATA", REPO.parent / "shared" / "data")).resolve()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "dfstream" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe(path: str | Path, origin: str = "", how: str = "as given") -> Clip:
    """Open ``path`` and count its frames (decoding it: container frame counts can lie)."""
    path = Path(path)
    if not path.is_file():
        raise ClipError(f"no such clip: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path} has no video stream")
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            rate = video.average_rate or video.guessed_rate or Fraction(30)
            codec = video.codec_context.name
            has_audio = bool(container.streams.audio)
            frames, last_time, width, height = 0, 0.0, video.codec_context.width, video.codec_context.height
            for frame in container.decode(video):
                frames += 1
                if frame.time is not None:
                    last_time = max(last_time, frame.time)
                width, height = frame.width, frame.height
    except ClipError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        raise ClipError(f"{path} is not a readable video: {exc}") from None
    if frames == 0:
        raise ClipError(f"{path} has no decodable video frames")
    return Clip(str(path), origin or str(path), how, int(width), int(height), float(rate), frames,
                round(frames / float(rate), 3), codec, has_audio)


def _key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12]


def _file_key(path: Path) -> str:
    stat = path.stat()
    return _key(path.resolve(), stat.st_size, stat.st_mtime_ns)


def _reencode(src: Path, dst: Path, seconds: float, size: tuple[int, int] | None, fps: int | None) -> None:
    """First ``seconds`` of ``src`` -> H.264 (preset medium, crf 20), optionally scaled and re-timed."""
    tmp = dst.with_name(f".{dst.name}.partial.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        video = inp.streams.video[0]
        video.thread_type = "AUTO"
        rate = Fraction(fps) if fps else (video.average_rate or Fraction(30))
        width, height = size or (video.codec_context.width, video.codec_context.height)
        width, height = width - width % 2, height - height % 2
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "medium", "crf": "20"}
        stream.time_base = 1 / rate
        limit = round(seconds * float(rate)) if seconds else None
        count = 0
        for frame in inp.decode(video):
            if limit is not None and count >= limit:
                break
            if (frame.width, frame.height) != (width, height):
                frame = frame.reformat(width=width, height=height)
            image = frame.to_ndarray(format="yuv420p")
            new = av.VideoFrame.from_ndarray(image, format="yuv420p")
            new.pts, new.time_base = count, 1 / rate  # re-timed: frame i is shown at i / rate
            for packet in stream.encode(new):
                out.mux(packet)
            count += 1
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.replace(dst)


def _copy_until_keyframe(src: Path, dst: Path, seconds: float) -> bool:
    """Copy packets (no re-encode) up to the first keyframe at or after ``seconds`` if it
    comes within 1.5 x ``seconds``; False when it does not (caller re-encodes instead)."""
    tmp = dst.with_name(f".{dst.name}.partial{dst.suffix}")
    with av.open(str(src)) as inp:
        video = inp.streams.video[0]
        cut = None
        for packet in inp.demux(video):
            if packet.dts is None:
                continue
            if packet.is_keyframe and packet.pts is not None and float(packet.pts * packet.time_base) >= seconds:
                cut = float(packet.pts * packet.time_base)
                break
        if cut is None or cut > 1.5 * seconds:
            return False
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        video = inp.streams.video[0]
        audio = inp.streams.audio[0] if inp.streams.audio else None
        streams = [video] + ([audio] if audio is not None else [])
        mapping = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(*streams):
            if packet.dts is None or packet.pts is None:
                continue
            if float(packet.pts * packet.time_base) >= cut:
                continue  # everything from the cut keyframe on is left out (audio too)
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    tmp.replace(dst)
    return True


def default_clip(seconds: float) -> Clip:
    """The 720p 30 fps default clip (made once and cached)."""
    source = shared_data() / DEFAULT_SOURCE
    if not source.is_file():
        raise ClipError(f"the default clip is made from {source}, which is missing: give --clip PATH "
                        f"(or set DFSTREAM_DATA to the shared data folder)")
    seconds = seconds or 13.0
    dst = cache_dir() / f"default-720p30-{seconds:g}s-{_file_key(source)}.mp4"
    if not dst.is_file():
        _reencode(source, dst, seconds, DEFAULT_SIZE, DEFAULT_FPS)
    return describe(dst, origin=str(source), how=f"default clip: first {seconds:g} s re-encoded at 1280x720, 30 fps")


def prepare_clip(path: str | None, seconds: float) -> Clip:
    """The clip to benchmark: the default one, or ``path`` cut to ``seconds`` (0: whole file)."""
    if path is None:
        return default_clip(seconds)
    src = Path(path).expanduser()
    full = describe(src)
    if not seconds or full.seconds <= seconds * 1.05:
        return full
    stem = f"{src.stem}-{seconds:g}s-{_file_key(src)}"
    copied = cache_dir() / f"{stem}{src.suffix.lower() if src.suffix.lower() in ('.mp4', '.mkv', '.mov') else '.mkv'}"
    if copied.is_file():
        return describe(copied, origin=str(src), how=f"first {seconds:g} s, packets copied (no re-encode)")
    encoded = cache_dir() / f"{stem}-h264.mp4"
    if encoded.is_file():
        return describe(encoded, origin=str(src), how=f"first {seconds:g} s re-encoded (H.264)")
    try:
        if _copy_until_keyframe(src, copied, seconds):
            return describe(copied, origin=str(src), how=f"first {seconds:g} s, packets copied (no re-encode)")
    except (av.error.FFmpegError, ValueError):
        copied.unlink(missing_ok=True)
    _reencode(src, encoded, seconds, None, None)
    return describe(encoded, origin=str(src), how=f"first {seconds:g} s re-encoded (H.264)")
