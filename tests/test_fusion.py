"""dfstream train fusion: detectors that see different crops -> one model, each member standardised on real faces."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from engines.metadata import ModelMetadata
from train.common import save_checkpoint
from tests.conftest import SHARED_DATA, needs_shared_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REAL = [str(SHARED_DATA / "real" / "orl_att_faces" / f"s{k}") for k in (1, 2, 3)]


def _cnn(directory, seed: int = 0, size: int = 32, margin: float = 1.4):
    from engines.networks import build_model

    torch.manual_seed(seed)
    architecture = {"family": "detector", "backbone": "mobilenetv3_small_050", "drop_rate": 0.0}
    model = build_model(architecture).eval()
    metadata = ModelMetadata(kind="detector", name=f"cnn{seed}", input_size=(size, size), crop_margin=margin,
                             architecture="mnv3", min_face_px=40)
    return save_checkpoint(directory / f"cnn{seed}.pt", model, architecture, metadata)


def _faces(n: int = 6, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Wide textured 'crops' and the 5 template landmarks of a 224 px margin-2.0 crop."""
    import cv2

    from engines.alignment import template_points

    rng = np.random.default_rng(0)
    crops = np.stack([cv2.resize(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), (size, size)) for _ in range(n)])
    return crops, template_points((size, size), 2.0)


def test_each_member_sees_the_crop_it_would_cut_itself_from_the_widest_one():
    from engines.networks.fusion import DetectorFusion
    from train.datasets import model_crop, to_tensor

    wide = ModelMetadata(kind="detector", name="w", input_size=(224, 224), crop_margin=2.0)
    tight = ModelMetadata(kind="detector", name="t", input_size=(128, 128), crop_margin=1.4)
    from train.fusion import views_of

    widest, views = views_of([tight, wide])
    assert widest is wide and views[0]["fraction"] == pytest.approx(0.7) and views[1]["fraction"] == 1.0
    fusion = DetectorFusion([torch.nn.Identity(), torch.nn.Identity()], views,
                            {"mean": wide.mean, "std": wide.std, "color_order": wide.color_order}, [0.0, 0.0], [1.0, 1.0])
    crops, lm = _faces(3)
    cut = fusion.view(to_tensor(crops, wide), 0).numpy()
    direct = to_tensor(np.stack([model_crop(c, lm, (128, 128), 1.4) for c in crops]), tight).numpy()
    assert cut.shape == direct.shape
    # the same pixels, resampled once more: close, and far closer than a crop of another margin
    other = to_tensor(np.stack([model_crop(c, lm, (128, 128), 1.8) for c in crops]), tight).numpy()
    assert np.abs(cut - direct).mean() < 0.06 < np.abs(other - direct).mean()


@needs_shared_data
def test_a_fusion_is_standardised_on_real_faces_and_exports_and_runs_as_one_detector(tmp_path):
    from dfstream.cli.detector import train_fusion_command
    from engines.export import export_checkpoint
    from engines.loader import load_engine
    from engines.networks import load_checkpoint
    from train.sharpness import fit

    fit(REAL, tmp_path / "sharp.pt", cache_dir=tmp_path / "faces")
    cnn = _cnn(tmp_path)
    result = CliRunner().invoke(train_fusion_command, [str(tmp_path / "sharp.pt"), str(cnn), *sum((["--real", r] for r in REAL), []),
                                                       "-o", str(tmp_path / "fused.pt"), "--cache-dir", str(tmp_path / "faces"),
                                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    fused, checkpoint = load_checkpoint(tmp_path / "fused.pt")
    metadata = ModelMetadata.from_dict(checkpoint["metadata"])
    assert metadata.input_size == (224, 224) and metadata.crop_margin == 2.0  # the sharpness member's, the widest
    assert metadata.min_face_px == 40 and metadata.calibration == {}
    assert [m["crop_margin"] for m in metadata.training["fusion_of"]] == [2.0, 1.4]
    # the members' standardisation: their real faces' logits have mean 0 and spread 1 by construction
    assert all(s > 0 for s in fused.z_std.tolist())
    crops, lm = _faces(4)
    from train.datasets import to_tensor

    with torch.no_grad():
        z = fused.z(to_tensor(crops, metadata))
        p = fused(to_tensor(crops, metadata))
    assert torch.allclose(p, torch.sigmoid(z.mean(dim=1)))
    export_checkpoint(tmp_path / "fused.pt", tmp_path / "fused.onnx")  # checks ONNX against torch
    engine = load_engine(str(tmp_path / "fused.onnx"), engine="onnxruntime", kind="detector")
    scores = engine.run(crops)
    assert scores.shape == (4,) and ((scores > 0) & (scores < 1)).all()


def test_a_fusion_needs_two_detectors_and_real_media_only(tmp_path):
    from train.fusion import combine

    cnn = _cnn(tmp_path)
    with pytest.raises(ValueError, match="at least two"):
        combine([cnn], REAL, tmp_path / "f.pt")
    (tmp_path / "fakes.tsv").write_text(f"{REAL[0]}/1.pgm\tfake\n")
    with pytest.raises(ValueError, match="real faces alone"):
        combine([cnn, _cnn(tmp_path, 1)], [str(tmp_path / "fakes.tsv")], tmp_path / "f.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        combine([cnn, tmp_path / "missing.pt"], REAL, tmp_path / "f.pt")


def test_each_file_weighs_the_same_in_a_reference_whatever_its_number_of_faces():
    from train.datasets import per_file_weights

    weights = per_file_weights(np.array([0, 0, 0, 1, 2, 2]))
    assert np.allclose(weights, [1 / 3, 1 / 3, 1 / 3, 1, 0.5, 0.5])
    assert np.isclose(weights[:3].sum(), weights[3]) and np.isclose(weights[4:].sum(), weights[3])
