"""``dfstream train sharpness``: the sharpness-contrast detector's reference, measured on real faces alone.

The model (:mod:`engines.networks.sharpness`) has no weights to learn: it needs to know how the
detail inside a real face relates to the detail around it.  This measures that relation on
every face of the real media given (through the pipeline's own decode and detect stages, as
any training does), and writes a checkpoint holding its mean and spread; ``dfstream export``
turns it into an ONNX detector, ``dfstream calibrate`` gives it a threshold.

With ``grades`` the same real media are also measured as a call would deliver them (smaller,
H.264 at a stream's bitrate, a dim room: :data:`GRADE_SETTINGS`), and with ``conditional`` the reference
is a line, r = mean + slope * (d - detail), fitted on real faces with d the detail around the face
(:class:`engines.networks.sharpness.SharpnessContrast`): a real face is then compared with real
faces that kept as much detail around them, not with studio footage.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

INPUT_SIZE = 224  # the face and its surroundings, at about the detail the face cache keeps
MARGIN = 2.0
# the qualities a reference can pool (``--grade``): as recorded, and as the webcam calls deliver a face
GRADE_SETTINGS = {
    "recorded": {},
    "call": {"scale": 0.35, "h264_kbps": 300},  # each side to 0.35 (1280x720 to 448x252), a stream's bitrate
    "dim-call": {"scale": 0.35, "h264_kbps": 300, "low_light": 0.1},  # the same in a room with a tenth of the light
    "face100": {"face_height": 100},  # each file shrunk until its largest face is at most 100 px tall
}
GRADE_EVERY_N_FRAMES, GRADE_MAX_FRAMES = 10, 8  # a degraded grade re-decodes and re-encodes: fewer frames a file


def reference_contrast(model, crops: np.ndarray, metadata, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The model's log contrast r and detail around the face d of each uint8 BGR crop."""
    import torch

    from train.datasets import to_tensor

    rs, ds = [], []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            r, d = model.contrast_and_detail(to_tensor(crops[start:start + batch], metadata))
            rs.append(r.numpy()), ds.append(d.numpy())
    return (np.concatenate(rs), np.concatenate(ds)) if rs else (np.zeros(0, np.float32), np.zeros(0, np.float32))


def grade(name: str):
    """The :class:`stages.faces.Degradation` of a named grade (None: as recorded)."""
    from stages.faces import Degradation

    if name not in GRADE_SETTINGS:
        raise ValueError(f"grade {name!r}: one of {', '.join(GRADE_SETTINGS)}")
    return Degradation(**GRADE_SETTINGS[name]) if GRADE_SETTINGS[name] else None


