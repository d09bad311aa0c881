"""What every engine feeds its network: uint8 BGR crops -> float32 NCHW, scaled and normalised as the
model's metadata says, in the model's channel order."""
import numpy as np
import pytest

from engines.base import postprocess_image, preprocess
from engines.metadata import ModelMetadata


@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
@pytest.mark.parametrize("mean,std", [((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                                      ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_crops_become_the_normalised_nchw_tensor_the_metadata_describes(color_order, mean, std):
    metadata = ModelMetadata(kind="detector", name="t", input_size=(32, 24), color_order=color_order, mean=mean, std=std)
    crops = np.random.default_rng(0).integers(0, 256, (3, 32, 24, 3), dtype=np.uint8)
    tensor = preprocess(crops, metadata)
    channels = crops[..., ::-1] if color_order == "RGB" else crops
    expected = ((channels / 255.0 - np.asarray(mean)) / np.asarray(std)).transpose(0, 3, 1, 2)
    assert tensor.dtype == np.float32 and tensor.shape == (3, 3, 32, 24) and tensor.flags.c_contiguous
    assert np.abs(tensor - expected).max() < 1e-5
    # an image model's output goes back the same way
    assert np.array_equal(postprocess_image(tensor, metadata), crops)


def test_crops_of_another_size_than_the_model_wants_are_refused():
    metadata = ModelMetadata(kind="detector", name="t", input_size=(32, 32))
    with pytest.raises(ValueError, match="the model wants"):
        preprocess(np.zeros((1, 16, 16, 3), np.uint8), metadata)
