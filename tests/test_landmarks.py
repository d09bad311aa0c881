"""Dense landmarks for self-blending masks: the registered 68-point model, boxed from 5 points."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.landmarks import five_from_dense, five_point_scale
from engines.registry import LANDMARKS, REGISTRY
from tests.conftest import needs_shared_data, shared

PHOTOS = ("real/facenet_pytorch/angelina_jolie__1.jpg", "real/face_recognition_examples/obama3.jpg",
          "real/face_recognition_examples/train__biden__biden.jpg", "real/deepface_tests/img10.jpg")


def _faces(paths):
    from engines.face_detectors import create_face_detector
    from engines.registry import resolve

    detector = create_face_detector("yunet", resolve("yunet"))
    for path in paths:
        image = cv2.imread(str(shared(path)))
        faces = detector.detect(image)
        assert faces, f"no face in {path}"
        yield image, max(faces, key=lambda f: f.score).landmarks


def test_the_landmark_model_is_registered_with_how_to_box_and_scale_a_face():
    entry = REGISTRY["pfld68"]
    assert entry.kind == LANDMARKS and entry.sha256 and entry.landmark_input.points == 68
    assert entry.landmark_input.box_scale > 1


@needs_shared_data
def test_dense_landmarks_agree_with_the_face_detectors_five_points():
    from engines.landmarks import create_landmarker

    landmarker = create_landmarker("pfld68")
    assert landmarker.size == (112, 112)  # read from the ONNX file, not from the registry
    errors = []
    for image, five in _faces(PHOTOS):
        dense = landmarker.predict(image, [five])
        assert dense.shape == (1, 68, 2)
        errors.append(np.linalg.norm(five_from_dense(dense[0]) - five, axis=1).mean() / five_point_scale(five))
    # eye centres, nose tip and mouth corners within 0.15 of the eye-to-mouth distance (0.09 measured)
    assert np.median(errors) < 0.15, errors


@needs_shared_data
def test_dense_landmarks_are_cached_beside_the_faces_and_reach_the_self_blend(tmp_path):
    from train.datasets import FaceDataset, LabelledMedia, cache_dense_landmarks, cache_faces, load_cached

    items = [LabelledMedia(shared(path), 0) for path in PHOTOS[:2]]
    records = cache_dense_landmarks(cache_faces(items, tmp_path, max_faces=1), "pfld68")
    sidecars = sorted(tmp_path.glob("*-pfld68-*.npy"))
    assert len(sidecars) == 2 and all("dense" in r for r in records)
    cached = load_cached(records)
    assert cached["dense"].shape == (len(cached["crops"]), 68, 2) and np.isfinite(cached["dense"]).all()
    # in crop coordinates: on the face, inside the wide crop
    assert (cached["dense"] > 0).all() and (cached["dense"] < cached["crops"].shape[1]).all()
    mtime = sidecars[0].stat().st_mtime_ns
    cache_dense_landmarks(records, "pfld68")
    assert sidecars[0].stat().st_mtime_ns == mtime  # computed once

    dataset = FaceDataset(cached, (64, 64), 1.4, sbi=True, train=False)
    fakes = [dataset[i] for i, (_, kind) in enumerate(dataset.index) if kind == 2]
    assert fakes and all(label == 1 for _, label in fakes)


def test_a_registered_model_that_is_not_a_landmark_model_is_refused():
    from engines.landmarks import create_landmarker

    with pytest.raises(ValueError, match="not a landmark model"):
        create_landmarker("yunet")
