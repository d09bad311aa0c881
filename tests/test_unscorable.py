"""Faces too small for the detector are answered 'unscorable', never guessed: infer, tracking, eval, predict."""
import shutil
from dataclasses import replace

import numpy as np
import pytest

from engines.metadata import read_metadata, write_onnx_metadata
from pipeline.config import AnnotateConfig, InferConfig
from pipeline.messages import VERDICT_UNSCORABLE, Face, FrameMessage
from stages.tracking import FaceTracker
from tests.conftest import SHARED_DATA, needs_shared_data


def _with_floor(tmp_path, model, min_face_px: int):
    floored = tmp_path / f"floor{min_face_px}.onnx"
    shutil.copyfile(model, floored)
    write_onnx_metadata(floored, replace(read_metadata(model), min_face_px=min_face_px))
    return floored


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
    tracker = FaceTracker(AnnotateConfig(min_track_scores=1, uncertain_band=0.05), threshold=0.5)
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
    assert report["files"] == [] and "too small to judge" in report["text"]
    plain = predict(str(photo), model=str(tiny_detector), engine="onnxruntime")
    assert plain["verdict"] in ("real", "fake")
