"""Faces too small or too blurred for the detector are answered 'unscorable', never guessed: infer, tracking, eval, predict."""
import shutil
from dataclasses import replace

import numpy as np

from engines.metadata import read_metadata, write_onnx_metadata
from pipeline.config import AnnotateConfig, InferConfig, VerdictRule
from pipeline.messages import VERDICT_UNSCORABLE, Face, FrameMessage
from stages.tracking import FaceTracker
from tests.conftest import SHARED_DATA, needs_shared_data


def _with_floor(tmp_path, model, min_face_px: int, min_face_detail: float = 0.0, min_surroundings_detail: float = 0.0):
    floored = tmp_path / f"floor{min_face_px}-{min_face_detail}-{min_surroundings_detail}.onnx"
    shutil.copyfile(model, floored)
    write_onnx_metadata(floored, replace(read_metadata(model), min_face_px=min_face_px, min_face_detail=min_face_detail,
                                         min_surroundings_detail=min_surroundings_detail))
    return floored


def _texture(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8)


def _frame(boxes, crops: bool = True):
    faces = [Face(box=b, score=0.9, landmarks=[(0.0, 0.0)] * 5, crop_index=i if crops else -1) for i, b in enumerate(boxes)]
    message = FrameMessage(stream_id=0, seq=0, frame_index=0, pts=0, time_base=(1, 25), capture_time=0.0,
                           image=np.zeros((8, 8, 3), np.uint8), faces=faces, detected=True)
    message.crops = np.zeros((len(boxes), 64, 64, 3), np.uint8) if crops else None
    return message


def test_infer_leaves_a_face_under_the_models_floor_unscored(tmp_path, tiny_detector):
    from stages.infer import InferStage

    stage = InferStage(InferConfig(model_path=str(_with_floor(tmp_path, tiny_detector, 60)), engine="onnxruntime"))
    stage.open()
    message = _frame([(0, 0, 40, 40), (100, 100, 200, 220)])  # 40 px and 120 px tall
    stage.process([message])
    small, large = message.faces
    assert small.unscorable and small.fake_score is None
    assert not large.unscorable and 0.0 <= large.fake_score <= 1.0
    assert Face.from_dict(small.to_dict()).unscorable  # it travels between the stages


def test_a_track_seen_only_too_small_is_unscorable_until_it_is_scored():
    tracker = FaceTracker(AnnotateConfig(verdict=VerdictRule(min_scores=1, uncertain_band=0.05)))
    first = _frame([(0, 0, 30, 30)])
    first.faces[0].unscorable = True
    tracker.update(first)
    assert first.faces[0].verdict == VERDICT_UNSCORABLE
    assert tracker.summary()[0]["overall_verdict"] == VERDICT_UNSCORABLE
    closer = _frame([(0, 0, 32, 32)])  # the face came closer and was scored
    closer.faces[0].fake_score = 0.9
    tracker.update(closer)
    assert closer.faces[0].verdict == "fake" and tracker.summary()[0]["overall_verdict"] == "fake"


@needs_shared_data
def test_predict_and_eval_answer_unscorable_for_faces_under_the_floor(tmp_path, tiny_detector):
    from train.evaluate import evaluate
    from train.predict import format_prediction, predict

    photo = SHARED_DATA / "real" / "face_recognition_examples" / "obama3.jpg"
    floored = _with_floor(tmp_path, tiny_detector, 100_000)
    result = predict(str(photo), model=str(floored), engine="onnxruntime")
    assert result["verdict"] == "unscorable" and result["score"] is None
    assert result["faces"] and all(f["verdict"] == "unscorable" for f in result["faces"])
    assert "UNSCORABLE" in format_prediction(result)
    (tmp_path / "list.tsv").write_text(f"{photo}\treal\n{SHARED_DATA / 'fake/dfdc_train/lynaeydofd_fr0.jpg'}\tfake\n")
    report = evaluate([str(tmp_path / "list.tsv")], model=str(floored), engine="onnxruntime", output=None, ci_resamples=0)
    assert len(report["unscorable"]["files"]) == 2 and report["unscorable"]["faces"] >= 2
    assert report["files"] == [] and "too blurred to judge" in report["text"]
    plain = predict(str(photo), model=str(tiny_detector), engine="onnxruntime")
    assert plain["verdict"] in ("real", "fake")


