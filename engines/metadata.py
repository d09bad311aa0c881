"""Model metadata: what a model file says about itself.

Every dfstream model carries a :class:`ModelMetadata` -- inside ONNX files as the
``dfstream`` entry of ``metadata_props`` (JSON), inside torch checkpoints as the
``"metadata"`` dict, beside engines as ``<engine>.json``.  Stages and engines read
input size, colour order and normalisation from here; nothing else hard-codes them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

METADATA_KEY = "dfstream"

KIND_DETECTOR = "detector"  # aligned face crop -> P(fake)
KIND_SWAPPER = "swapper"  # aligned face crop -> swapped face crop
KIND_TEMPORAL = "temporal"  # sequence of crop features -> P(fake) for the sequence
MODEL_KINDS = (KIND_DETECTOR, KIND_SWAPPER, KIND_TEMPORAL)


class MetadataError(ValueError):
    """A model file without dfstream metadata, or with metadata of the wrong kind."""


@dataclass(frozen=True)
class ModelMetadata:
    kind: str
    name: str
    input_size: tuple[int, int]  # (height, width) of the aligned crop
    color_order: str = "RGB"  # channel order the network expects ("RGB" or "BGR")
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # on pixels scaled to [0, 1]
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_margin: float = 1.0  # alignment template scale: >1 shows more around the face
    output: str = "p_fake"  # "p_fake" (N,) probabilities, or "image" (N,3,H,W) in mean/std space
    labels: tuple[str, ...] = ("real", "fake")
    threshold: float = 0.5  # P(fake) at or above which a face is called fake
    # A live face's smoothed P(fake) this close to the threshold is drawn "uncertain" (train.calibrate: how far
    # a real face's smoothed score strays on its own, on validation). None: the run's default band.
    uncertain_band: float | None = None
    # A video score at or under which few of the known fakes lie (train.calibrate): live, a face is drawn "real"
    # only under this line (less the band). None: under the threshold.
    real_below: float | None = None
    # Platt scaling of a detector's P(fake), fitted on validation data (train.calibrate): {"a", "b", ...};
    # engines apply it to the network's output, so every consumer sees calibrated scores. Empty: none.
    calibration: dict = field(default_factory=dict)
    # A face whose box is shorter than this (frame pixels) is too small for this model to judge: it is
    # answered "unscorable", not scored. 0: every face is scored.
    min_face_px: int = 0
    # A face crop with less fine detail than this (engines.face_detail: blurred, smeared, upscaled from
    # few pixels) is answered "unscorable" too. 0: not checked.
    min_face_detail: float = 0.0
    # ... unless the rest of its crop holds at least this much (a face smoother than a detailed frame
    # around it is judged, not skipped: engines.face_detail). 0: the face's detail alone decides.
    min_surroundings_detail: float = 0.0
    # engines.blinks.BlinkEvidence's fields (train.calibrate --blinks): a video's or a track's score is
    # raised to its blinks' where those are more surprising for a real person. Empty: frames alone.
    blinks: dict = field(default_factory=dict)
    architecture: str = ""
    training: dict = field(default_factory=dict)  # data, command, epochs, seed ...
    metrics: dict = field(default_factory=dict)  # what `dfstream eval` measured
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise MetadataError(f"unknown model kind {self.kind!r} (expected one of {', '.join(MODEL_KINDS)})")
        if self.color_order not in ("RGB", "BGR"):
            raise MetadataError(f"color_order must be RGB or BGR, not {self.color_order!r}")
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "labels", tuple(self.labels))

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("input_size", "mean", "std", "labels"):
            d[key] = list(d[key])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMetadata":
        known = {f.name for f in fields(cls)}
        missing = {"kind", "name", "input_size"} - set(d)
        if missing:
            raise MetadataError(f"model metadata lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise MetadataError(f"model metadata is not valid JSON: {exc}") from exc

    def calibrated(self, p_fake):
        """The network's P(fake) through this model's Platt scaling: sigmoid(a * logit(p) + b)."""
        import numpy as np

        p = np.asarray(p_fake, dtype=np.float32)
        if not self.calibration:
            return p
        eps = 1e-6
        q = np.clip(p.astype(np.float64), eps, 1 - eps)
        z = float(self.calibration["a"]) * np.log(q / (1 - q)) + float(self.calibration["b"])
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def scorable(self, box, crop=None) -> bool:
        """Whether a face with this box (x1, y1, x2, y2, frame pixels) is large enough to score and,
        given its aligned ``crop``, sharp enough (``min_face_detail``) or, if not, set in a picture
        sharp enough around it (``min_surroundings_detail``)."""
        if self.min_face_px and (float(box[3]) - float(box[1])) < self.min_face_px:
            return False
        if self.min_face_detail and crop is not None:
            from engines.face_detail import face_detail, surroundings_detail

            if face_detail(crop) >= self.min_face_detail:
                return True
            return bool(self.min_surroundings_detail) and surroundings_detail(crop) >= self.min_surroundings_detail
        return True

    def expect_kind(self, kind: str, path: str | Path = "") -> "ModelMetadata":
        if self.kind != kind:
            where = f"{path} " if path else ""
            raise MetadataError(f"{where}is a {self.kind} model, not a {kind} model")
        return self


_ONNX_METADATA_PROPS = 14  # ModelProto.metadata_props (onnx.proto); StringStringEntryProto: key = 1, value = 2


def onnx_metadata_props(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict, read straight from the protobuf wire format.

    ``onnx.load`` would parse the whole graph (hundreds of MB for a swapper) after a 1.7 s
    ``import onnx``, in the CLI and in every stage process that loads a model; the metadata
    is a top-level field, so the graph's bytes are skipped unread (the file is mapped)."""
    import mmap

    from engines import onnx_wire

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError("empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            props = {}
            for number, span in onnx_wire.fields(data, 0, len(data)):
                if number != _ONNX_METADATA_PROPS or span is None:
                    continue
                entry = dict(onnx_wire.fields(data, *span))
                if 1 in entry and entry[1] is not None:
                    key = data[slice(*entry[1])].decode("utf-8")
                    value = data[slice(*entry[2])].decode("utf-8") if entry.get(2) is not None else ""
                    props[key] = value
            return props


def read_onnx_metadata(path: str | Path) -> ModelMetadata:
    """Read metadata from an ONNX file without building a session."""
    path = Path(path)
    try:
        props = onnx_metadata_props(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise MetadataError(f"{path} is not an ONNX model ({exc})") from exc
    if METADATA_KEY in props:
        return ModelMetadata.from_json(props[METADATA_KEY])
    raise MetadataError(f"{path} has no dfstream metadata (was it exported with `dfstream export`?)")


def write_onnx_metadata(path: str | Path, metadata: ModelMetadata) -> None:
    import onnx

    model = onnx.load(str(path))
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = metadata.to_json()
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> ModelMetadata:
    """Metadata of any dfstream model file: ONNX, torch checkpoint or TensorRT engine."""
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return read_onnx_metadata(path)
    sidecar = path.with_suffix(path.suffix + ".json")
    if sidecar.is_file():
        return ModelMetadata.from_json(sidecar.read_text())
    if suffix in (".pt", ".pth", ".ckpt"):
        import torch

        try:
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise MetadataError(f"{path} is not a dfstream checkpoint ({type(exc).__name__})") from exc
        if not isinstance(checkpoint, dict) or "metadata" not in checkpoint:
            raise MetadataError(f"{path} has no dfstream metadata")
        return ModelMetadata.from_dict(checkpoint["metadata"])
    raise MetadataError(f"{path}: unknown model file type {suffix!r} (expected .onnx, .pt or an engine with a .json beside it)")
