"""Tracks keep their ids across frames; scores are smoothed before a verdict is given."""
import numpy as np

from pipeline.config import AnnotateConfig, VerdictRule
from pipeline.messages import Face, FrameMessage
from stages.tracking import FaceTracker, iou


def _message(seq, boxes, scores=None, detected=True):
    faces = [Face(box=b, score=0.9, landmarks=[(0.0, 0.0)] * 5, crop_index=i,
                  fake_score=None if scores is None else scores[i]) for i, b in enumerate(boxes)]
    return FrameMessage(stream_id=0, seq=seq, frame_index=seq, pts=seq, time_base=(1, 25), capture_time=0.0,
                        image=np.zeros((1, 1, 3), np.uint8), faces=faces, detected=detected)


def test_iou_of_identical_and_disjoint_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_a_moving_face_keeps_its_track_id_and_a_new_face_gets_a_new_one():
    tracker = FaceTracker(AnnotateConfig())
    first = _message(0, [(0, 0, 100, 100)])
    tracker.update(first)
    second = _message(3, [(10, 5, 110, 105), (300, 300, 380, 380)])
    tracker.update(second)
    assert second.faces[0].track_id == first.faces[0].track_id
    assert second.faces[1].track_id not in (first.faces[0].track_id, -1)


def test_frames_without_detection_show_the_tracked_boxes():
    tracker = FaceTracker(AnnotateConfig())
    tracker.update(_message(0, [(0, 0, 100, 100)], scores=[0.9]))
    between = _message(1, [], detected=False)
    tracker.update(between)
    assert [f.box for f in between.faces] == [(0, 0, 100, 100)]


def test_one_noisy_score_does_not_flip_a_real_track_to_fake():
    config = AnnotateConfig(ema_alpha=0.3, verdict=VerdictRule(threshold=0.5, uncertain_band=0.1, min_scores=2))
    tracker = FaceTracker(config)
    box = (0, 0, 100, 100)
    verdicts = []
    for seq, score in enumerate([0.05, 0.1, 0.05, 0.95, 0.1]):
        message = _message(seq * 3, [box], scores=[score])
        tracker.update(message)
        verdicts.append(message.faces[0].verdict)
    assert verdicts[0] == "uncertain"  # one score is not enough
    assert verdicts[1:] == ["real", "real", "real", "real"]


def test_a_consistently_high_score_becomes_fake():
    tracker = FaceTracker(AnnotateConfig())
    for seq in range(4):
        message = _message(seq * 3, [(0, 0, 100, 100)], scores=[0.9])
        tracker.update(message)
    assert message.faces[0].verdict == "fake"
    assert message.faces[0].smoothed_score > 0.8


def test_the_report_judges_a_track_by_all_its_scores_while_the_picture_follows_the_latest():
    tracker = FaceTracker(AnnotateConfig(ema_alpha=0.3, verdict=VerdictRule(threshold=0.5, uncertain_band=0.1, min_scores=2)))
    for seq, score in enumerate([0.2] * 12 + [0.7] * 3):  # a real face, then a few doubtful frames at the end
        message = _message(seq * 3, [(0, 0, 100, 100)], scores=[score])
        tracker.update(message)
    (track,) = tracker.summary()
    assert track["verdict"] == message.faces[0].verdict == "uncertain"  # the moving average has climbed to ~0.53
    assert track["overall_verdict"] == "real" and abs(track["mean_score"] - 0.3) < 1e-9
