"""Aligned face crops from images and videos, through the pipeline's own stages.

Training, evaluation and prediction must see faces exactly as the running
pipeline does, so this module does not detect or align anything itself: it
drives :class:`stages.source.SourceStage` and :class:`stages.detect.DetectStage`
in-process (no ZeroMQ), the same classes the pipeline runs as processes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline import pictures
from pipeline.config import DetectConfig, SourceConfig
from pipeline.messages import FrameMessage
from pipeline.stage import StageError
from stages.detect import DetectStage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv"}


@dataclass
class FaceCrop:
    crop: np.ndarray  # aligned, uint8 BGR, crop_size
    source: str  # file it came from
    frame_index: int  # 0 for images
    face_index: int  # 0 = largest face in that frame
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # 5 x 2, frame coordinates
    frame: np.ndarray | None = None  # the full frame, when asked for (keep_frames=True)


def default_detect_config(crop_size: tuple[int, int], crop_margin: float, face_detector: str = "auto") -> DetectConfig:
    """Detect settings for offline work, with the face detector resolved as the pipeline resolves it."""
    from engines.registry import resolve_face_detector

    kind, path = resolve_face_detector(face_detector)
    return DetectConfig(
        face_detector=kind,
        face_detector_path=path,
        crop_size=tuple(crop_size),
        crop_margin=crop_margin,
    )


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_media(folder: str | Path) -> list[Path]:
    """Images and videos under ``folder``, sorted, recursively."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"no such file or folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and (is_image(p) or is_video(p)))


@dataclass(frozen=True)
class Degradation:
    """What a webcam call does to a picture before anyone scores it: a dim room (``low_light``: the
    share of the light the sensor got, brought back up by the camera's gain, with the shot and read
    noise that gain amplifies), fewer pixels (``scale`` of each side) and a lossy codec -- JPEG at
    ``jpeg_quality`` on each frame, or a video's frames re-encoded in order with H.264 at ``h264_kbps``
    (a stream's bitrate: its motion prediction and rate control, which JPEG only stands in for; photos
    are then scaled only).  In that order, as a camera, its scaler and its encoder do it."""

    scale: float = 1.0
    jpeg_quality: int | None = None
    h264_kbps: int | None = None
    low_light: float | None = None
    # instead of one scale for every file: each file scaled so that its largest face (in its first frame
    # with one) is at most this tall -- faces of one resolution, whatever resolution their files had
    face_height: int | None = None

    def __post_init__(self):
        if not 0.05 <= self.scale <= 1.0:
            raise ValueError(f"frame scale {self.scale}: between 0.05 and 1")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality {self.jpeg_quality}: between 1 and 100")
        if self.h264_kbps is not None and not self.h264_kbps >= 10:
            raise ValueError(f"H.264 bitrate {self.h264_kbps} kbit/s: at least 10")
        if self.jpeg_quality is not None and self.h264_kbps is not None:
            raise ValueError("one codec at a time: JPEG quality or an H.264 bitrate, not both")
        if self.low_light is not None and not 0.005 <= self.low_light <= 1.0:
            raise ValueError(f"low light {self.low_light}: the share of the light, between 0.005 and 1")
        if self.face_height is not None and self.face_height < 16:
            raise ValueError(f"face height {self.face_height} px: at least 16")
        if self.face_height is not None and self.scale < 1.0:
            raise ValueError("one size at a time: a frame scale or a face height, not both")

    @property
    def active(self) -> bool:
        return (self.scale < 1.0 or self.jpeg_quality is not None or self.h264_kbps is not None or self.low_light is not None
                or self.face_height is not None)

    def for_face(self, face_px: float | None) -> "Degradation":
        """This degradation for a file whose largest face is ``face_px`` tall (None: no face found): the face
        height turned into the file's frame scale, never above 1 (a small face is not blown up)."""
        if self.face_height is None:
            return self
        scale = 1.0 if not face_px else min(1.0, max(0.05, self.face_height / float(face_px)))
        return replace(self, scale=scale, face_height=None)

    def apply(self, bgr: np.ndarray, index: int = 0) -> np.ndarray:
        """One picture degraded on its own: dimmed, scaled, and JPEG-compressed when asked (never H.264: see
        :meth:`recoder`). ``index`` (a frame's) seeds the sensor noise: the same frame, the same noise."""
        out = bgr
        if self.low_light is not None:
            out = dim_room(out, self.low_light, np.random.default_rng(index))
        if self.scale < 1.0:
            h, w = bgr.shape[:2]
            out = cv2.resize(out, (max(16, round(w * self.scale)), max(16, round(h * self.scale))), interpolation=cv2.INTER_AREA)
        if self.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out

    def recoder(self, fps: float) -> "H264Recoder | None":
        """A video's frames, in order, through H.264 at this bitrate (None without ``h264_kbps``)."""
        return H264Recoder(self, fps) if self.h264_kbps is not None else None


