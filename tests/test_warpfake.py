"""Warp fakes: another frame of the clip carried to this frame's landmarks by a smooth field, kept whole or pasted back."""
import numpy as np
import pytest

from engines.alignment import template_points
from train.warpfake import MAX_MOTION, MIN_MOTION, MODES, choose_source, motion_field, warp_fake

SIZE = 160


def _textured(seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)


def _points() -> np.ndarray:
    return template_points((SIZE, SIZE), 2.0).astype(np.float64)


def test_a_field_through_unmoved_landmarks_is_the_identity():
    map_x, map_y = motion_field(_points(), _points(), (SIZE, SIZE))
    xx, yy = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    assert np.abs(map_x - xx).max() < 0.05 and np.abs(map_y - yy).max() < 0.05


def test_the_source_landmarks_land_on_the_driving_ones_and_the_border_stays_put():
    import cv2

    driving = _points()
    source = driving + np.array([[4, -3], [-2, 5], [6, 2], [-5, -4], [3, 6]], np.float64)  # another expression
    marked = np.full((SIZE, SIZE, 3), 200, np.uint8)
    for x, y in source:
        marked[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 0
    map_x, map_y = motion_field(driving, source, (SIZE, SIZE))
    warped = cv2.remap(marked, map_x, map_y, cv2.INTER_LINEAR)
    for x, y in driving:  # each mark is where the driving frame has that point
        assert warped[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2].min() < 100
    xx, yy = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    border = np.zeros((SIZE, SIZE), bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert np.abs(map_x - xx)[border].max() < 1.0 and np.abs(map_y - yy)[border].max() < 1.0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", MODES)
def test_a_warp_fake_is_the_source_reshaped_whole_pasted_back_or_around_the_driving_face(mode, seed):
    driving_frame, source_frame = _textured(seed), _textured(seed + 100)
    driving = _points()
    source = driving + np.random.default_rng(seed).normal(0, 3, driving.shape)
    fake, mask = warp_fake(driving_frame, driving, source_frame, source, driving, np.random.default_rng(seed),
                           return_mask=True, mode=mode)
    assert fake.shape == driving_frame.shape and fake.dtype == np.uint8
    if mode == "whole":  # the source's content everywhere
        assert mask is None
        assert np.abs(fake.astype(int) - source_frame).mean() < np.abs(fake.astype(int) - driving_frame).mean()
        return
    low, high = mask < 0.002, mask > 0.998
    assert low.any() and high.any()
    # pasted back: the driving frame outside the head mask; a refined face: the driving frame inside the face mask
    kept, replaced = (low, high) if mode == "paste_back" else (high, low)
    assert np.abs(fake[kept].astype(int) - driving_frame[kept]).max() <= 1
    assert np.abs(fake[replaced].astype(int) - driving_frame[replaced]).mean() > 20


def test_an_unknown_warp_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown warp mode"):
        warp_fake(_textured(), _points(), _textured(1), _points(), _points(), np.random.default_rng(0), mode="melt")


def test_the_source_frame_moved_enough_and_not_too_much():
    points = _points()
    face = float(np.ptp(points[:, 0])) + 1.0
    still = points + MIN_MOTION * face / 4
    far = points + MAX_MOTION * face * 2
    moved = points + np.array([MIN_MOTION * face * 2, 0.0])
    assert choose_source(points, [still, far], np.random.default_rng(0)) is None
    assert choose_source(points, [still, moved, far], np.random.default_rng(0)) == 1


def _clip_and_photo():
    """Three frames of one video (one face each, the face moving), one photo, and one frame with two people."""
    lm = _points().astype(np.float32)
    crops = np.stack([_textured(i) for i in range(6)])
    shift = np.array([3.0, 0.0], np.float32)
    landmarks = np.stack([lm, lm + shift, lm - shift, lm, lm, lm + shift])
    return {"crops": crops, "landmarks": landmarks, "labels": np.zeros(6, np.int64),
            "source": np.array([0, 0, 0, 1, 2, 2]), "frames": np.array([0, 4, 8, 0, 0, 0])}


def test_the_dataset_warps_other_frames_of_a_clip_and_blends_photos_and_two_person_frames_instead():
    from train.datasets import FaceDataset

    cached = _clip_and_photo()
    plain = FaceDataset(cached, (48, 48), 1.4, train=False)
    warped = FaceDataset(cached, (48, 48), 1.4, train=False, warp_share=1.0)
    assert set(warped._frames_of) == {0, 1}  # source 2 has two faces in one frame: no warps from it
    synthesised = {face: i for i, (face, kind) in enumerate(warped.index) if kind == 2}
    for face in (0, 1, 2):  # frames of the clip: drawn from another frame, far from a self-blend of their own
        assert np.abs(warped[synthesised[face]][0].astype(int) - plain[synthesised[face]][0]).mean() > 10, face
        assert warped[synthesised[face]][1] == 1
    for face in (3, 4, 5):  # a photo, a two-person frame: self-blends as without warps
        assert np.array_equal(warped[synthesised[face]][0], plain[synthesised[face]][0]), face


def test_warp_fakes_need_a_video_of_one_person_and_self_blending(tmp_path):
    from train.datasets import FaceDataset
    from train.detector import train

    photos = {k: v[3:5] for k, v in _clip_and_photo().items()}
    with pytest.raises(ValueError, match="videos of one person"):
        FaceDataset(photos, (48, 48), 1.4, warp_share=0.5)
    with pytest.raises(ValueError, match="--warp-fakes replaces some self-blends"):
        train({"real": ["unused"], "warp_fakes": 0.5, "sbi": False}, tmp_path / "run")
