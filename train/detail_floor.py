"""The detail floor of a detector: below it a face is too blurred to judge (``min_face_detail``).

The size floor (``min_face_px``) says how small a face may be. A large face can hold as little
detail as a small one -- out of focus, smeared by motion, upscaled by the call software -- and
then its score is as much a guess. So the detail floor is read off the size floor, on
validation faces only: each real val face at least twice the size floor is shrunk in its frame
to the size floor and cut again exactly as the pipeline cuts a crop (so it holds the detail a
face at the floor holds); the floor is the :data:`FLOOR_QUANTILE` quantile of those crops'
:func:`engines.face_detail.face_detail`. A face with less detail than nearly every face at the
size floor is treated like a face under it: ``unscorable`` -- unless the rest of its crop holds
more detail than nearly every such crop's surroundings (``min_surroundings_detail``, the same
quantile of :func:`engines.face_detail.surroundings_detail`): a face smoother than a sharp frame
around it is what a pasted face looks like, and is judged.
"""
from __future__ import annotations

import cv2
import numpy as np

from engines.alignment import align_face
from engines.face_detail import face_detail, surroundings_detail

FLOOR_QUANTILE = 0.10  # a face with less detail than 90 % of faces at the size floor is below the floor
MIN_FACES = 20  # fewer faces than this: no floor (a quantile of a handful would be noise)


def detail_at_size(frame_bgr: np.ndarray, landmarks: np.ndarray, box_height: float, face_px: float,
                   size: tuple[int, int], margin: float) -> tuple[float, float]:
    """The detail of this face's aligned crop had it been ``face_px`` tall in its frame: (the face's,
    its surroundings')."""
    scale = face_px / box_height
    height, width = frame_bgr.shape[:2]
    small = cv2.resize(frame_bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    crop, _ = align_face(small, np.asarray(landmarks, np.float32) * scale, size, margin)
    return face_detail(crop), surroundings_detail(crop)


def detail_floor(files, metadata, face_detector: str = "auto", every_n_frames: int = 10, max_frames: int = 16,
                 progress=None) -> dict:
    """The floors for ``metadata``'s model from real validation ``files`` (paths): {"floor" (the face's),
    "surroundings_floor", "faces", ...}.

    Both are 0.0 (no detail check) when the model has no size floor or fewer than :data:`MIN_FACES`
    faces were large enough to measure."""
    from stages.faces import FaceCropper, default_detect_config

    result = {"quantile": FLOOR_QUANTILE, "min_face_px": int(metadata.min_face_px), "faces": 0, "floor": 0.0,
              "surroundings_floor": 0.0}
    if not metadata.min_face_px:
        return result
    size, margin = tuple(metadata.input_size), metadata.crop_margin
    cropper = FaceCropper(default_detect_config(size, margin, face_detector))
    details = []
    iterator = progress(files, desc="detail floor") if progress else files
    for path in iterator:
        for face in cropper.crops_from(path, every_n_frames=every_n_frames, max_frames=max_frames, max_faces=1,
                                       keep_frames=True):
            box_height = float(face.box[3] - face.box[1])
            if box_height >= 2 * metadata.min_face_px and face.frame is not None:
                details.append(detail_at_size(face.frame, face.landmarks, box_height, metadata.min_face_px, size, margin))
    result["faces"] = len(details)
    if len(details) >= MIN_FACES:
        face, surroundings = np.array(details).T
        result["floor"] = float(np.quantile(face, FLOOR_QUANTILE))
        result["surroundings_floor"] = float(np.quantile(surroundings, FLOOR_QUANTILE))
    return result
