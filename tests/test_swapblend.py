"""Swap blends: another face rendered into the target inside the mask, nothing outside it."""
import numpy as np
import pytest

from engines.alignment import template_points
from train.swapblend import swap_blend, warp_donor


def _faces(size=160, seed=0):
    rng = np.random.default_rng(seed)
    target = np.full((size, size, 3), 90, np.uint8) + rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    donor = np.full((size, size, 3), 200, np.uint8) - rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    lm = template_points((size, size), 1.8)
    donor_lm = (lm - size / 2) * 1.2 + size / 2 + 5  # the donor's face is larger and elsewhere in its image
    return target, lm, donor, donor_lm


@pytest.mark.parametrize("seed", range(6))
def test_swap_blend_changes_the_inner_face_only(seed):
    target, lm, donor, donor_lm = _faces(seed=seed)
    fake, mask = swap_blend(target, lm, donor, donor_lm, np.random.default_rng(seed), return_mask=True)
    changed = np.any(fake != target, axis=2)
    assert changed.any() and not (changed & (mask <= 0)).any()
    inner = mask > 0.9
    assert inner[int(lm[2, 1]), int(lm[2, 0])], "the nose is inside the swapped region"
    assert fake.shape == target.shape and fake.dtype == np.uint8


def test_swapped_face_takes_the_targets_colours():
    target, lm, donor, donor_lm = _faces()
    fake, mask = swap_blend(target, lm, donor, donor_lm, np.random.default_rng(0), return_mask=True)
    inner = mask > 0.9
    # the donor is far brighter; after the colour transfer the inner face is near the target's level
    assert abs(float(fake[inner].mean()) - float(target[inner].mean())) < 15
    assert float(donor.mean()) - float(target.mean()) > 60


def test_donor_landmarks_land_on_the_targets():
    target, lm, donor, donor_lm = _faces()
    marked = donor.copy()
    for x, y in donor_lm:
        marked[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 0
    warped = warp_donor(marked, donor_lm, lm, target.shape[:2])
    for x, y in lm:
        assert warped[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2].min() < 60


def _two_people(size=96):
    from engines.alignment import template_points

    lm = template_points((size, size), 2.0).astype(np.float32)
    dark = np.full((size, size, 3), 60, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    textured = np.where(((yy // 12 + xx // 12) % 2)[..., None] == 1, 220, 40).astype(np.uint8).repeat(3, 2)  # a checkerboard
    return {"crops": np.stack([dark, textured]), "landmarks": np.stack([lm, lm]), "labels": np.zeros(2, np.int64),
            "source": np.array([0, 1]), "frames": np.zeros(2, np.int64)}


def test_dataset_swap_share_turns_self_blends_into_swaps_from_another_source():
    from train.datasets import FaceDataset

    cached = _two_people()
    blend = 2  # index: (face 0, real), (face 1, real), then (face 0, synthesised), (face 1, synthesised)
    plain = FaceDataset(cached, (48, 48), 1.4, train=False)
    swapped = FaceDataset(cached, (48, 48), 1.4, train=False, swap_share=1.0)
    assert plain[0][1] == swapped[0][1] == 0 and swapped[blend][1] == 1
    assert np.array_equal(plain[0][0], swapped[0][0])  # real faces untouched
    # a self-blend of the flat face stays smooth inside; a swap brings the other face's texture in
    centre = slice(16, 32)
    assert swapped[blend][0][centre, centre].std() > plain[blend][0][centre, centre].std() + 5


def test_swap_blends_need_two_sources_and_a_share_between_0_and_1(tmp_path):
    from train.datasets import FaceDataset
    from train.detector import train

    one = {k: v[:1] for k, v in _two_people().items()}
    with pytest.raises(ValueError, match="two source files"):
        FaceDataset(one, (48, 48), 1.4, swap_share=0.5)
    with pytest.raises(ValueError, match="share, from 0 to 1"):
        train({"real": ["unused"], "swap_blend": 1.5}, tmp_path / "run")
