"""Pictures travel as I420; stages see BGR copies of just the parts they use, exactly."""
import cv2
import numpy as np
import pytest

from engines.alignment import alignment_matrix, cut_crops, warp_crop
from pipeline import pictures
from tests.conftest import shared
from tests.video_helpers import frame_i420


@pytest.fixture(scope="module")
def i420():
    """A real decoded 720p frame with faces, in the layout the source sends."""
    return frame_i420(shared("real/deepfacelive_sample_videos/Ben_Stiller_Owen_Wilson.mp4"), index=90)


def test_frames_travel_as_i420_unless_a_side_is_odd():
    assert pictures.wire_format(1280, 720) == pictures.YUV420P
    assert pictures.wire_format(641, 480) == pictures.BGR24
    assert pictures.wire_format(640, 481) == pictures.BGR24


def test_frame_size_reads_the_picture_not_the_array(i420):
    assert i420.shape == (1080, 1280)
    assert pictures.frame_size(i420, pictures.YUV420P) == (1280, 720)
    assert pictures.frame_size(np.zeros((720, 1280, 3), np.uint8), pictures.BGR24) == (1280, 720)


def test_a_region_of_an_i420_picture_is_that_region_of_the_whole_picture_in_bgr(i420):
    whole = pictures.to_bgr(i420, pictures.YUV420P)
    region = pictures.read_region(i420, pictures.YUV420P, (101.4, 53, 333, 287.2))
    # widened to whole chroma samples, never narrowed
    assert (region.x0, region.y0, region.x1, region.y1) == (100, 52, 334, 288)
    assert np.array_equal(region.bgr, whole[52:288, 100:334])


def test_crops_cut_from_an_i420_region_equal_crops_cut_from_the_whole_frame(i420):
    whole = pictures.to_bgr(i420, pictures.YUV420P)
    landmarks = [np.array([[600, 300], [680, 300], [640, 340], [610, 380], [670, 380]], float),
                 np.array([[5, 700], [40, 702], [22, 715], [8, 730], [36, 731]], float)]  # over the bottom edge
    matrices = [alignment_matrix(lm, (128, 128), 1.4) for lm in landmarks]
    crops = cut_crops(i420, pictures.YUV420P, matrices, (128, 128))
    for crop, matrix in zip(crops, matrices):
        assert np.array_equal(crop, warp_crop(whole, matrix, (128, 128)))


