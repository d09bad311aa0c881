"""Export of a checkpoint to ONNX, parity between torch and ONNX Runtime, and the loader."""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from engines.export import ExportError, cached_export_path, export_checkpoint
from engines.loader import EngineError, load_engine
from engines.metadata import MetadataError, read_metadata
from engines.registry import ModelNotFoundError, sha256_of
from engines.tensorrt_engine import cuda_and_trt_available
from dfstream.cli.models import export_command
from tests.engine_fixtures import make_detector_checkpoint, random_crops

# Largest |torch - ONNX Runtime| on P(fake) accepted here: both are fp32 on the CPU and
# differ only in summation order (~1e-7 observed); 1e-5 leaves room for other CPUs.
PARITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny detector checkpoint and its ONNX export, made once through `dfstream export`."""
    folder = tmp_path_factory.mktemp("export")
    checkpoint = make_detector_checkpoint(folder / "tiny.pt")
    onnx_path = folder / "tiny.onnx"
    result = CliRunner().invoke(export_command, [str(checkpoint), "-o", str(onnx_path)])
    assert result.exit_code == 0, result.output
    return checkpoint, onnx_path, result.output


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DFSTREAM_OFFLINE", "1")
    monkeypatch.delenv("DFSTREAM_MODELS", raising=False)


def test_export_command_writes_onnx_and_prints_the_tolerance(exported):
    _, onnx_path, output = exported
    assert onnx_path.is_file()
    assert "ONNX Runtime vs torch at batch 1, 4" in output
    assert "tolerance 1e-04" in output
    assert onnx_path.stat().st_mode & 0o777 == 0o644  # an ordinary shareable file, not the temporary's 0600


def test_exported_onnx_carries_the_checkpoint_metadata(exported):
    checkpoint, onnx_path, _ = exported
    ours, theirs = read_metadata(onnx_path), read_metadata(checkpoint)
    for field in ("kind", "name", "input_size", "color_order", "mean", "std", "output", "threshold"):
        assert getattr(ours, field) == getattr(theirs, field)
    assert ours.extra["source"]["checkpoint_sha256"] == sha256_of(checkpoint)


def test_exported_onnx_has_a_dynamic_batch_axis(exported):
    import onnxruntime as ort

    _, onnx_path, _ = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic, not a fixed size
    engine = load_engine(onnx_path, engine="onnxruntime")
    assert engine.run(random_crops(7)).shape == (7,)


@pytest.mark.parametrize("batch", [1, 4])
def test_torch_and_onnxruntime_give_the_same_p_fake(exported, batch):
    checkpoint, onnx_path, _ = exported
    crops = random_crops(batch, seed=10 + batch)
    expected = load_engine(checkpoint, engine="torch").run(crops)
    got = load_engine(onnx_path, engine="onnxruntime").run(crops)
    assert got.shape == expected.shape == (batch,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=PARITY_TOLERANCE)


def test_the_parity_check_compares_outputs_that_differ(exported):
    checkpoint, _, _ = exported
    scores = load_engine(checkpoint, engine="torch").run(random_crops(16, seed=3))
    assert scores.max() - scores.min() > 0.1  # a constant model would make the parity tests vacuous


def test_export_outside_tolerance_is_refused_and_writes_nothing(exported, tmp_path, monkeypatch):
    import engines.export as export_module

    checkpoint, onnx_path, _ = exported
    monkeypatch.setattr(export_module, "export_onnx", lambda model, md, out, **kw: shutil.copyfile(onnx_path, out) and "dynamo")
    monkeypatch.setattr(export_module, "compare_with_onnxruntime", lambda *a, **kw: 0.5)
    target = tmp_path / "refused.onnx"
    with pytest.raises(ExportError, match=r"differ by 5\.00e-01 \(tolerance 1e-04\)"):
        export_checkpoint(checkpoint, target)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".onnx"]  # no temporary left behind


def test_export_of_a_missing_checkpoint_is_one_line_and_exit_1(tmp_path):
    result = CliRunner().invoke(export_command, [str(tmp_path / "nope.pt")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"Error: checkpoint not found: {tmp_path / 'nope.pt'}"]


@pytest.mark.skipif(cuda_and_trt_available(), reason="auto picks TensorRT on this machine")
def test_auto_picks_onnxruntime_without_tensorrt_and_logs_why(exported, caplog):
    _, onnx_path, _ = exported
    with caplog.at_level(logging.INFO, logger="engines.loader"):
        engine = load_engine(onnx_path)
    assert engine.backend.startswith("onnxruntime")
    assert "onnxruntime (TensorRT not usable:" in caplog.text


def test_checkpoint_on_onnxruntime_runs_its_cached_export(exported):
    checkpoint, onnx_path, _ = exported
    cached = cached_export_path(checkpoint)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(onnx_path, cached)  # as if exported before: the test needs no second export
    engine = load_engine(checkpoint, engine="onnxruntime")
    assert engine.backend.startswith("onnxruntime")
    crops = random_crops(3, seed=7)
    np.testing.assert_allclose(engine.run(crops), load_engine(checkpoint, engine="torch").run(crops),
                               rtol=0, atol=PARITY_TOLERANCE)


def test_loader_refuses_a_model_of_the_wrong_kind(exported):
    _, onnx_path, _ = exported
    with pytest.raises(MetadataError, match="is a detector model, not a swapper model"):
        load_engine(onnx_path, kind="swapper")


def test_loader_reports_a_missing_file_in_one_line(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model file not found") as info:
        load_engine(tmp_path / "missing.onnx")
    assert "\n" not in str(info.value)


def test_loader_refuses_files_that_are_not_models(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(EngineError, match="is not an ONNX model"):
        load_engine(junk)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(EngineError, match="unknown model file type '.txt'"):
        load_engine(text)


def test_torch_engine_refuses_onnx_files(exported):
    _, onnx_path, _ = exported
    with pytest.raises(EngineError, match="--engine torch runs training checkpoints"):
        load_engine(onnx_path, engine="torch")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoints_are_never_unpickled(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "dfstream-checkpoint-v1", "metadata": _RunsCodeWhenUnpickled(marker)}, evil)
    with pytest.raises(EngineError, match="evil.pt"):
        load_engine(evil, engine="torch")
    with pytest.raises(ExportError, match="evil.pt"):
        export_checkpoint(evil, tmp_path / "evil.onnx")
    assert not marker.exists()


def test_onnx_metadata_is_read_from_the_wire_format_exactly_as_onnx_reads_it(tmp_path):
    """The runtime reads metadata_props without the onnx package; onnx itself is the reference."""
    import onnx
    from onnx import TensorProto, helper

    from engines.metadata import onnx_metadata_props

    weights = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], np.random.default_rng(0).random(64 * 64).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[weights])
    model = helper.make_model(graph, doc_string="a model")
    props = {"dfstream": '{"kind": "detector", "name": "n\u00e9", "input_size": [8, 8]}', "empty": "", "z": "last"}
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert onnx_metadata_props(path) == {p.key: p.value for p in onnx.load(str(path)).metadata_props} == props
    assert read_metadata(path).name == "n\u00e9"
    path.write_bytes(path.read_bytes()[:-20])  # cut short inside the metadata
    with pytest.raises(MetadataError, match="not an ONNX model"):
        read_metadata(path)
