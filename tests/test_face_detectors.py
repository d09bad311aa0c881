"""Face detectors find clear frontal faces and give landmarks in the order alignment expects."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.alignment import align_face, template_points
from engines.face_detectors import FaceDetectorError, create_face_detector
from tests.conftest import SHARED_MODELS, needs_shared_data, shared

pytestmark = needs_shared_data

DETECTORS = {
    "yunet": "face/libfacedetection_train/face_detection_yunet_2023mar.onnx",
    "scrfd": "face/libfacedetection_train/scrfd_500m_bnkps.onnx",
    "haar": None,
}


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_each_detector_finds_both_faces_of_a_two_person_photo(kind):
    path = None if DETECTORS[kind] is None else SHARED_MODELS / DETECTORS[kind]
    detector = create_face_detector(kind, path, min_score=0.5)
    image = cv2.imread(str(shared("real/face_recognition_examples/two_people.jpg")))
    faces = detector.detect_downscaled(image, 640)
    assert len(faces) == 2
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
        eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
        assert eyes[0][0] < eyes[1][0] and mouth[0][0] < mouth[1][0]  # image-left first
        assert eyes[:, 1].mean() < nose[1] < mouth[:, 1].mean()  # eyes above nose above mouth
        assert x1 <= nose[0] <= x2 and y1 <= nose[1] <= y2


def test_aligned_crops_put_the_landmarks_on_the_template():
    detector = create_face_detector("yunet", SHARED_MODELS / DETECTORS["yunet"])
    image = cv2.imread(str(shared("real/facenet_pytorch/angelina_jolie__1.jpg")))
    face = detector.detect_downscaled(image, 640)[0]
    crop, matrix = align_face(image, face.landmarks, (128, 128), margin=1.4)
    moved = np.c_[face.landmarks, np.ones(5)] @ matrix.T
    assert crop.shape == (128, 128, 3)
    assert np.abs(moved - template_points((128, 128), 1.4)).max() < 6.0  # pixels


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FaceDetectorError, match="not found"):
        create_face_detector("yunet", tmp_path / "nope.onnx")
