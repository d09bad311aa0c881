"""Sharpness contrast: a face smoother than its surroundings scores as fake; the reference comes from real faces."""
import cv2
import numpy as np
import pytest
import torch

from engines.metadata import ModelMetadata
from tests.conftest import SHARED_DATA, needs_shared_data
from train.datasets import to_tensor
from engines.networks.sharpness import SharpnessContrast, region_masks

META = ModelMetadata(kind="detector", name="t", input_size=(224, 224), crop_margin=2.0)


def _textured(seed=0, size=224):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 1.0)


def _score(model, crop):
    with torch.no_grad():
        return float(model(to_tensor(crop[None], META))[0])


def test_inner_face_and_ring_are_disjoint_and_inside_the_crop():
    inner, ring = region_masks((224, 224), 2.0)
    assert inner.sum() > 500 and ring.sum() > 500
    assert not (inner * ring).any()
    assert not ring[0].any() and not ring[-1].any() and not ring[:, 0].any()


def test_a_face_smoother_than_its_surroundings_scores_higher():
    model = SharpnessContrast(reference_mean=0.0, reference_std=0.3).eval()
    crop = _textured()
    inner, _ = region_masks((224, 224), 2.0)
    pasted = crop.copy()
    smooth = cv2.GaussianBlur(crop, (0, 0), 2.5)  # a re-rendered, lower-resolution face
    pasted[inner > 0] = smooth[inner > 0]
    assert _score(model, pasted) > _score(model, crop) + 0.3


def test_both_sided_also_flags_a_sharper_face_but_smoother_does_not():
    crop = _textured()
    _, ring = region_masks((224, 224), 2.0)
    bokeh = crop.copy()
    blurred = cv2.GaussianBlur(crop, (0, 0), 3.0)
    bokeh[ring > 0] = blurred[ring > 0]  # sharp face, blurred surroundings
    smoother = SharpnessContrast(reference_mean=0.0, reference_std=0.3, sided="smoother").eval()
    both = SharpnessContrast(reference_mean=0.0, reference_std=0.3, sided="both").eval()
    assert _score(smoother, bokeh) < 0.1 and _score(both, bokeh) > 0.9


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="sided"):
        SharpnessContrast(sided="left")
    with pytest.raises(ValueError, match="reference_std"):
        SharpnessContrast(reference_std=0.0)


@needs_shared_data
def test_reference_is_measured_on_real_faces_and_exports_as_a_detector(tmp_path):
    from engines.export import export_checkpoint
    from engines.loader import load_engine
    from train.sharpness import fit

    photos = SHARED_DATA / "real" / "orl_att_faces" / "s1"
    result = fit([str(photos), str(SHARED_DATA / "real" / "orl_att_faces" / "s2"),
                  str(SHARED_DATA / "real" / "orl_att_faces" / "s3")], tmp_path / "sharp.pt", cache_dir=tmp_path / "faces")
    assert result["faces"] >= 20 and result["std"] > 0
    export_checkpoint(tmp_path / "sharp.pt", tmp_path / "sharp.onnx")
    engine = load_engine(str(tmp_path / "sharp.onnx"), engine="onnxruntime", kind="detector")
    assert engine.metadata.input_size == (224, 224) and engine.metadata.crop_margin == 2.0
    p = engine.run(np.stack([_textured(k) for k in range(3)]))
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    (tmp_path / "fakes.tsv").write_text(f"{photos / '1.pgm'}\tfake\n")
    with pytest.raises(ValueError, match="real faces alone"):
        fit([str(tmp_path / "fakes.tsv")], tmp_path / "x.pt")


def test_a_conditional_reference_expects_less_contrast_where_the_surroundings_hold_more_detail():
    crop = _textured()
    _, ring = region_masks((224, 224), 2.0)
    busy = crop.copy()
    busy[ring > 0] = np.clip(crop.astype(int) * 2 - 128, 0, 255).astype(np.uint8)[ring > 0]  # twice the detail around
    flat = SharpnessContrast(reference_mean=0.0, reference_std=0.3).eval()
    with torch.no_grad():
        r_plain, d_plain = (v.item() for v in flat.contrast_and_detail(to_tensor(crop[None], META)))
        r_busy, d_busy = (v.item() for v in flat.contrast_and_detail(to_tensor(busy[None], META)))
    assert d_busy > d_plain + 0.5 and r_busy < r_plain - 0.5  # more detail around: the same face reads smoother
    # a line through the plain crop with slope -1: the busy crop's r is what that line expects, so it is not suspect
    conditional = SharpnessContrast(reference_mean=r_plain, reference_std=0.3, reference_slope=-1.0,
                                    reference_detail=d_plain).eval()
    standardised = SharpnessContrast(reference_mean=r_plain, reference_std=0.3).eval()
    assert _score(standardised, busy) > 0.9  # without the line: a real face before a busy background called fake
    assert abs(_score(conditional, busy) - 0.5) < 0.1 and abs(_score(conditional, crop) - 0.5) < 1e-3


@needs_shared_data
def test_reference_pools_the_grades_asked_for_and_fits_its_line_on_them(tmp_path):
    from train.sharpness import fit

    photos = SHARED_DATA / "real" / "face_recognition_examples"  # faces of 150-400 px: face100 shrinks them
    result = fit([str(photos)], tmp_path / "sharp.pt", cache_dir=tmp_path / "faces", grades=("recorded", "face100"),
                 conditional=True)
    assert set(result["grades"]) == {"recorded", "face100"}
    assert all(g["faces"] >= 5 for g in result["grades"].values())
    assert result["slope"] < 0  # on real faces: more detail around, less contrast
    architecture = torch.load(tmp_path / "sharp.pt", weights_only=False)["architecture"]
    assert architecture["reference_slope"] == result["slope"] and "reference_detail" in architecture
    with pytest.raises(ValueError, match="grade 'phone'"):
        fit([str(photos)], tmp_path / "x.pt", cache_dir=tmp_path / "faces", grades=("phone",))
