"""Small models and files for the engine tests (plain helpers, not fixtures: each test
module wraps what it needs, so no fixture is registered twice)."""
from __future__ import annotations

from pathlib import Path

BACKBONE = "mobilenetv3_small_050"  # the smallest timm CNN with SE + hard-swish: quick on 2 CPU cores
INPUT_SIZE = (64, 64)


def detector_metadata(kind: str = "detector", name: str = "tiny-detector"):
    from engines.metadata import ModelMetadata

    return ModelMetadata(kind=kind, name=name, input_size=INPUT_SIZE, architecture=BACKBONE,
                         training={"data": "none: random weights for tests"})


def make_detector_checkpoint(path: Path, seed: int = 0) -> Path:
    """A dfstream-checkpoint-v1 of a tiny frame detector with random weights.

    timm initialises the head so that every logit is near 0 and every P(fake) near 0.5;
    the head is scaled up so the outputs spread over (0, 1) and a parity test compares
    values that actually differ from crop to crop.
    """
    import torch

    from engines.networks import CHECKPOINT_FORMAT, build_model

    architecture = {"family": "detector", "backbone": BACKBONE, "drop_rate": 0.0}
    torch.manual_seed(seed)
    model = build_model(architecture)
    with torch.no_grad():
        head = model.backbone.get_classifier()
        head.weight.mul_(80.0)
    torch.save({"format": CHECKPOINT_FORMAT, "metadata": detector_metadata().to_dict(),
                "architecture": architecture, "state_dict": model.state_dict()}, path)
    return path


def make_metadata_only_checkpoint(path: Path, kind: str = "detector") -> Path:
    """A checkpoint-shaped file that only carries metadata: enough for kind checks, not to run."""
    import torch

    from engines.networks import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "metadata": detector_metadata(kind=kind).to_dict(),
                "architecture": {"family": kind}, "state_dict": {}}, path)
    return path


def random_crops(n: int, seed: int = 0):
    import numpy as np

    height, width = INPUT_SIZE
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