SENSOR_FULL_WELL = 2000.0  # electrons a webcam's small pixel collects at full exposure in good light
SENSOR_READ_NOISE = 3.0  # electrons
DISPLAY_GAMMA = 2.2


def dim_room(bgr: np.ndarray, light: float, rng: np.random.Generator) -> np.ndarray:
    """``bgr`` as a webcam would capture it with ``light`` of the light (0.1: a room lit ten times less):
    the sensor collects that share of the electrons (shot noise: Poisson), adds read noise, and the auto
    exposure's gain brings the picture back to its brightness, noise and all.  Each colour on its own,
    as a Bayer sensor's sites are."""
    linear = (bgr.astype(np.float32) / 255.0) ** DISPLAY_GAMMA
    expected = linear * (light * SENSOR_FULL_WELL)
    electrons = rng.poisson(expected).astype(np.float32) + rng.normal(0.0, SENSOR_READ_NOISE, bgr.shape).astype(np.float32)
    restored = np.clip(electrons / (light * SENSOR_FULL_WELL), 0.0, 1.0) ** (1.0 / DISPLAY_GAMMA)
    return (restored * 255.0 + 0.5).astype(np.uint8)


class H264Recoder:
    """Each frame of one video scaled, encoded with libx264 (zero latency: no B-frames, no look-ahead, so
    every frame comes straight back) at the degradation's bitrate and decoded again. Every frame of the
    video must pass, in order, for the motion prediction to be the stream's."""

    def __init__(self, degradation: Degradation, fps: float):
        self.degradation, self.fps = degradation, Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)
        # the room and the frame's size before the codec; the codec is H.264, below
        self.camera = Degradation(scale=degradation.scale, low_light=degradation.low_light)
        self.encoder = self.decoder = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        import av

        self.encoder = av.CodecContext.create("libx264", "w")
        self.encoder.width, self.encoder.height, self.encoder.pix_fmt = width, height, "yuv420p"
        self.encoder.bit_rate = int(self.degradation.h264_kbps) * 1000
        self.encoder.time_base, self.encoder.framerate = 1 / self.fps, self.fps
        self.encoder.options = {"preset": "veryfast", "tune": "zerolatency"}
        self.decoder = av.CodecContext.create("h264", "r")

    def apply(self, bgr: np.ndarray) -> np.ndarray:
        import av

        scaled = self.camera.apply(bgr, self.frames)
        h, w = scaled.shape[:2]
        scaled = scaled[:h - h % 2, :w - w % 2]  # 4:2:0 needs even sides
        if self.encoder is None:
            self._open(scaled.shape[1], scaled.shape[0])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(scaled), format="bgr24")
        frame.pts = self.frames
        self.frames += 1
        decoded = [d for packet in self.encoder.encode(frame) for d in self.decoder.decode(packet)]
        if not decoded:
            raise StageError("the H.264 round trip gave no frame back (the encoder buffered it)")
        return decoded[-1].to_ndarray(format="bgr24")