def graded_real_crops(real: list[str], exclude: tuple[str, ...], degradation, face_detector: str = "auto",
                      progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(model crops, file id per crop) of the largest face in sampled frames of each real file, degraded as
    ``degradation`` says before detection, as `dfstream eval` degrades them."""
    from pipeline.stage import StageError
    from stages.faces import FaceCropper, default_detect_config
    from train.datasets import real_media

    items = real_media(real, exclude)
    cropper = FaceCropper(default_detect_config((INPUT_SIZE, INPUT_SIZE), MARGIN, face_detector), degradation)
    crops, source = [], []
    for index, item in enumerate(progress(items, desc="graded faces") if progress else items):
        try:
            found = list(cropper.crops_from(item.path, every_n_frames=GRADE_EVERY_N_FRAMES, max_frames=GRADE_MAX_FRAMES))
        except (StageError, OSError, ValueError) as exc:  # one unreadable file does not void the reference
            log.warning("skipped %s: %s", item.path, exc)
            continue
        crops += [f.crop for f in found]
        source += [index] * len(found)
    return (np.stack(crops) if crops else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)), np.asarray(source)


def fit(real: list[str], output: str | Path, sided: str = "smoother", exclude: tuple[str, ...] = (),
        name: str = "dfstream-sharpness-contrast", every_n_frames: int = 4, max_frames: int = 100,
        face_detector: str = "auto", cache_dir: str | Path | None = None, progress=None,
        grades: tuple[str, ...] = ("recorded",), conditional: bool = False) -> dict:
    """Measure the reference on the faces of ``real`` media at each of ``grades``; write the checkpoint to
    ``output``.  ``conditional``: the reference is a line in the detail around the face (see the module)."""
    from train import common
    from train.datasets import model_crop, per_file_weights, real_faces
    from engines.networks.sharpness import SIDES, SharpnessContrast

    if sided not in SIDES:
        raise ValueError(f"--sided {sided}: one of {', '.join(SIDES)}")
    if not grades:
        raise ValueError("no grade to measure the reference at")
    size = (INPUT_SIZE, INPUT_SIZE)
    metadata = common.p_fake_metadata(name, INPUT_SIZE, MARGIN, "", None, None)
    model = SharpnessContrast(size, MARGIN, metadata.mean, metadata.std, metadata.color_order).eval()
    r_parts, d_parts, w_parts, files, per_grade = [], [], [], 0, {}
    for grade_name in grades:
        degradation = grade(grade_name)
        if degradation is None:  # as recorded: the training face cache, every 4th frame
            records, cached = real_faces(real, exclude, every_n_frames, max_frames, face_detector, cache_dir, progress)
            crops = np.stack([model_crop(w, lm, size, MARGIN) for w, lm in zip(cached["crops"], cached["landmarks"])])
            source, files = cached["source"], max(files, len(records))
        else:
            crops, source = graded_real_crops(real, exclude, degradation, face_detector, progress)
            files = max(files, len(np.unique(source)))
        if len(crops) < 20:
            raise ValueError(f"only {len(crops)} real faces at grade {grade_name}: too few for a reference")
        r, d = reference_contrast(model, crops, metadata)
        r_parts.append(r), d_parts.append(d), w_parts.append(per_file_weights(source))
        per_grade[grade_name] = {"faces": int(len(r)), "mean": float(np.average(r, weights=w_parts[-1]))}
    r, d = np.concatenate(r_parts), np.concatenate(d_parts)
    weights = np.concatenate(w_parts)  # every file of every grade weighs the same
    detail = float(np.average(d, weights=weights))
    slope = 0.0
    if conditional:  # weighted least squares of r on d, centred at the mean detail
        dc = d - detail
        slope = float(np.sum(weights * dc * (r - np.average(r, weights=weights))) / np.sum(weights * dc * dc))
    mean = float(np.average(r - slope * (d - detail), weights=weights))
    std = float(np.sqrt(np.average((r - mean - slope * (d - detail)) ** 2, weights=weights)))
    architecture = {"family": "sharpness", "input_size": list(size), "margin": MARGIN, "mean": list(metadata.mean),
                    "std": list(metadata.std), "color_order": metadata.color_order, "reference_mean": mean,
                    "reference_std": std, "sided": sided, "reference_slope": slope, "reference_detail": detail}
    training = {"reference": {"files": files, "faces": int(len(r)), "mean": mean, "std": std, "slope": slope,
                              "detail": detail, "grades": per_grade},
                "sided": sided, "real": [str(p) for p in real], "exclude": list(exclude)}
    how = (f"conditional on the detail around the face (slope {slope:.3f})" if conditional else "standardised")
    description = (f"sharpness contrast of the inner face against its surroundings (engines.networks.sharpness), "
                   f"{how} on {len(r)} real faces of {files} files at {', '.join(grades)}, {sided}")
    metadata = common.p_fake_metadata(name, INPUT_SIZE, MARGIN, description, training, None)
    final = SharpnessContrast(**{k: v for k, v in architecture.items() if k != "family"})
    path = common.save_checkpoint(output, final, architecture, metadata)
    log.info("reference log contrast %.3f +- %.3f (slope %.3f) over %d faces", mean, std, slope, len(r))
    return {"checkpoint": str(path), "faces": int(len(r)), "files": files, "mean": mean, "std": std, "slope": slope,
            "grades": per_grade}
