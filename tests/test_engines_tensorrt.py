"""TensorRT: clear refusals without CUDA everywhere; build, reload and parity where a GPU is."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from engines.build import build_engine
from engines.loader import EngineError, load_engine
from engines.tensorrt_engine import cuda_and_trt_available, sidecar_path, tensorrt_missing
from dfstream.cli.models import build_engine_command
from tests.engine_fixtures import make_detector_checkpoint, make_metadata_only_checkpoint, random_crops

needs_tensorrt = pytest.mark.skipif(
    not cuda_and_trt_available(), reason=f"needs CUDA and torch-tensorrt: {'; '.join(tensorrt_missing())}")

# Largest |TensorRT fp16 - torch fp32| on P(fake) accepted: fp16 keeps ~3 significant digits.
FP16_TOLERANCE = 2e-2


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DFSTREAM_OFFLINE", "1")


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without a GPU, whatever it really has."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_build_engine_without_cuda_names_what_is_missing(tmp_path, no_cuda):
    checkpoint = make_metadata_only_checkpoint(tmp_path / "model.pt")
    with pytest.raises(EngineError, match="build-engine needs an NVIDIA GPU with CUDA and torch-tensorrt: "
                                          "no CUDA device") as info:
        build_engine(checkpoint, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(cuda_and_trt_available() or "torch-tensorrt is not installed" not in "; ".join(tensorrt_missing()),
                    reason="torch-tensorrt is installed here")
def test_build_engine_names_the_missing_extra(tmp_path):
    with pytest.raises(EngineError, match=r"pip install dfstream\[tensorrt\]"):
        build_engine(make_metadata_only_checkpoint(tmp_path / "model.pt"), tmp_path / "out")


def test_build_engine_command_without_cuda_exits_1_with_one_line(tmp_path, no_cuda):
    checkpoint = make_metadata_only_checkpoint(tmp_path / "model.pt")
    result = CliRunner().invoke(build_engine_command, [str(checkpoint), "--fp16", "--min-batch", "1",
                                                       "--opt-batch", "4", "--max-batch", "16",
                                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: build-engine needs an NVIDIA GPU") and "no CUDA device" in lines[0]


def test_build_engine_rejects_an_impossible_batch_range(tmp_path):
    with pytest.raises(EngineError, match=r"1 <= min \(8\) <= opt \(4\) <= max \(16\)"):
        build_engine(make_metadata_only_checkpoint(tmp_path / "model.pt"), tmp_path, min_batch=8, opt_batch=4,
                     max_batch=16)


def test_forcing_tensorrt_without_cuda_is_a_clear_error(tmp_path, no_cuda):
    with pytest.raises(EngineError, match="--engine tensorrt needs CUDA and torch-tensorrt: no CUDA device"):
        load_engine(make_metadata_only_checkpoint(tmp_path / "model.pt"), engine="tensorrt")


def test_an_engine_file_without_cuda_is_refused_clearly(tmp_path, no_cuda):
    engine_file = tmp_path / "model.engine"
    engine_file.write_bytes(b"plan")
    sidecar_path(engine_file).write_text(json.dumps({"kind": "detector", "name": "x", "input_size": [64, 64]}))
    with pytest.raises(EngineError, match="is a TensorRT engine, which needs CUDA and TensorRT: no CUDA device"):
        load_engine(engine_file)
    with pytest.raises(EngineError, match="only --engine tensorrt"):
        load_engine(engine_file, engine="onnxruntime")


# ---------------------------------------------------------------- on a GPU with torch-tensorrt

@pytest.fixture
def checkpoint(tmp_path):
    return make_detector_checkpoint(tmp_path / "tiny.pt")


@needs_tensorrt
def test_tensorrt_engine_matches_torch_at_batch_1_4_and_past_its_max(tmp_path, checkpoint):
    report = build_engine(checkpoint, tmp_path / "engines", fp16=True, min_batch=1, opt_batch=4, max_batch=8)
    assert report.max_abs_diff <= FP16_TOLERANCE
    engine = load_engine(report.engine)
    reference = load_engine(checkpoint, engine="torch")
    for batch in (1, 4, 11):  # 11 > max_batch: run in two pieces
        crops = random_crops(batch, seed=batch)
        np.testing.assert_allclose(engine.run(crops), reference.run(crops), rtol=0, atol=FP16_TOLERANCE)


@needs_tensorrt
def test_tensorrt_engine_is_cached_and_reloaded_without_rebuilding(checkpoint, monkeypatch):
    import engines.tensorrt_engine as trt_engine

    first = load_engine(checkpoint, engine="tensorrt", max_batch=8)

    def must_not_build(*args, **kwargs):
        raise AssertionError("rebuilt an engine that was in the cache")

    monkeypatch.setattr(trt_engine, "build_plan", must_not_build)
    second = load_engine(checkpoint, engine="tensorrt", max_batch=8)
    crops = random_crops(4)
    np.testing.assert_array_equal(first.run(crops), second.run(crops))


@needs_tensorrt
def test_an_engine_built_for_another_gpu_is_rebuilt_not_trusted(tmp_path, checkpoint, monkeypatch):
    import engines.tensorrt_engine as trt_engine

    report = build_engine(checkpoint, tmp_path / "engines", max_batch=8)
    info = json.loads(report.sidecar.read_text())
    info["tensorrt"]["target"]["gpu"] = "Some Other GPU"
    report.sidecar.write_text(json.dumps(info))
    builds = []
    real_build = trt_engine.build_plan
    monkeypatch.setattr(trt_engine, "build_plan", lambda *a, **kw: builds.append(a) or real_build(*a, **kw))
    load_engine(report.engine)
    assert len(builds) == 1
    checkpoint.unlink()  # without its source the foreign engine cannot be rebuilt: refused
    with pytest.raises(EngineError, match="was built for Some Other GPU"):
        load_engine(report.engine)


@needs_tensorrt
def test_onnx_to_tensorrt_matches_onnxruntime(tmp_path, checkpoint):
    from engines.export import export_checkpoint

    onnx_path = export_checkpoint(checkpoint, tmp_path / "tiny.onnx").output
    report = build_engine(onnx_path, tmp_path / "engines", fp16=True, max_batch=8)
    assert report.reference == "onnxruntime" and report.max_abs_diff <= FP16_TOLERANCE


def test_an_engine_and_its_sidecar_are_written_whole_with_nothing_left_beside_them(tmp_path):
    """Writing needs no GPU: the plan is bytes, the sidecar JSON says what they are for."""
    import hashlib

    from engines.metadata import ModelMetadata
    from engines.tensorrt_engine import BuildProfile, TargetInfo, write_engine

    plan = b"serialized plan"
    metadata = ModelMetadata(kind="detector", name="d", input_size=(32, 32), crop_margin=1.4, architecture="t")
    target = TargetInfo(gpu="test GPU", compute_capability="9.0", tensorrt="10", torch_tensorrt="2")
    source = tmp_path / "d.onnx"
    source.write_bytes(b"onnx")
    path = write_engine(plan, tmp_path / "engines" / "d.engine", metadata, BuildProfile(), target, source, "abc")
    assert path.read_bytes() == plan
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["name"] == "d" and "engine_sha256" in json.dumps(sidecar)
    assert hashlib.sha256(plan).hexdigest() in json.dumps(sidecar)
    assert sorted(p.name for p in path.parent.iterdir()) == ["d.engine", "d.engine.json"]  # no temporaries
