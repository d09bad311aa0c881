"""The temporal head's training sequences: real windows, self-blends, and frozen-texture warps of one frame."""
import numpy as np
import pytest

from train.temporal import SequenceSampler, frozen_texture

SIZE = 64
FRAMES = 20


def uniform_clip() -> tuple[np.ndarray, np.ndarray]:
    """Frames of one flat grey each (frame k: 10k + 5), whose five landmarks drift 0.6 px a frame:
    a warp of a flat frame stays flat, so every output pixel tells which frame it came from."""
    crops = np.stack([np.full((SIZE, SIZE, 3), 10 * k + 5, np.uint8) for k in range(FRAMES)])
    base = np.array([[22, 26], [42, 26], [32, 36], [24, 46], [40, 46]], np.float32)
    lms = np.stack([base + [0.6 * k, 0.3 * k] for k in range(FRAMES)]).astype(np.float32)
    return crops, lms


def source_frame_of(frame: np.ndarray, driving: int) -> int:
    """The frame whose value covers most of a fake frame, besides its own driving frame (a soft mask's
    blended edge is a thin ring of in-between values)."""
    values, counts = np.unique(frame[..., 0], return_counts=True)
    counts[values == 10 * driving + 5] = 0
    value = int(values[np.argmax(counts)])
    assert (value - 5) % 10 == 0, f"the warp of a flat frame is not flat: {value}"
    return (value - 5) // 10


def test_frozen_texture_warps_one_frame_outside_the_window_into_every_frame():
    crops, lms = uniform_clip()
    window = range(6, 14)
    for seed in range(12):
        frames = frozen_texture(crops, lms, None, window, np.random.default_rng(seed))
        assert frames is not None and len(frames) == len(window)
        sources = {source_frame_of(f, k) for f, k in zip(frames, window)}
        assert len(sources) == 1, sources  # the same frame for the whole sequence ...
        assert sources.pop() not in window  # ... from outside the window


def test_frozen_texture_gives_up_when_no_frame_outside_the_window_moved_enough():
    crops, lms = uniform_clip()
    still = np.repeat(lms[:1], FRAMES, 0)
    assert frozen_texture(crops, still, None, range(6, 14), np.random.default_rng(0)) is None
    assert frozen_texture(crops[:8], lms[:8], None, range(0, 8), np.random.default_rng(0)) is None


def test_sampler_keeps_real_windows_as_they_are_and_changes_fake_ones():
    crops, lms = uniform_clip()
    sampler = SequenceSampler([(crops, lms, None)], seq_len=4, size=(32, 32), margin=1.3, warp_share=1.0)
    rng = np.random.default_rng(1)
    real = sampler.sample(rng, False)
    assert real.shape == (4, 32, 32, 3)
    values = [int(frame[0, 0, 0]) for frame in real]
    assert all(len(np.unique(frame)) == 1 for frame in real)  # a flat frame, only cropped ...
    assert np.diff(values).tolist() == [10, 10, 10]  # ... of consecutive frames
    fakes = [sampler.sample(rng, True) for _ in range(6)]
    assert all(f.shape == (4, 32, 32, 3) for f in fakes)
    # each frame of a frozen-texture window shows one frame's grey: the same one along the window
    assert any(len({int(frame[16, 16, 0]) for frame in f}) == 1 for f in fakes)


def test_frozen_texture_needs_a_frame_outside_the_window():
    crops, lms = uniform_clip()
    with pytest.raises(ValueError, match="frame outside"):
        SequenceSampler([(crops[:4], lms[:4], None)], seq_len=4, size=(32, 32), margin=1.3, warp_share=0.5)
