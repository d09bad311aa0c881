"""Reading ONNX files from the wire format: subnormal weights set to zero, nothing else touched."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines.landmarks import create_landmarker
from engines.onnx_wire import count_subnormal_weights, flush_subnormal_weights
from engines.onnxruntime_engine import model_source
from tests.conftest import SHARED_DATA, needs_shared_data

TINY = np.float32(1e-40)  # subnormal: under float32's smallest normal number, 1.18e-38


def _matmul_model(path, weights: np.ndarray, raw: bool = True) -> None:
    """y = x @ W, W an initializer stored as raw_data (the exporters' way) or as packed float_data."""
    w = numpy_helper.from_array(weights, "W")
    if not raw:
        w = helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel().tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights.shape[1]])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.mark.parametrize("raw", [True, False])
def test_subnormal_weights_are_set_to_zero_and_every_other_weight_is_left_bit_for_bit(tmp_path, raw):
    weights = np.array([[0.5, TINY, -TINY], [1e-38 * 2, -3.0, 0.0]], np.float32)  # 2e-38 is still normal
    _matmul_model(tmp_path / "m.onnx", weights, raw)
    data = bytearray((tmp_path / "m.onnx").read_bytes())
    assert count_subnormal_weights(data) == 2
    assert flush_subnormal_weights(data) == 2 and count_subnormal_weights(data) == 0
    flushed = numpy_helper.to_array(onnx.load_from_string(bytes(data)).graph.initializer[0])
    expected = weights.copy()
    expected[0, 1:] = 0.0
    assert flushed.tobytes() == np.array([[0.5, 0.0, -0.0], [2e-38, -3.0, 0.0]], np.float32).tobytes()
    x = np.array([[1.0, 2.0]], np.float32)
    session = ort.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"x": x})[0], x @ expected)


def test_onnxruntime_is_given_the_file_itself_when_there_is_nothing_to_flush(tmp_path):
    _matmul_model(tmp_path / "plain.onnx", np.eye(2, dtype=np.float32))
    assert model_source(tmp_path / "plain.onnx") == str(tmp_path / "plain.onnx")
    _matmul_model(tmp_path / "tiny.onnx", np.array([[1.0, TINY], [0.0, 1.0]], np.float32))
    source = model_source(tmp_path / "tiny.onnx")
    assert isinstance(source, bytes) and count_subnormal_weights(source) == 0
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert model_source(tmp_path / "junk.onnx") == str(tmp_path / "junk.onnx")  # ONNX Runtime says what is wrong


@needs_shared_data
def test_the_eye_landmark_model_gives_the_same_points_with_its_subnormal_weights_flushed():
    """The shared PFLD 68-point model holds ~447 k subnormal weights (46 ms a face on an Intel core,
    2 ms flushed); flushing them must not move a single landmark."""
    from engines.blinks import LANDMARK_MODEL
    from engines.registry import resolve

    try:
        path = resolve(LANDMARK_MODEL)
    except Exception as exc:  # not installed (make models)
        pytest.skip(f"{LANDMARK_MODEL} not installed: {exc}")
    assert count_subnormal_weights(path.read_bytes()) > 100_000
    landmarker = create_landmarker(LANDMARK_MODEL)
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)
    five = np.array([[130, 100], [190, 100], [160, 130], [135, 165], [185, 165]], np.float32)
    flushed = landmarker.predict(image, [five])
    landmarker.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(landmarker.predict(image, [five]), flushed)
