"""The detector's optional high-pass (SRM) stem: what it gives the backbone, and that it survives export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.metadata import ModelMetadata
from train.common import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_high_pass_stem_keeps_the_colours_and_answers_texture_not_flat_areas():
    from engines.networks.detector import HighPassStem

    image = torch.full((1, 3, 24, 24), 0.2)
    image[:, 1, :, 12:] += 0.3 * torch.randn(24, 12, generator=torch.Generator().manual_seed(0))  # texture in green only
    out = HighPassStem()(image)
    assert out.shape == (1, 12, 24, 24) and torch.equal(out[:, :3], image)
    residuals = out[:, 3:, 3:-3, 3:-3].abs().amax(dim=(0, 2, 3)).view(3, 3)  # colour x kernel
    assert residuals[0].max() < 1e-6 and residuals[2].max() < 1e-6  # flat red and blue: nothing
    assert (residuals[1] > 0.05).all()  # every kernel answers the green texture
    assert out[:, 6:9, 3:-3, 3:8].abs().max() < 1e-6  # and not the flat half of the green channel


def test_a_detector_with_the_srm_stem_exports_to_onnx_that_matches_torch(tmp_path):
    from engines.export import export_checkpoint
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.networks import build_model, load_checkpoint

    architecture = {"family": "detector", "backbone": "mobilenetv3_small_050", "drop_rate": 0.0, "stem": "srm"}
    model = build_model(architecture).eval()
    metadata = ModelMetadata(kind="detector", name="srm", input_size=(32, 32), crop_margin=1.4, architecture="srm")
    path = save_checkpoint(tmp_path / "srm.pt", model, architecture, metadata)
    again, _ = load_checkpoint(path)  # the stem is rebuilt from the architecture, not read from the weights
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), again(x))
        expected = model(x).numpy()
    export_checkpoint(path, tmp_path / "srm.onnx")  # compared with torch inside; refused beyond 1e-4
    engine = OnnxRuntimeEngine(tmp_path / "srm.onnx", threads=1)
    assert np.allclose(engine.run_tensor(x.numpy()), expected, atol=1e-5)
    engine.close()


def test_an_unknown_stem_is_refused():
    from engines.networks import build_model

    with pytest.raises(ValueError, match="unknown stem 'dct'"):
        build_model({"family": "detector", "backbone": "mobilenetv3_small_050", "stem": "dct"})