class FaceCropper:
    """Turns image and video files into aligned face crops with the detect stage (after a
    :class:`Degradation` of each frame, when one is given)."""

    def __init__(self, detect_config: DetectConfig, degradation: Degradation | None = None):
        self.config = detect_config
        self.degradation = degradation if degradation is not None and degradation.active else None
        self.detect = DetectStage(self.config)  # every frame it is given: process_frame(force=True)
        self.detect.open()

    def crops_from_image(self, path: str | Path, max_faces: int = 1, keep_frames: bool = False) -> list[FaceCrop]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise StageError(f"{path} is not an image file")
        return self._crops(self._message(image, 0), str(path), max_faces, keep_frames, self._for_file(image))

    def crops_from_video(
        self,
        path: str | Path,
        every_n_frames: int = 10,
        max_frames: int | None = None,
        max_faces: int = 1,
        keep_frames: bool = False,
    ) -> Iterator[FaceCrop]:
        """Crops from every ``every_n_frames``-th frame (frame sampling), up to ``max_frames`` sampled frames."""
        # the decoder (PyAV) is imported only here: a face pack trains where there is none (train.pack)
        from stages.source import SourceStage, probe

        info = probe(str(path))
        source = SourceStage(SourceConfig(info))
        source.open()
        degradation = recoder = None  # decided on the first frame (a face height needs a face to measure)
        sampled = 0
        try:
            while not source.finished:
                for packet in source.process(None):
                    for message in packet:
                        if self.degradation is not None and degradation is None:
                            degradation = self._for_file(pictures.to_bgr(message.image, message.pixel_format))
                            recoder = degradation.recoder(info.fps)
                        if recoder is not None:  # every frame, sampled or not: the codec sees the whole stream
                            message.image = recoder.apply(pictures.to_bgr(message.image, message.pixel_format))
                            message.pixel_format = pictures.BGR24
                        if message.frame_index % every_n_frames:
                            continue
                        sampled += 1
                        yield from self._crops(message, str(path), max_faces, keep_frames, degradation,
                                               degraded=recoder is not None)
                if max_frames is not None and sampled >= max_frames:
                    break
        finally:
            source.stop()
            source.close()

    def crops_from(self, path: str | Path, **kwargs) -> Iterator[FaceCrop]:
        if is_video(path):
            yield from self.crops_from_video(path, **kwargs)
        else:
            kwargs = {k: v for k, v in kwargs.items() if k in ("max_faces", "keep_frames")}
            yield from self.crops_from_image(path, **kwargs)

    @staticmethod
    def _message(image: np.ndarray, index: int) -> FrameMessage:
        return FrameMessage(stream_id=0, seq=0, frame_index=index, pts=index, time_base=(1, 1), capture_time=0.0, image=image)

    def _for_file(self, first_frame: np.ndarray) -> Degradation | None:
        """The degradation of one file: with a face height, scaled by the largest face of its first frame."""
        if self.degradation is None or self.degradation.face_height is None:
            return self.degradation
        message = self._message(first_frame.copy(), 0)
        self.detect.process_frame(message, force=True)
        return self.degradation.for_face(max((f.box[3] - f.box[1] for f in message.faces), default=None))

    def _crops(self, message: FrameMessage, source: str, max_faces: int, keep_frames: bool,
               degradation: Degradation | None = None, degraded: bool = False) -> list[FaceCrop]:
        if degradation is not None and not degraded:
            message.image = degradation.apply(pictures.to_bgr(message.image, message.pixel_format), message.frame_index)
            message.pixel_format = pictures.BGR24
        self.detect.process_frame(message, force=True)
        out = []
        for face in message.faces[:max_faces]:
            out.append(
                FaceCrop(
                    crop=message.crops[face.crop_index].copy(),
                    source=source,
                    frame_index=message.frame_index,
                    face_index=face.crop_index,
                    box=face.box,
                    landmarks=np.asarray(face.landmarks, dtype=np.float64),
                    frame=pictures.to_bgr(message.image, message.pixel_format) if keep_frames else None,
                )
            )
        return out


def source_faces_from_images(paths, face_detector: str = "auto") -> np.ndarray:
    """Aligned 112 x 112 ArcFace crops (largest face of each image), the one-shot swapper's source face."""
    from engines.inswapper import ARCFACE_SIZE, InswapperError

    files = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        try:
            files += [f for f in list_media(p) if is_image(f)]
        except FileNotFoundError as exc:
            raise InswapperError(str(exc)) from None
    if not files:
        raise InswapperError(f"no source face images in {paths}")
    cropper = FaceCropper(default_detect_config((ARCFACE_SIZE, ARCFACE_SIZE), 1.0, face_detector))
    crops = [c.crop for f in files for c in cropper.crops_from_image(f, max_faces=1)]
    if not crops:
        raise InswapperError(f"no face found in the source image(s) {', '.join(str(f) for f in files)}")
    return np.stack(crops)


def load_inswapper(model_path, embedder_path, source_images, threads: int | None = None, face_detector: str = "auto"):
    """An inswapper-style one-shot swapper (:mod:`engines.inswapper`) given the new face as photos,
    their faces found by the detect stage; every user-caused failure as a one-line MetadataError."""
    from engines.inswapper import InswapperEngine, InswapperError
    from engines.metadata import MetadataError

    try:
        return InswapperEngine(model_path, embedder_path, source_images, threads=threads,
                               source_faces=lambda: source_faces_from_images(source_images, face_detector))
    except InswapperError as exc:
        raise MetadataError(str(exc)) from None
