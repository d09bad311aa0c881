"""Calibration crops for ``dfstream export --int8``: faces like those the model will score.

Int8 quantisation measures each layer's activation range on sample inputs; ranges taken
from random pixels or from faces framed differently than the pipeline frames them give
scales that clip real activations.  So calibration crops are cut exactly as training
crops are (:class:`train.datasets.FaceDataset`, no augmentation), half real faces and
half their self-blends, from either

* the checkpoint's own training faces (the run directory's ``faces.json``), or
* media the user names (folders or files of real faces), through the pipeline's
  decode and face-detect stages like any training media (their blends use the 5-point
  masks: no 68-point landmarks are computed for calibration).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engines.metadata import ModelMetadata
from train import common
from train.datasets import FaceDataset, cache_faces, gather, load_cached

DEFAULT_CROPS = 256

log = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """No faces to calibrate on."""


def run_dir_of(checkpoint: str | Path) -> Path:
    """The training run a checkpoint belongs to (``RUN/checkpoints/last.pt`` -> ``RUN``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def training_records(checkpoint: str | Path) -> list[dict]:
    """The cached training faces of the checkpoint's run, as recorded in its ``faces.json``."""
    faces = run_dir_of(checkpoint) / "faces.json"
    if not faces.is_file():
        raise CalibrationError(f"{checkpoint} is not inside its training run (no {faces}): "
                               "give --calibration FOLDER with real face images or videos")
    records = json.loads(faces.read_text()).get("train", [])
    missing = [rec["file"] for rec in records if not Path(rec["file"]).is_file()]
    if not records or missing:
        raise CalibrationError(f"the face cache of {faces.parent} is gone ({len(missing)} of {len(records)} files "
                               "missing): give --calibration FOLDER with real face images or videos")
    return records


def media_records(media: list[str | Path], progress=None) -> list[dict]:
    """Cached faces of the named media (every file counted as real), found by the pipeline's detect stage."""
    from train.detector import DEFAULTS

    items = gather(list(media), default_label=0)
    if not items:
        raise CalibrationError(f"no images or videos in {', '.join(str(m) for m in media)}")
    return cache_faces(items, common.cache_root() / "faces", DEFAULTS["every_n_frames"], DEFAULTS["max_frames"],
                       DEFAULTS["max_faces"], DEFAULTS["face_detector"], progress=progress)


def calibration_crops(records: list[dict], metadata: ModelMetadata, count: int = DEFAULT_CROPS,
                      seed: int = 0) -> np.ndarray:
    """``count`` uint8 BGR model crops (N x H x W x 3) drawn from the records' faces and their self-blends."""
    cached = load_cached(records)
    if len(cached["labels"]) == 0:
        raise CalibrationError("no faces found in the calibration media")
    faces = FaceDataset(cached, metadata.input_size, metadata.crop_margin, sbi=True, train=False, seed=seed)
    if len(faces) < count:
        log.warning("only %d calibration crops (%d asked for): int8 ranges measured on few faces may clip others; "
                    "give --calibration more media", len(faces), count)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(faces), min(count, len(faces)), replace=False)
    return np.stack([faces[int(i)][0] for i in chosen])
