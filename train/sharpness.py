"""``dfstream train sharpness``: the sharpness-contrast detector's reference, measured on real faces alone.

The model (:mod:`engines.networks.sharpness`) has no weights to learn: it needs to know how the
detail inside a real face relates to the detail around it.  This measures that relation on
every face of the real media given (through the pipeline's own decode and detect stages, as
any training does), and writes a checkpoint holding its mean and spread; ``dfstream export``
turns it into an ONNX detector, ``dfstream calibrate`` gives it a threshold.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

INPUT_SIZE = 224  # the face and its surroundings, at about the detail the face cache keeps
MARGIN = 2.0


def reference_contrast(model, crops: np.ndarray, metadata, batch: int = 64) -> np.ndarray:
    """The model's log contrast of each uint8 BGR crop."""
    import torch

    from train.datasets import to_tensor

    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            out.append(model.contrast(to_tensor(crops[start:start + batch], metadata)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fit(real: list[str], output: str | Path, sided: str = "smoother", exclude: tuple[str, ...] = (),
        name: str = "dfstream-sharpness-contrast", every_n_frames: int = 4, max_frames: int = 100,
        face_detector: str = "auto", cache_dir: str | Path | None = None, progress=None) -> dict:
    """Measure the reference on the faces of ``real`` media; write the checkpoint to ``output``."""
    from train import common
    from train.datasets import model_crop, per_file_weights, real_faces
    from engines.networks.sharpness import SIDES, SharpnessContrast

    if sided not in SIDES:
        raise ValueError(f"--sided {sided}: one of {', '.join(SIDES)}")
    records, cached = real_faces(real, exclude, every_n_frames, max_frames, face_detector, cache_dir, progress)
    size = (INPUT_SIZE, INPUT_SIZE)
    metadata = common.p_fake_metadata(name, INPUT_SIZE, MARGIN, "", None, None)
    model = SharpnessContrast(size, MARGIN, metadata.mean, metadata.std, metadata.color_order).eval()
    crops = np.stack([model_crop(w, lm, size, MARGIN) for w, lm in zip(cached["crops"], cached["landmarks"])])
    r = reference_contrast(model, crops, metadata)
    weights = per_file_weights(cached["source"])
    mean = float(np.average(r, weights=weights))
    std = float(np.sqrt(np.average((r - mean) ** 2, weights=weights)))
    architecture = {"family": "sharpness", "input_size": list(size), "margin": MARGIN, "mean": list(metadata.mean),
                    "std": list(metadata.std), "color_order": metadata.color_order, "reference_mean": mean,
                    "reference_std": std, "sided": sided}
    training = {"reference": {"files": len(records), "faces": int(len(r)), "mean": mean, "std": std},
                "sided": sided, "real": [str(p) for p in real], "exclude": list(exclude)}
    description = (f"sharpness contrast of the inner face against its surroundings (engines.networks.sharpness), "
                   f"standardised on {len(r)} real faces of {len(records)} files, {sided}")
    metadata = common.p_fake_metadata(name, INPUT_SIZE, MARGIN, description, training, None)
    final = SharpnessContrast(**{k: v for k, v in architecture.items() if k != "family"})
    path = common.save_checkpoint(output, final, architecture, metadata)
    log.info("reference log contrast %.3f +- %.3f over %d faces", mean, std, len(r))
    return {"checkpoint": str(path), "faces": int(len(r)), "files": len(records), "mean": mean, "std": std}
