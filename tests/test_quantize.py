"""int8 export (`dfstream export --int8`): calibration on real faces, the check against fp32, and where it may run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engines.base import preprocess
from engines.loader import EngineError, tensorrt_source_for_int8
from engines.metadata import read_metadata
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.quantize import QuantizeError, quantize_int8
from dfstream.cli.models import export_command
from tests.conftest import SHARED_DATA, needs_shared_data
from tests.engine_fixtures import make_detector_checkpoint

pytestmark = [needs_shared_data, pytest.mark.usefixtures("one_torch_thread")]

PHOTOS = ("obama3.jpg", "train__obama__obama.jpg", "train__biden__biden.jpg", "test__alex_lacamoire1.jpg",
          "train__rose_leslie__img1.jpg", "two_people.jpg")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Real face photos (links into the shared data, never copies)."""
    folder = tmp_path_factory.mktemp("photos") / "real"
    folder.mkdir()
    for name in PHOTOS:
        (folder / name).symlink_to(SHARED_DATA / "real/face_recognition_examples" / name)
    return folder


@pytest.fixture(scope="module")
def exports(tmp_path_factory, photos):
    """A tiny detector (random weights whose P(fake) spreads over (0, 1)), exported fp32 and int8."""
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = make_detector_checkpoint(folder / "tiny.pt")
    fp32, int8 = folder / "tiny.onnx", folder / "tiny-int8.onnx"
    for args in ([str(checkpoint), "-o", str(fp32)],
                 [str(checkpoint), "-o", str(int8), "--int8", "--calibration", str(photos), "--calibration-crops", "12"]):
        result = CliRunner().invoke(export_command, args)
        assert result.exit_code == 0, result.output
    return fp32, int8, result.output


def _face_crops(photos: Path, metadata, count=32):
    from train.calibration import calibration_crops, media_records

    return calibration_crops(media_records([photos]), metadata, count, seed=1)


def test_int8_export_holds_int8_weights_and_says_so_in_its_metadata(exports):
    import onnx

    fp32, int8, output = exports
    graph = onnx.load(str(int8)).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    meta = read_metadata(int8)
    assert meta.extra["int8"]["calibration_crops"] == 12 and meta.architecture.endswith("; int8")
    assert "int8 (QDQ, calibrated on 12 crops) vs fp32" in output


def test_int8_scores_stay_close_to_fp32_on_faces_it_was_not_calibrated_on(exports, photos):
    fp32, int8, _ = exports
    meta = read_metadata(fp32)
    batch = preprocess(_face_crops(photos, meta), meta)
    full = OnnxRuntimeEngine(fp32, providers=["CPUExecutionProvider"]).run_tensor(batch)
    quantised = OnnxRuntimeEngine(int8, providers=["CPUExecutionProvider"]).run_tensor(batch)
    assert full.std() > 0.1  # the scores really spread, so closeness is not two constants agreeing
    assert np.abs(quantised - full).mean() <= 0.02
    assert np.corrcoef(quantised.ravel(), full.ravel())[0, 1] > 0.95


def test_a_quantisation_that_moves_scores_beyond_the_tolerance_is_refused_and_leaves_no_file(exports, photos, tmp_path):
    fp32, _, _ = exports
    meta = read_metadata(fp32)
    target = tmp_path / "strict.onnx"
    with pytest.raises(QuantizeError, match="too far"):
        quantize_int8(fp32, target, preprocess(_face_crops(photos, meta, 16), meta), tolerance=1e-9)
    assert list(tmp_path.iterdir()) == []


def test_int8_without_its_run_directory_or_calibration_media_fails_in_one_line(tmp_path):
    checkpoint = make_detector_checkpoint(tmp_path / "lone.pt")
    result = CliRunner().invoke(export_command, [str(checkpoint), "-o", str(tmp_path / "x.onnx"), "--int8"])
    assert result.exit_code == 1
    assert "--calibration" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_media_without_int8_is_a_usage_error(tmp_path, photos):
    checkpoint = make_detector_checkpoint(tmp_path / "lone.pt")
    result = CliRunner().invoke(export_command, [str(checkpoint), "--calibration", str(photos)])
    assert result.exit_code == 2 and "--int8" in result.output


def test_int8_export_calibrates_on_the_runs_own_training_faces_by_default(tmp_path, photos):
    from dfstream.cli.detector import train_detector_command

    run = tmp_path / "run"
    result = CliRunner().invoke(train_detector_command, [
        "--real", str(photos), "--run-dir", str(run), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "--steps", "2", "--val-fraction", "0", "--backbone", "mobilenetv3_small_050", "--input-size", "64",
        "--batch-size", "8", "--workers", "0", "--threads", "1", "--max-faces", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "faces.json").read_text())["train"]
    out = tmp_path / "run.onnx"
    result = CliRunner().invoke(export_command, [str(run / "checkpoints" / "last.pt"), "-o", str(out), "--int8",
                                                 "--calibration-crops", "12"])
    assert result.exit_code == 0, result.output
    assert read_metadata(out).extra["int8"]["calibration_crops"] == 12


def test_tensorrt_is_refused_an_int8_file_without_a_twin_and_auto_keeps_it_on_onnxruntime(exports):
    from engines.tensorrt_engine import BuildProfile, _plan_from_onnx

    _, int8, _ = exports
    path, backend, reason = tensorrt_source_for_int8(int8, "auto")
    assert (path, backend) == (int8, "onnxruntime") and "uint8 activations" in reason
    with pytest.raises(EngineError, match="fp32 export"):
        tensorrt_source_for_int8(int8, "tensorrt")
    with pytest.raises(EngineError, match="fp32 export"):  # dfstream build-engine reaches the builder directly
        _plan_from_onnx(int8, read_metadata(int8), BuildProfile.up_to(4))


def test_tensorrt_builds_a_packaged_int8_detector_from_its_fp32_twin_of_the_same_checkpoint():
    from engines.registry import resolve

    int8 = resolve("detector-dlib168")
    path, backend, reason = tensorrt_source_for_int8(int8, "tensorrt")
    assert backend == "tensorrt" and path == resolve("detector-dlib168-fp32") and "fp32 twin" in reason
    quantised, full = read_metadata(int8), read_metadata(path)
    assert "int8" in quantised.extra and "int8" not in full.extra
    assert quantised.extra["source"]["checkpoint_sha256"] == full.extra["source"]["checkpoint_sha256"]
    assert (quantised.input_size, quantised.crop_margin) == (full.input_size, full.crop_margin)
