"""dfstream train ensemble: detector checkpoints -> one model whose P(fake) is their mean, exported as one ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from engines.metadata import ModelMetadata
from train.common import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _member(directory, seed: int, input_size=(32, 32), margin=1.4, kind="detector"):
    from engines.networks import build_model

    torch.manual_seed(seed)
    architecture = {"family": "detector", "backbone": "mobilenetv3_small_050", "drop_rate": 0.0}
    model = build_model(architecture).eval()
    with torch.no_grad():  # untrained heads start near 0.5 for every crop; make the members disagree
        model.backbone.get_classifier().bias.fill_(seed - 1.0)
    metadata = ModelMetadata(kind=kind, name=f"m{seed}", input_size=input_size, crop_margin=margin,
                             architecture="mnv3", training={"seed": seed})
    return save_checkpoint(directory / f"m{seed}.pt", model, architecture, metadata), model


def test_the_ensemble_scores_the_mean_of_its_members_in_torch_and_in_onnx(tmp_path):
    from engines.export import export_checkpoint
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from dfstream.cli.detector import train_ensemble_command
    from engines.networks import load_checkpoint

    (a, model_a), (b, model_b), (c, model_c) = (_member(tmp_path, s) for s in (0, 1, 2))
    result = CliRunner().invoke(train_ensemble_command, [str(a), str(b), str(c), "-o", str(tmp_path / "ens.pt")])
    assert result.exit_code == 0, result.output
    ensemble, checkpoint = load_checkpoint(tmp_path / "ens.pt")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = (model_a(x) + model_b(x) + model_c(x)) / 3
        assert torch.allclose(ensemble(x), expected, atol=1e-6)
        assert not torch.allclose(model_a(x), model_c(x), atol=1e-2)  # the mean is not any one member
    meta = ModelMetadata.from_dict(checkpoint["metadata"])
    assert meta.kind == "detector" and meta.input_size == (32, 32) and meta.crop_margin == 1.4
    assert [m["seed"] for m in meta.training["members"]] == [0, 1, 2]

    export_checkpoint(tmp_path / "ens.pt", tmp_path / "ens.onnx")  # checked against torch inside
    engine = OnnxRuntimeEngine(tmp_path / "ens.onnx", threads=1)
    assert np.allclose(engine.run_tensor(x.numpy()), expected.numpy(), atol=1e-5)
    engine.close()


def test_members_that_see_a_different_crop_are_refused(tmp_path):
    from train.ensemble import combine

    a, _ = _member(tmp_path, 0)
    (tmp_path / "other").mkdir()
    b, _ = _member(tmp_path / "other", 1, margin=1.2)
    with pytest.raises(ValueError, match="crop_margin"):
        combine([a, b], tmp_path / "ens.pt")
    c, _ = _member(tmp_path, 2, input_size=(48, 48))
    with pytest.raises(ValueError, match="input_size"):
        combine([a, c], tmp_path / "ens.pt")
    with pytest.raises(ValueError, match="at least two"):
        combine([a], tmp_path / "ens.pt")
    assert not (tmp_path / "ens.pt").exists()


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    from dfstream.cli.detector import train_ensemble_command

    a, _ = _member(tmp_path, 0)
    result = CliRunner().invoke(train_ensemble_command, [str(a), str(tmp_path / "nope.pt"), "-o", str(tmp_path / "e.pt")])
    assert result.exit_code != 0 and "nope.pt" in result.output and "Traceback" not in result.output


def test_a_mirror_mean_export_scores_the_mean_of_the_crop_and_its_mirror_image(tmp_path):
    from engines.loader import load_metadata
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from dfstream.cli.models import export_command

    path, model = _member(tmp_path, 1)
    result = CliRunner().invoke(export_command, [str(path), "-o", str(tmp_path / "m.onnx"), "--mirror-mean"])
    assert result.exit_code == 0, result.output
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = model(x), model(torch.flip(x, dims=[3]))
    assert not torch.allclose(plain, mirrored, atol=1e-4)  # the mirror is a different look
    engine = OnnxRuntimeEngine(tmp_path / "m.onnx", threads=1)
    assert np.allclose(engine.run_tensor(x.numpy()), ((plain + mirrored) / 2).numpy(), atol=1e-5)
    engine.close()
    meta = load_metadata(tmp_path / "m.onnx")
    assert meta.extra["mirror_mean"] is True and "mirror image" in meta.architecture


def test_mirror_mean_is_refused_for_a_model_that_does_not_score_faces(tmp_path):
    from dfstream.cli.models import export_command

    path, _ = _member(tmp_path, 0)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["metadata"]["output"] = "image"
    torch.save(checkpoint, path)
    result = CliRunner().invoke(export_command, [str(path), "-o", str(tmp_path / "m.onnx"), "--mirror-mean"])
    assert result.exit_code != 0 and "detectors only" in result.output and not (tmp_path / "m.onnx").exists()