def test_the_downscaled_copy_for_the_face_detector_matches_resizing_the_bgr_frame(i420):
    whole = pictures.to_bgr(i420, pictures.YUV420P)
    small, factor = pictures.downscaled_bgr(i420, pictures.YUV420P, 640)
    assert small.shape == (360, 640, 3) and factor == 2.0
    reference = cv2.resize(whole, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 1.0


def test_drawing_on_an_i420_region_changes_only_the_pixels_drawn(i420):
    picture = i420.copy()
    region = pictures.read_region(picture, pictures.YUV420P, (200, 100, 420, 330))
    cv2.rectangle(region.bgr, (10, 10), (200, 200), (40, 40, 230), 3)
    pictures.write_region(picture, pictures.YUV420P, region)
    after = pictures.to_bgr(picture, pictures.YUV420P)
    before = pictures.to_bgr(i420, pictures.YUV420P)
    # the line is there, red, in the full-frame conversion
    line = after[100 + 110, 200 + 9:200 + 12]
    assert (line[:, 2].astype(int) - line[:, 1] > 100).all()
    # the face inside the box and everything outside the region are untouched
    y, _, _ = pictures.planes(picture)
    y0, _, _ = pictures.planes(i420)
    assert np.array_equal(y[100 + 20:100 + 190, 200 + 20:200 + 190], y0[100 + 20:100 + 190, 200 + 20:200 + 190])
    assert np.array_equal(after[:, :190], before[:, :190]) and np.array_equal(after[340:], before[340:])


def test_a_bgr_region_is_a_view_drawing_on_it_draws_on_the_picture():
    picture = np.zeros((100, 120, 3), np.uint8)
    region = pictures.read_region(picture, pictures.BGR24, (10, 10, 50, 60))
    cv2.rectangle(region.bgr, (0, 0), (20, 20), (255, 255, 255), -1)
    pictures.write_region(picture, pictures.BGR24, region)
    assert picture[15, 15].tolist() == [255, 255, 255] and picture[5, 5].tolist() == [0, 0, 0]


def test_a_region_outside_the_picture_is_none(i420):
    assert pictures.read_region(i420, pictures.YUV420P, (1300, 10, 1400, 50)) is None


def test_an_unknown_pixel_format_is_refused():
    with pytest.raises(ValueError, match="unknown pixel format"):
        pictures.to_bgr(np.zeros((4, 4, 3), np.uint8), "rgb48")


def test_a_box_outline_drawn_into_i420_planes_has_its_colour_and_leaves_the_inside_alone(i420):
    picture = i420.copy()
    pictures.draw_rectangle(picture, pictures.YUV420P, (400, 200), (600, 450), (40, 40, 230), 4)
    after, before = pictures.to_bgr(picture, pictures.YUV420P), pictures.to_bgr(i420, pictures.YUV420P)
    edge = after[300, 398:402].astype(int)  # the left line, 4 px wide, centred on x = 400
    assert (edge[:, 2] - edge[:, 1] > 120).all() and (edge[:, 2] > 150).all()
    assert np.array_equal(after[210:440, 410:590], before[210:440, 410:590])
    assert np.array_equal(after[:190], before[:190])


def test_detect_sends_a_frame_with_crops_in_two_parts_picture_round_batch_and_infer(i420):
    from engines.registry import auto_face_detector
    from pipeline.config import DetectConfig
    from pipeline.messages import FrameMessage
    from stages.detect import DetectStage

    kind, path = auto_face_detector()
    stage = DetectStage(DetectConfig(face_detector=kind, face_detector_path=path, crop_size=(64, 64), split_frames=True))
    stage.open()
    message = FrameMessage(stream_id=0, seq=7, frame_index=7, pts=7, time_base=(1, 30), capture_time=0.0, image=i420,
                           pixel_format=pictures.YUV420P, to_detect=True, to_classify=True)
    (picture,), (scores,) = stage.process([message])
    assert picture.part == "picture" and picture.image is i420 and picture.crops is None
    assert scores.part == "scores" and scores.image is None and len(scores.crops) == len(scores.faces) > 0
    assert stage.takes_bypass(picture) and not stage.takes_bypass(scores)
    # a frame the detector only looks at (no crops) stays whole
    message.to_classify, message.part, message.crops = False, "", None
    assert [p[0].part for p in stage.process([message])] == [""]


@pytest.mark.parametrize("pixel_format,height", [(pictures.YUV420P, 48), (pictures.YUV420P, 50), (pictures.BGR24, 48)])
def test_the_sink_encodes_each_picture_as_it_was_given(tmp_path, pixel_format, height):
    """I420 pictures are wrapped in place (height 48) or copied into one reused encoder frame (50: PyAV
    cannot wrap a picture whose chroma planes have an odd number of rows); BGR ones are converted. Every
    frame of the file must be its own picture, pixel for pixel where the encoder is lossless."""
    import av

    from pipeline.config import SinkConfig, StreamInfo
    from pipeline.messages import FrameMessage
    from stages.sink import VideoWriter

    width, count = 64, 12
    stream = StreamInfo(stream_id=0, name="t", url="t", kind="file", live=False, width=width, height=height,
                        fps=10.0, time_base=(1, 10), frame_count=count)
    writer = VideoWriter(tmp_path / "out.mp4", stream, SinkConfig(crf=0))  # x264 at crf 0: lossless
    rng = np.random.default_rng(0)
    sent = []
    for i in range(count):
        bgr = np.clip(rng.normal(20 * i, 30, (height, width, 3)), 0, 255).astype(np.uint8)  # means 0, 20, ..., 220
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420) if pixel_format == pictures.YUV420P else bgr
        sent.append(image)
        writer.write(FrameMessage(stream_id=0, seq=i, frame_index=i, pts=i, time_base=(1, 10), capture_time=0.0,
                                  image=image, pixel_format=pixel_format))
    writer.finish(all_audio=True)
    with av.open(str(tmp_path / "out.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == count
    if pixel_format == pictures.YUV420P:
        for frame, image in zip(frames, sent):
            assert np.array_equal(np.concatenate([np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                                                  .reshape(-1) for p in frame.planes]), image.reshape(-1))
    greys = [float(frame.to_ndarray(format="gray").mean()) for frame in frames]
    sent_greys = [float(cv2.cvtColor(pictures.to_bgr(image, pixel_format), cv2.COLOR_BGR2GRAY).mean()) for image in sent]
    assert np.allclose(greys, sent_greys, atol=3)


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_an_i420_picture_turned_is_the_bgr_picture_turned(i420, quarter_turns):
    turned = pictures.turned(i420, pictures.YUV420P, quarter_turns)
    assert turned.flags.c_contiguous
    expected = np.rot90(pictures.to_bgr(i420, pictures.YUV420P), quarter_turns)
    assert np.array_equal(pictures.to_bgr(turned, pictures.YUV420P), expected)
    assert np.array_equal(pictures.turned(expected, pictures.BGR24, -quarter_turns), pictures.to_bgr(i420, pictures.YUV420P))


def test_a_live_encoder_uses_one_thread_and_a_file_encoder_lets_ffmpeg_choose(tmp_path):
    """zerolatency slices each frame across threads that must meet for every frame: on a live run's
    busy cores one thread costs less CPU (pipeline.config.SinkConfig.live_encode_threads)."""
    from pipeline.config import SinkConfig, StreamInfo
    from stages.sink import VideoWriter

    def writer(live: bool, name: str) -> VideoWriter:
        stream = StreamInfo(stream_id=0, name=name, url=name, kind="rtsp" if live else "file", live=live, width=64,
                            height=48, fps=10.0, time_base=(1, 10), frame_count=None)
        return VideoWriter(tmp_path / f"{name}.mp4", stream, SinkConfig())

    live, file = writer(True, "live"), writer(False, "file")
    assert live.video.codec_context.thread_count == SinkConfig.live_encode_threads == 1
    assert file.video.codec_context.thread_count == 0  # FFmpeg's choice
    assert live.video.options.get("tune") == "zerolatency" and "tune" not in file.video.options
    for w in (live, file):
        w.discard()
