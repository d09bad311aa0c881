"""Backbones cut from a pretrained face detector: what they compute, that a detector on one saves and exports, and `auto`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.metadata import ModelMetadata
from tests.conftest import shared
from train.common import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ULTRAFACE = "models/face/ultraface/version-RFB-320_without_postprocessing.onnx"
ARCHITECTURE = {"family": "detector", "backbone": "ultraface_rfb320", "drop_rate": 0.0, "stem": "rgb"}


def _ultraface_tensor(path, name: str, image: np.ndarray) -> np.ndarray:
    """One inner tensor of the whole face detector, run as it ships, by ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    inner = next(v for v in graph.graph.value_info if v.name == name)
    graph.graph.output.append(inner)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([name], {"input": image})[0]


def test_the_pretrained_trunk_computes_what_the_face_detector_computes_up_to_its_cut():
    from engines.networks.backbones import TRUNKS, TrunkClassifier

    path = shared(ULTRAFACE)
    image = np.random.default_rng(0).normal(size=(1, 3, 240, 320)).astype(np.float32)
    expected = _ultraface_tensor(path, TRUNKS["ultraface_rfb320"].output, image)
    backbone = TrunkClassifier("ultraface_rfb320", num_classes=0, pretrained=True).eval()
    with torch.no_grad():
        features = backbone.forward_features(torch.from_numpy(image)).numpy()
    assert features.shape == expected.shape == (1, 256, 8, 10)  # stride 32, as the registry's description says
    assert np.allclose(features, expected, atol=1e-4)
    assert backbone.num_features == 256


def test_without_pretrained_the_same_trunk_starts_from_fresh_weights():
    from engines.networks.backbones import TrunkClassifier

    shared(ULTRAFACE)
    pretrained = TrunkClassifier("ultraface_rfb320", pretrained=True).state_dict()
    fresh = TrunkClassifier("ultraface_rfb320", pretrained=False).state_dict()
    assert pretrained.keys() == fresh.keys()
    convolutions = [k for k in pretrained if k.endswith(".weight") and pretrained[k].dim() == 4]
    assert len(convolutions) > 20
    assert not any(torch.equal(pretrained[k], fresh[k]) for k in convolutions)


def test_a_detector_on_a_face_detector_trunk_saves_reloads_and_exports_to_onnx_that_matches_torch(tmp_path):
    from engines.export import export_checkpoint
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.networks import build_model, load_checkpoint

    shared(ULTRAFACE)
    model = build_model(dict(ARCHITECTURE, pretrained=True)).eval()
    torch.nn.init.normal_(model.backbone.get_classifier().weight)  # the classifier must carry through, not sit at zero
    metadata = ModelMetadata(kind="detector", name="uf", input_size=(64, 64), crop_margin=1.4, architecture="uf")
    path = save_checkpoint(tmp_path / "uf.pt", model, dict(ARCHITECTURE, pretrained=False), metadata)
    again, _ = load_checkpoint(path)  # rebuilt from the ONNX file's graph, weights from the checkpoint
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
        assert np.allclose(again(x).numpy(), expected, atol=1e-6) and expected.std() > 1e-3
    export_checkpoint(path, tmp_path / "uf.onnx")  # compared with torch inside; refused beyond 1e-4
    engine = OnnxRuntimeEngine(tmp_path / "uf.onnx", threads=1)
    assert np.allclose(engine.run_tensor(x.numpy()), expected, atol=1e-5)
    engine.close()


def test_a_face_detector_trunk_refuses_the_high_pass_stem():
    from engines.networks import build_model

    shared(ULTRAFACE)
    with pytest.raises(ValueError, match="3 colours only"):
        build_model(dict(ARCHITECTURE, stem="srm"))


def test_auto_is_the_face_detector_trunk_when_installed_and_mobilenet_with_a_warning_when_not(tmp_path, monkeypatch, caplog):
    from engines.registry import ModelNotFoundError
    from engines.networks.backbones import choose

    shared(ULTRAFACE)
    assert choose("auto") == "ultraface_rfb320"
    assert choose("resnet18") == "resnet18"
    monkeypatch.setenv("DFSTREAM_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with caplog.at_level("WARNING"):
        assert choose("auto") == "mobilenetv3_small_100"
    assert "ultraface-rfb320" in caplog.text
    with pytest.raises(ModelNotFoundError, match="dfstream models fetch ultraface-rfb320"):
        choose("ultraface_rfb320")  # asked for by name: not installed is an error, not a fallback
