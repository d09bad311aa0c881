"""dlib's face-recognition network read without dlib (engines.networks.dlib_resnet).

The network file comes through the registry ("dlib-face-resnet", conftest's ``dlib_network``);
these tests skip when it is not installed (``dfstream models fetch dlib-face-resnet``, or
``$DFSTREAM_MODELS`` pointing at a folder that holds it).
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from engines.registry import ModelNotFoundError, resolve

from tests.conftest import shared
from engines.networks.dlib_resnet import DlibFaceResNet, DlibFaceNetWeights, dlib_chip_landmarks, read_dat

# Real dlib's descriptor of synthetic_chip(), produced in a scratch venv (dlib-bin 20.0.1.post1, the
# PyPI wheel of dlib 20.0.1, CPU build; numpy 2.4.6) with
#   dlib.face_recognition_model_v1(path).compute_face_descriptor(synthetic_chip())
# which, given an image only, takes it as an already aligned 150x150 RGB chip (num_jitters=0) and
# returns loss_metric's raw 128 floats: not L2-normalised (this one's norm is 1.2319).
DLIB_DESCRIPTOR = np.array([
    -0.075421706, 0.085315615, 0.07034753, -0.068314806, -0.07955967, -0.07604065, 0.01613778, 0.031089295,
    0.15037847, -0.037041996, 0.1824729, -0.033104725, -0.25440574, -0.061755616, 0.008585391, 0.08667327,
    -0.1015181, -0.05657831, -0.14166433, -0.15834154, -0.0009995862, 0.03765372, 0.002256435, -0.023106046,
    -0.0898352, -0.29181817, -0.03887914, -0.10542551, 0.029125173, -0.12754005, 0.04469003, 0.06348249,
    -0.13836648, -0.08291104, -0.014538759, 0.035144158, -0.023597172, -0.07851789, 0.15892595, -0.038510434,
    -0.0904977, -0.052055303, 0.04955811, 0.22722256, 0.22128616, -0.010314618, -0.0067494027, -0.03261177,
    0.11048434, -0.27509475, 0.031561144, 0.12630086, 0.061821, 0.092921525, 0.116203405, -0.10494284, 0.03463086,
    0.08177142, -0.14967053, 0.030411514, 0.053663015, -0.095769845, -0.09892175, -0.10155359, 0.17242534,
    0.027171474, -0.08693598, -0.11971103, 0.14370178, -0.14509676, -0.018697074, 0.06826704, -0.09094918,
    -0.12936956, -0.20746745, 0.13384439, 0.32924363, 0.20206077, -0.15236676, 0.029183388, -0.14078677,
    -0.039624006, 0.011150539, -0.023734437, -0.0463294, -0.08274987, -0.109957464, 0.044819534, 0.14311415,
    -0.06501709, -0.015653983, 0.16869065, -0.008923853, 0.024197174, -0.018455485, -0.015659833, -0.15040183,
    0.034338504, -0.09233815, -0.0024952078, 0.14981744, -0.14680429, 0.003718893, 0.08610124, -0.13401696,
    0.1388444, -0.019590896, -0.015063414, 0.039734524, -0.0015869094, -0.074857935, -0.03490148, 0.18391304,
    -0.1694646, 0.20475884, 0.15352109, 0.019513063, 0.1443968, 0.061341267, 0.115868226, -0.006465994,
    -0.008898201, -0.1141867, -0.077707194, 0.0018628333, 0.027080625, -0.009905516, 0.039371252,
])

# (C, H, W) of each level's output for a 150 x 150 chip, as dlib's net prints them: the 7x7/2 stem and
# the strided convs and pools are unpadded, and from level1 on the pooled shortcut (4x4, 2x2) is larger
# than the strided conv branch (3x3, 1x1), which add_prev zero-pads.
SHAPES_150 = {
    "stem": (32, 35, 35), "level4": (32, 35, 35), "level3": (64, 17, 17), "level2": (128, 8, 8),
    "level1": (256, 4, 4), "level0": (256, 2, 2),
}

# One face each, named in the file (face_recognition's examples): 4 people with 2-4 photos, 1 with one.
PHOTOS = {
    "train__obama__obama.jpg": "obama", "train__obama__obama2.jpg": "obama", "obama3.jpg": "obama",
    "test__obama1.jpg": "obama", "train__biden__biden.jpg": "biden", "train__biden__biden2.jpg": "biden",
    "train__kit_harington__john1.jpeg": "kit_harington", "train__kit_harington__john2.jpeg": "kit_harington",
    "test__johnsnow_test1.jpg": "kit_harington", "train__alex_lacamoire__img1.jpg": "alex_lacamoire",
    "test__alex_lacamoire1.jpg": "alex_lacamoire", "lin-manuel-miranda.png": "lin_manuel_miranda",
}
DLIB_SAME_PERSON = 0.6  # dlib's threshold on the Euclidean distance of two descriptors


def synthetic_chip() -> np.ndarray:
    """A 150x150x3 uint8 RGB chip from integer-only numpy (bit-exact anywhere): smooth 10-px blobs of
    random colour, box-blurred, plus noise, so every level sees structure at its scale."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(16, 16, 3))
    big = np.repeat(np.repeat(coarse, 10, axis=0), 10, axis=1)  # 160 x 160
    summed = np.pad(big, ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)
    k = 11
    box = (summed[k:, k:] - summed[:-k, k:] - summed[k:, :-k] + summed[:-k, :-k]) // (k * k)  # 150 x 150
    noise = rng.integers(-20, 21, size=box.shape)
    return np.clip(box + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights(dlib_network) -> DlibFaceNetWeights:
    return read_dat(dlib_network)


@pytest.fixture(scope="module")
def descriptor_net(weights) -> DlibFaceResNet:
    return DlibFaceResNet(weights).eval()


def describe(net: DlibFaceResNet, chips_rgb: np.ndarray) -> np.ndarray:
    """Descriptors of N x 150 x 150 x 3 uint8 RGB chips."""
    images = torch.from_numpy(np.ascontiguousarray(chips_rgb)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return net(net.normalise(images)).numpy()


def test_file_gives_dlibs_input_means_and_trained_size(weights):
    # the means dlib's input_rgb_image_sized<150> was saved with (its defaults)
    assert weights.rgb_mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert weights.input_size == (150, 150)
    assert weights.distance_threshold == pytest.approx(DLIB_SAME_PERSON)
    assert weights.fc_weight.shape == (128, 256)


def test_each_level_has_dlibs_output_shape_at_150_px(weights, descriptor_net):
    x = torch.zeros(2, 3, 150, 150)
    with torch.no_grad():
        for name in SHAPES_150:
            net = DlibFaceResNet(weights, up_to=name)
            kept = [child for child, _ in net.named_children()]
            assert kept[-1] == name and "fc" not in kept  # nothing built past up_to
            assert tuple(net(x).shape) == (2, *SHAPES_150[name])
            assert net.num_features == SHAPES_150[name][0]
        assert tuple(descriptor_net(x).shape) == (2, 128)
    assert descriptor_net.num_features == 128
    assert [name for name, _ in descriptor_net.named_children()] == ["stem", *list(SHAPES_150)[1:], "fc"]


def test_descriptor_matches_real_dlib_on_a_synthetic_chip(descriptor_net):
    chip = synthetic_chip()
    # the input itself, so a change in numpy's generator is not mistaken for a change in the network
    assert int(chip.astype(np.int64).sum()) == 8863778 and chip[0, 0].tolist() == [187, 169, 106]
    ours = describe(descriptor_net, chip[None])[0]
    np.testing.assert_allclose(ours, DLIB_DESCRIPTOR, rtol=0, atol=1e-4)
    assert np.linalg.norm(ours) == pytest.approx(1.2319, abs=1e-3)  # raw, like dlib's: no L2 normalisation


def test_descriptor_tells_the_same_person_from_different_people_on_real_photos(descriptor_net):
    import cv2
    from skimage.transform import SimilarityTransform

    from engines.alignment import warp_crop
    from engines.face_detectors import create_face_detector

    shared("real/face_recognition_examples")  # skips, saying where it looked, when absent
    try:
        detector = create_face_detector("yunet", resolve("yunet"), threads=1)
    except ModelNotFoundError as exc:
        pytest.skip(f"no YuNet face detector to find the faces: {exc}")
    template = dlib_chip_landmarks(150)  # the chip dlib.get_face_chip cuts, from our 5 landmarks
    chips, people = [], []
    for name, person in PHOTOS.items():
        image = cv2.imread(str(shared(f"real/face_recognition_examples/{name}")))
        faces = detector.detect_downscaled(image, 640)
        assert faces, f"no face found in {name}"
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        transform = SimilarityTransform.from_estimate(face.landmarks, template)
        chips.append(warp_crop(image, transform.params[:2], (150, 150))[..., ::-1])  # BGR -> RGB
        people.append(person)
    descriptors = describe(descriptor_net, np.stack(chips))

    same, different = [], []
    for i, j in itertools.combinations(range(len(people)), 2):
        distance = float(np.linalg.norm(descriptors[i] - descriptors[j]))
        (same if people[i] == people[j] else different).append(distance)
    # ROC-AUC of "closer means same person", over all pairs
    auc = np.mean([s < d for s in same for d in different])
    assert auc >= 0.95, f"same {sorted(same)}, different {sorted(different)[:5]}..."
    assert max(same) < DLIB_SAME_PERSON < np.mean(different), (sorted(same), sorted(different)[:5])


@pytest.mark.parametrize("keep", ["nothing", "a header", "half", "all but the last byte"])
def test_truncated_file_raises_value_error_naming_it(dlib_network, tmp_path, keep):
    data = dlib_network.read_bytes()
    size = {"nothing": 0, "a header": 300, "half": len(data) // 2, "all but the last byte": len(data) - 1}[keep]
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[:size])
    with pytest.raises(ValueError, match="truncated") as info:
        read_dat(cut)
    assert str(cut) in str(info.value) and "\n" not in str(info.value)


def test_file_of_another_kind_raises_value_error_naming_it(tmp_path):
    other = tmp_path / "not_dlib.dat"
    other.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="not a readable dlib") as info:
        read_dat(other)
    assert str(other) in str(info.value)


def test_bytes_after_the_network_raise_value_error_naming_the_file(dlib_network, tmp_path):
    longer = tmp_path / "longer.dat"
    longer.write_bytes(dlib_network.read_bytes() + b"\x01\x01")  # another network appended, say
    with pytest.raises(ValueError, match="2 unexpected bytes after the network") as info:
        read_dat(longer)
    assert str(longer) in str(info.value)


def test_onnx_export_up_to_level2_runs_in_onnx_runtime_like_torch(weights, tmp_path):
    import onnxruntime as ort

    net = DlibFaceResNet(weights, up_to="level2").eval()
    x = net.normalise(torch.from_numpy(synthetic_chip()[None]).permute(0, 3, 1, 2))
    path = tmp_path / "dlib_level2.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["features"])
        expected = net(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == (1, 128, 8, 8)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
