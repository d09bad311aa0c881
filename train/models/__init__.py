"""Model builders, keyed by family, so a checkpoint can rebuild its own network.

A dfstream checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {"format": "dfstream-checkpoint-v1",
     "metadata": {...ModelMetadata...},
     "architecture": {"family": "detector", ...builder kwargs...},
     "state_dict": {...},
     ...training state (optimizer, epoch, step) for --resume...}

``build_model(architecture)`` returns an ``nn.Module`` whose forward takes the
preprocessed float NCHW batch (see ``engines.base.preprocess``) and returns what
the metadata's ``output`` says: P(fake) of shape (N,), or an image batch.
"""
from __future__ import annotations

import importlib

CHECKPOINT_FORMAT = "dfstream-checkpoint-v1"

# family -> module defining build(**kwargs); imported lazily so that running a
# detector never imports the GAN code.
FAMILIES = {
    "detector": "train.models.detector",
    "detector_ensemble": "train.models.ensemble",
    "temporal": "train.models.temporal",
    "swapper": "train.models.swapper",
    "dcgan_discriminator": "train.models.dcgan",
    "sharpness": "train.models.sharpness",
}


def build_model(architecture: dict):
    family = architecture.get("family")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} (expected one of {', '.join(FAMILIES)})")
    module = importlib.import_module(FAMILIES[family])
    kwargs = {k: v for k, v in architecture.items() if k != "family"}
    return module.build(**kwargs)


def load_checkpoint(path):
    """Load a checkpoint safely (no unpickling of arbitrary objects) and rebuild its model in eval mode."""
    import torch

    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a dfstream checkpoint")
    model = build_model(checkpoint["architecture"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, checkpoint
