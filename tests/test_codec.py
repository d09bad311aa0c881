"""The wire format: messages survive the trip through ZeroMQ parts unchanged."""
import msgpack
import numpy as np
import pytest

from pipeline import codec
from pipeline.messages import EndOfStream, Face, FrameMessage, StageTiming


def _frame(seq=0, crops=True):
    image = np.random.default_rng(seq).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    message = FrameMessage(stream_id=2, seq=seq, frame_index=seq + 5, pts=1001 * seq, time_base=(1, 30000),
                           capture_time=123.5, image=image)
    message.faces = [Face(box=(1, 2, 30, 40), score=0.9, landmarks=[(5.0, 6.0)] * 5, crop_index=0, track_id=3,
                          fake_score=0.25)]
    message.crops = np.full((1, 16, 16, 3), seq, np.uint8) if crops else None
    message.detected = message.analysed = True
    message.timings = [StageTiming("detect", 1.0, 2.0)]
    return message


def test_a_packet_of_frames_round_trips_with_pixels_faces_and_timings():
    packet = [_frame(0), _frame(1, crops=False)]
    back = codec.decode([bytes(p) for p in codec.encode(packet)])
    assert len(back) == 2
    for sent, got in zip(packet, back):
        assert np.array_equal(sent.image, got.image)
        assert (got.crops is None) == (sent.crops is None)
        if sent.crops is not None:
            assert np.array_equal(sent.crops, got.crops)
        assert got.faces == sent.faces
        assert (got.stream_id, got.seq, got.frame_index, got.pts, got.time_base) == (2, sent.seq, sent.seq + 5, sent.pts, (1, 30000))
        assert got.timings == sent.timings


def test_pixels_travel_as_separate_parts_not_inside_the_header():
    parts = codec.encode([_frame(0)])
    assert len(parts) == 3  # header, image, crops
    assert len(bytes(parts[0])) < 1000


def test_end_of_stream_round_trips():
    marker = EndOfStream(stream_id=1, frames=99, dropped=3, error="boom")
    assert codec.decode(codec.encode(marker)) == marker


@pytest.mark.parametrize("parts", [[], [b"\xc1garbage"], [msgpack.packb({"v": 99, "type": "eos"})],
                                   [msgpack.packb({"v": 1, "type": "nonsense"})]])
def test_foreign_messages_are_refused(parts):
    with pytest.raises(codec.CodecError):
        codec.decode(parts)


def test_an_i420_picture_round_trips_with_its_pixel_format():
    message = _frame(0, crops=False)
    message.image = np.random.default_rng(1).integers(0, 255, (72, 64), dtype=np.uint8)  # 64 x 48 as I420
    message.pixel_format = "yuv420p"
    back = codec.decode([bytes(p) for p in codec.encode([message])])[0]
    assert back.pixel_format == "yuv420p" and np.array_equal(back.image, message.image)
    assert codec.decode([bytes(p) for p in codec.encode([_frame(1)])])[0].pixel_format == "bgr24"
