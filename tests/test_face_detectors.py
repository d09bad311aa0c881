"""Face detectors find clear frontal faces and give landmarks in the order alignment expects."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.alignment import align_face, template_points
from engines.face_detectors import FaceDetectorError, YuNetDetector, YuNetOnnxDetector, create_face_detector
from tests.conftest import SHARED_MODELS, needs_shared_data, shared

pytestmark = needs_shared_data

# label: (kind, model file under the shared models folder)
DETECTORS = {
    "yunet": ("yunet", "face/libfacedetection_train/yunet_s_dynamic.onnx"),  # ONNX Runtime
    "yunet-opencv": ("yunet", "face/libfacedetection_train/face_detection_yunet_2023mar.onnx"),
    "scrfd": ("scrfd", "face/libfacedetection_train/scrfd_500m_bnkps.onnx"),
    "haar": ("haar", None),
}


@pytest.mark.parametrize("label", list(DETECTORS))
def test_each_detector_finds_both_faces_of_a_two_person_photo(label):
    kind, model = DETECTORS[label]
    detector = create_face_detector(kind, None if model is None else SHARED_MODELS / model, min_score=0.5)
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


def test_yunet_finds_the_same_faces_with_onnx_runtime_as_with_opencv():
    """Our decoding of the dynamic export's outputs matches OpenCV's FaceDetectorYN on the same weights."""
    onnx_runtime = create_face_detector("yunet", SHARED_MODELS / DETECTORS["yunet"][1], min_score=0.6)
    opencv = create_face_detector("yunet", SHARED_MODELS / DETECTORS["yunet-opencv"][1], min_score=0.6)
    assert isinstance(onnx_runtime, YuNetOnnxDetector) and isinstance(opencv, YuNetDetector)
    images = [cv2.imread(str(shared(name))) for name in (
        "real/face_recognition_examples/two_people.jpg", "real/facenet_pytorch/angelina_jolie__1.jpg",
        "real/dfdc_frames/mqzvfufzoq_fr0.jpg")]
    compared = 0
    for image in images:
        ours = sorted(onnx_runtime.detect_downscaled(image, 640), key=lambda f: f.box[0])
        theirs = sorted(opencv.detect_downscaled(image, 640), key=lambda f: f.box[0])
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert np.abs(np.subtract(a.box, b.box)).max() < 1.0  # pixels
            assert np.abs(a.landmarks - b.landmarks).max() < 1.0
            assert abs(a.score - b.score) < 0.01
            compared += 1
    assert compared >= 3


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path):
    bogus = tmp_path / "yunet.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(FaceDetectorError, match="not an ONNX model"):
        create_face_detector("yunet", bogus)


def test_aligned_crops_put_the_landmarks_on_the_template():
    detector = create_face_detector("yunet", SHARED_MODELS / DETECTORS["yunet"][1])
    image = cv2.imread(str(shared("real/facenet_pytorch/angelina_jolie__1.jpg")))
    face = detector.detect_downscaled(image, 640)[0]
    crop, matrix = align_face(image, face.landmarks, (128, 128), margin=1.4)
    moved = np.c_[face.landmarks, np.ones(5)] @ matrix.T
    assert crop.shape == (128, 128, 3)
    assert np.abs(moved - template_points((128, 128), 1.4)).max() < 6.0  # pixels


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FaceDetectorError, match="not found"):
        create_face_detector("yunet", tmp_path / "nope.onnx")
