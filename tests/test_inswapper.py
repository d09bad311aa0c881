"""engines.inswapper: a user-supplied inswapper-style ONNX swapper behind the Engine interface.

No real inswapper or ArcFace model is used (none may be downloaded): tiny stand-ins
with the same input/output signature are built here with onnx.helper.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from engines.alignment import alignment_matrix  # noqa: E402
from engines.inswapper import EmbeddingModel, InswapperEngine, InswapperError, is_inswapper_onnx  # noqa: E402
from stages.faces import load_inswapper  # noqa: E402
from engines.metadata import MetadataError  # noqa: E402

DATA = Path(os.environ.get("DFSTREAM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SOURCE_FACE = DATA / "real" / "facenet_pytorch" / "angelina_jolie__1.jpg"
TARGET_FACE = DATA / "real" / "facenet_pytorch" / "paul_rudd__1.jpg"


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_inswapper(path: Path, size: int = 128, latent: int = 512, seed: int = 0) -> Path:
    """Stand-in with inswapper's signature: target 1x3xSxS in [0,1], source 1x512 -> 1x3xSxS in [0,1].
    output = clip(0.5 * target + colour(source)); emap is the last initializer, as in insightface."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.normal(0, 1.0, (latent, 3))).astype(np.float32), "w_colour")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    shape = numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "shape")
    lo = numpy_helper.from_array(np.array(0.0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(1.0, np.float32), "hi")
    emap = numpy_helper.from_array(np.linalg.qr(rng.normal(size=(latent, latent)))[0].astype(np.float32), "emap")
    nodes = [
        helper.make_node("MatMul", ["source", "w_colour"], ["colour"]),
        helper.make_node("Reshape", ["colour", "shape"], ["colour4"]),
        helper.make_node("Mul", ["target", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "colour4"], ["mixed"]),
        helper.make_node("Clip", ["mixed", "lo", "hi"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_inswapper",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, size, size]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, latent])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])],
        initializer=[w, half, shape, lo, hi, emap],
    )
    return _save(graph, path)


def make_embedder(path: Path, dim: int = 512, seed: int = 1) -> Path:
    """Stand-in ArcFace: 1x3x112x112 -> 1x512 (global average pool, then a fixed projection)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(3, dim)).astype(np.float32), "proj")
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "proj"], ["fc1"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, dim])],
        initializer=[w],
    )
    return _save(graph, path)


def _embedding(seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=512).astype(np.float32)
    return e / np.linalg.norm(e)


def test_inswapper_engine_runs_crop_batches_with_metadata_synthesised_from_the_onnx(tmp_path):
    model = make_inswapper(tmp_path / "inswapper_tiny.onnx")
    assert is_inswapper_onnx(model)
    engine = InswapperEngine(model, source_embedding=_embedding(0))
    meta = engine.metadata
    assert meta.kind == "swapper" and meta.output == "image" and meta.input_size == (128, 128)
    assert meta.color_order == "RGB" and meta.mean == (0.0, 0.0, 0.0) and meta.std == (1.0, 1.0, 1.0)
    assert meta.crop_margin == pytest.approx(128 / 112)

    crops = np.random.default_rng(2).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    out = engine.run(crops)  # the model has a fixed batch of 1: the engine loops
    assert out.shape == (3, 128, 128, 3) and out.dtype == np.uint8
    other = InswapperEngine(model, source_embedding=_embedding(1)).run(crops)
    assert np.abs(out.astype(int) - other.astype(int)).mean() > 1  # the source identity changes the result
    assert np.array_equal(out[:, : engine.row_shift], crops[:, : engine.row_shift])  # rows the model never saw


@pytest.mark.filterwarnings("ignore::FutureWarning")  # insightface's own use of a deprecated skimage call
def test_crop_geometry_matches_insightface_up_to_the_row_shift():
    from insightface.utils.face_align import estimate_norm

    rng = np.random.default_rng(0)
    base = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
    for _ in range(5):
        lmk = base * rng.uniform(1.5, 3) + rng.uniform(0, 300, 2) + rng.normal(0, 1, (5, 2))
        ours = alignment_matrix(lmk, (128, 128), 128 / 112)
        theirs = estimate_norm(lmk, 128)
        assert np.allclose(ours[:, :2], theirs[:, :2], atol=1e-6)
        assert ours[0, 2] == pytest.approx(theirs[0, 2], abs=1e-4)
        assert ours[1, 2] - theirs[1, 2] == pytest.approx(8.0, abs=1e-4)  # what run_tensor shifts by


def test_embedding_model_returns_unit_vectors(tmp_path):
    embedder = EmbeddingModel(make_embedder(tmp_path / "arcface_tiny.onnx"))
    faces = np.random.default_rng(3).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    emb = embedder.embed(faces)
    assert emb.shape == (2, 512)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_a_model_without_the_inswapper_signature_is_refused_with_one_line(tmp_path):
    not_swapper = make_embedder(tmp_path / "arcface_tiny.onnx")
    assert not is_inswapper_onnx(not_swapper)
    with pytest.raises(InswapperError, match="not an inswapper-style model"):
        InswapperEngine(not_swapper, source_embedding=_embedding(0))
    with pytest.raises(MetadataError):
        load_inswapper(tmp_path / "missing.onnx", not_swapper, tmp_path)
    with pytest.raises(InswapperError, match="needs the source face"):
        InswapperEngine(make_inswapper(tmp_path / "s.onnx"))


@pytest.mark.skipif(not SOURCE_FACE.is_file() or not TARGET_FACE.is_file(),
                    reason="needs ../shared/data (or $DFSTREAM_DATA) with real/facenet_pytorch/ photos")
def test_inswapper_swaps_a_real_face_end_to_end_from_a_source_photo(tmp_path, monkeypatch):
    if (DATA / "models").is_dir() and not os.environ.get("DFSTREAM_MODELS"):
        monkeypatch.setenv("DFSTREAM_MODELS", str(DATA / "models"))
    from engines.blending import paste_swapped_face
    from stages.faces import FaceCropper, default_detect_config

    engine = load_inswapper(make_inswapper(tmp_path / "inswapper_tiny.onnx"), make_embedder(tmp_path / "arcface_tiny.onnx"),
                            SOURCE_FACE)
    meta = engine.metadata
    assert meta.extra["source"] == [str(SOURCE_FACE)]
    # the target face, cut by the detect stage exactly as the pipeline would for this model
    cropper = FaceCropper(default_detect_config(meta.input_size, meta.crop_margin))
    face = cropper.crops_from_image(TARGET_FACE, max_faces=1, keep_frames=True)[0]
    swapped = engine.run(face.crop[None])
    assert swapped.shape == (1, 128, 128, 3) and not np.array_equal(swapped[0], face.crop)
    frame = face.frame.copy()
    paste_swapped_face(frame, swapped[0], alignment_matrix(face.landmarks, meta.input_size, meta.crop_margin), face.crop)
    assert frame.shape == face.frame.shape and not np.array_equal(frame, face.frame)
