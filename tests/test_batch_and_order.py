"""Batching across frames and the reorder window that restores each stream's order."""
import time

import numpy as np

from pipeline.config import BatchConfig
from pipeline.messages import FrameMessage
from stages.annotate import StreamOrder
from stages.batch import BatchStage


def _frame(seq, faces, stream=0):
    return FrameMessage(stream_id=stream, seq=seq, frame_index=seq, pts=seq, time_base=(1, 25), capture_time=0.0,
                        image=np.zeros((2, 2, 3), np.uint8),
                        crops=np.zeros((faces, 4, 4, 3), np.uint8) if faces else None)


def test_a_batch_leaves_when_it_holds_max_batch_faces():
    stage = BatchStage(BatchConfig(max_batch=4, timeout_ms=10_000))
    assert stage.process([_frame(0, 2)]) == []
    out = stage.process([_frame(1, 1, stream=1), _frame(2, 1)])
    assert len(out) == 1 and [m.seq for m in out[0]] == [0, 1, 2]  # frames of two streams in one batch


def test_a_partial_batch_leaves_after_the_timeout():
    stage = BatchStage(BatchConfig(max_batch=64, timeout_ms=20))
    stage.process([_frame(0, 1)])
    deadline = stage.next_deadline()
    assert deadline is not None and deadline > time.monotonic()
    time.sleep(0.03)
    assert time.monotonic() >= stage.next_deadline()
    assert [m.seq for m in stage.tick()[0]] == [0]
    assert stage.next_deadline() is None


def test_frames_without_faces_pass_straight_through():
    stage = BatchStage(BatchConfig(max_batch=64, timeout_ms=10_000))
    out = stage.process([_frame(0, 0)])
    assert [[m.seq for m in p] for p in out] == [[0]]


def test_stream_order_releases_frames_only_in_sequence():
    order = StreamOrder(window=16)
    assert order.push(_frame(1, 0)) == []
    assert order.push(_frame(2, 0)) == []
    assert [m.seq for m in order.push(_frame(0, 0))] == [0, 1, 2]
    assert [m.seq for m in order.push(_frame(3, 0))] == [3]


def test_a_live_gap_can_be_skipped():
    order = StreamOrder(window=16)
    order.push(_frame(2, 0))
    assert [m.seq for m in order.skip_gap()] == [2]
    assert order.push(_frame(1, 0)) == []  # too late: already given up on


def test_a_live_batch_leaves_once_every_live_stream_has_a_frame_in_it():
    stage = BatchStage(BatchConfig(max_batch=64, timeout_ms=10_000, live_streams=2))
    assert stage.process([_frame(0, 1, stream=0)]) == []
    out = stage.process([_frame(0, 1, stream=1)])
    assert [(m.stream_id, m.seq) for m in out[0]] == [(0, 0), (1, 0)]


def _parts(seq):
    """The two parts detect splits a frame with crops into (stages.detect.DetectStage.process)."""
    from dataclasses import replace

    from pipeline.messages import Face, StageTiming

    whole = _frame(seq, 1)
    whole.faces = [Face(box=(0, 0, 1, 1), score=0.9, landmarks=[(0.0, 0.0)] * 5, crop_index=0)]
    whole.timings = [StageTiming("source", 1.0, 1.1), StageTiming("detect", 1.2, 1.3)]
    picture = replace(whole, crops=None, part="picture", faces=list(whole.faces), timings=list(whole.timings))
    scores = replace(whole, image=None, part="scores", faces=[replace(whole.faces[0], fake_score=0.8)],
                     timings=whole.timings + [StageTiming("batch", 1.4, 1.5), StageTiming("infer", 1.6, 1.7)])
    return picture, scores


def test_a_split_frame_is_released_once_its_picture_and_scores_are_joined():
    order = StreamOrder(window=8)
    picture, scores = _parts(0)
    assert order.push(picture) == []  # the picture alone is not the frame
    assert order.push(_frame(1, 0)) == []  # and frame 1 waits behind it
    released = order.push(scores)
    assert [m.seq for m in released] == [0, 1]
    joined = released[0]
    assert joined.part == "" and joined.image is not None and joined.faces[0].fake_score == 0.8
    assert [t.stage for t in joined.timings] == ["source", "detect", "batch", "infer"]
    # the other order of arrival joins the same way
    picture, scores = _parts(2)
    assert order.push(scores) == [] and [m.faces[0].fake_score for m in order.push(picture)] == [0.8]


def test_a_live_picture_whose_scores_never_come_is_shown_without_them():
    order = StreamOrder(window=8)
    picture, _ = _parts(0)
    order.push(picture)
    order.push(_frame(1, 0))
    lone_scores = _parts(2)[1]
    order.push(lone_scores)
    released = order.skip_gap()
    assert [m.seq for m in released] == [0, 1] and released[0].image is not None
    assert released[0].faces[0].fake_score is None
    assert order.drain() == []  # scores without their picture are dropped, not shown
    assert order.push(_parts(0)[1]) == []  # a late part of a frame already shown is ignored
