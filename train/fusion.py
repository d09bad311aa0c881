"""``dfstream train fusion``: detectors that see the face differently -> one checkpoint (family ``detector_fusion``).

Each member's logit is standardised on real faces (:mod:`engines.networks.fusion`); this measures
those means and spreads on the real media given -- through the fused model's own view of each
member, the crop it will be given in use -- each file weighing alike, as ``dfstream train
sharpness`` measures its reference.  ``dfstream lofo fuse`` scores such a pair from two scored
runs; this builds the one model that ships, to be exported, calibrated and scored like any detector.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from engines.metadata import ModelMetadata
from train import common

log = logging.getLogger(__name__)

# member families whose output is a P(fake) for one crop
MEMBER_FAMILIES = ("detector", "detector_ensemble", "sharpness")


def views_of(metadatas: list[ModelMetadata]) -> tuple[ModelMetadata, list[dict]]:
    """The fused input (the widest member's crop; the larger input at equal margins) and each member's view of it."""
    widest = max(metadatas, key=lambda m: (m.crop_margin, m.input_size[0] * m.input_size[1]))
    views = [{"fraction": m.crop_margin / widest.crop_margin, "input_size": list(m.input_size), "mean": list(m.mean),
              "std": list(m.std), "color_order": m.color_order} for m in metadatas]
    return widest, views


def combine(checkpoints: list[str | Path], real: list[str], output: str | Path, name: str = "dfstream-detector-fusion",
            exclude: tuple[str, ...] = (), every_n_frames: int = 4, max_frames: int = 100, face_detector: str = "auto",
            cache_dir: str | Path | None = None, progress=None) -> dict:
    """Fuse ``checkpoints``, standardising each on the faces of the ``real`` media; write ``output``."""
    import torch

    from engines.networks import build_model
    from train.datasets import model_crop, per_file_weights, real_faces, to_tensor
    from train.ensemble import load_members

    if len(checkpoints) < 2:
        raise ValueError("a fusion needs at least two detector checkpoints")
    architectures, metadatas, states = load_members(checkpoints, MEMBER_FAMILIES, "a fusion")
    widest, views = views_of(metadatas)
    records, cached = real_faces(real, exclude, every_n_frames, max_frames, face_detector, cache_dir, progress)

    architecture = {"family": "detector_fusion", "members": architectures, "views": views,
                    "input": {"mean": list(widest.mean), "std": list(widest.std), "color_order": widest.color_order},
                    "z_mean": [0.0] * len(views), "z_std": [1.0] * len(views)}
    model = build_model(architecture)
    model.members.load_state_dict({f"{i}.{key}": value for i, state in enumerate(states) for key, value in state.items()})
    model.eval()
    size = tuple(widest.input_size)
    logits = []
    with torch.no_grad():
        for start in range(0, len(cached["crops"]), 64):
            crops = np.stack([model_crop(w, lm, size, widest.crop_margin) for w, lm in
                              zip(cached["crops"][start:start + 64], cached["landmarks"][start:start + 64])])
            logits.append(model.z(to_tensor(crops, widest)).numpy())
    logits = np.concatenate(logits)
    weights = per_file_weights(cached["source"])
    z_mean = [float(np.average(logits[:, i], weights=weights)) for i in range(len(views))]
    z_std = [float(np.sqrt(np.average((logits[:, i] - z_mean[i]) ** 2, weights=weights))) for i in range(len(views))]
    if min(z_std) <= 0:
        raise ValueError(f"a member gives every real face the same score (spreads {z_std}): nothing to standardise")
    architecture.update(z_mean=z_mean, z_std=z_std)  # what a loaded checkpoint rebuilds the buffers from
    model.z_mean.copy_(torch.tensor(z_mean))
    model.z_std.copy_(torch.tensor(z_std))
    members = [{"checkpoint": str(p), "name": m.name, "crop_margin": m.crop_margin, "input_size": list(m.input_size),
                "real_logit_mean": mu, "real_logit_std": sd, "training": m.training}
               for p, m, mu, sd in zip(checkpoints, metadatas, z_mean, z_std)]
    metadata = dataclasses.replace(
        widest, name=name, threshold=0.5, metrics={}, extra={}, calibration={},  # calibrate the fusion itself
        # a face too small or too soft for any member is too small or soft for the fusion (a member whose face
        # floor alone decides leaves the fusion's face floor alone deciding too)
        min_face_px=max(m.min_face_px for m in metadatas), min_face_detail=max(m.min_face_detail for m in metadatas),
        min_surroundings_detail=0.0 if any(m.min_face_detail and not m.min_surroundings_detail for m in metadatas)
        else max(m.min_surroundings_detail for m in metadatas),
        architecture=f"sigmoid of the mean z (logit standardised on real faces) of {len(views)} detectors: "
                     + "; ".join(f"{m.architecture} (margin {m.crop_margin}, {m.input_size[0]} px)" for m in metadatas),
        training={"fusion_of": members, "reference": {"real": [str(p) for p in real], "exclude": list(exclude),
                                                      "files": len(records), "faces": int(len(logits))}})
    path = common.save_checkpoint(output, model, architecture, metadata)
    log.info("fusion of %d detectors standardised on %d real faces of %d files", len(views), len(logits), len(records))
    return {"checkpoint": str(path), "faces": int(len(logits)), "files": len(records), "z_mean": z_mean, "z_std": z_std}