def test_face_detail_falls_with_blur_and_barely_moves_with_brightness_and_contrast():
    import cv2

    from engines.face_detail import face_detail

    sharp = _texture()
    detail = face_detail(sharp)
    blurred = [face_detail(cv2.GaussianBlur(sharp, (0, 0), sigma)) for sigma in (0.8, 1.6, 3.2)]
    assert detail > blurred[0] > blurred[1] > blurred[2]
    dimmer = (sharp.astype(np.float32) * 0.5 + 20).astype(np.uint8)  # half the contrast, another brightness
    # dimensionless: halving the contrast moves it a little (the contrast floor, rounding), a slight blur a lot
    assert abs(face_detail(dimmer) - detail) < 0.2 * detail
    assert blurred[0] < 0.5 * detail


def test_infer_leaves_a_blurred_face_unscored_and_scores_a_sharp_one(tmp_path, tiny_detector):
    import cv2

    from engines.face_detail import face_detail
    from stages.infer import InferStage

    sharp = _texture(1)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    floor = (face_detail(sharp) + face_detail(blurred)) / 2
    stage = InferStage(InferConfig(model_path=str(_with_floor(tmp_path, tiny_detector, 0, floor)), engine="onnxruntime"))
    stage.open()
    message = _frame([(0, 0, 120, 120), (200, 0, 320, 120)])  # both large enough
    message.crops = np.stack([sharp, blurred])
    stage.process([message])
    kept, smeared = message.faces
    assert not kept.unscorable and kept.fake_score is not None
    assert smeared.unscorable and smeared.fake_score is None


def test_a_face_smoother_than_a_sharp_frame_around_it_is_judged_and_a_picture_blurred_all_over_is_not(tmp_path, tiny_detector):
    import cv2

    from engines.face_detail import face_detail, surroundings_detail
    from stages.infer import InferStage

    sharp = _texture(2)  # the tiny model's 64 px crops
    pasted = sharp.copy()  # the inner half smoothed, as a low-resolution render pasted into a sharp frame
    pasted[16:48, 16:48] = cv2.GaussianBlur(sharp, (0, 0), 3.0)[16:48, 16:48]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    assert face_detail(pasted) == face_detail(blurred) and surroundings_detail(pasted) > 2 * surroundings_detail(blurred)
    face_floor = (face_detail(sharp) + face_detail(blurred)) / 2
    around_floor = (surroundings_detail(sharp) + surroundings_detail(blurred)) / 2
    stage = InferStage(InferConfig(model_path=str(_with_floor(tmp_path, tiny_detector, 0, face_floor, around_floor)),
                                   engine="onnxruntime"))
    stage.open()
    message = _frame([(0, 0, 64, 64), (100, 0, 164, 64), (200, 0, 264, 64)])
    message.crops = np.stack([sharp, pasted, blurred])
    stage.process([message])
    assert [f.unscorable for f in message.faces] == [False, False, True]
    # without a surroundings floor (models calibrated before it), the face's detail alone decides
    alone = read_metadata(_with_floor(tmp_path, tiny_detector, 0, face_floor))
    assert [alone.scorable((0, 0, 64, 64), c) for c in (sharp, pasted, blurred)] == [True, False, False]


@needs_shared_data
def test_detail_floor_read_off_the_size_floor_flags_a_blurred_photo_but_not_the_original(tmp_path, tiny_detector):
    import cv2

    from train.detail_floor import detail_floor
    from train.predict import predict

    meta = replace(read_metadata(tiny_detector), min_face_px=56)
    clips = [SHARED_DATA / "real" / "liveportrait_driving_videos" / name for name in ("d0.mp4", "d3.mp4")]
    floor = detail_floor(clips, meta, every_n_frames=5, max_frames=12)
    assert floor["faces"] >= 20 and floor["floor"] > 0 and floor["surroundings_floor"] > 0
    photo = SHARED_DATA / "real" / "face_recognition_examples" / "obama3.jpg"
    smeared = tmp_path / "obama3_out_of_focus.jpg"
    cv2.imwrite(str(smeared), cv2.GaussianBlur(cv2.imread(str(photo)), (0, 0), 8.0))
    model = _with_floor(tmp_path, tiny_detector, 56, floor["floor"], floor["surroundings_floor"])
    assert predict(str(photo), model=str(model), engine="onnxruntime")["verdict"] in ("real", "fake")
    blurred = predict(str(smeared), model=str(model), engine="onnxruntime")
    assert blurred["faces"] and blurred["verdict"] == "unscorable"
