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

CHECKPOINT_FORMAT = "dfstream-checkpoint-v1"

FAMILIES = ("detector", "detector_ensemble", "detector_fusion", "temporal", "swapper", "dcgan_discriminator", "sharpness")


def build_model(architecture: dict):
    """The network a checkpoint's ``architecture`` describes. Each family's module is imported
    only when that family is built, so running a detector never imports the GAN code."""
    family = architecture.get("family")
    if family == "detector":
        from engines.networks import detector as module
    elif family == "detector_ensemble":
        from engines.networks import ensemble as module
    elif family == "detector_fusion":
        from engines.networks import fusion as module
    elif family == "temporal":
        from engines.networks import temporal as module
    elif family == "swapper":
        from engines.networks import swapper as module
    elif family == "dcgan_discriminator":
        from engines.networks import dcgan as module
    elif family == "sharpness":
        from engines.networks import sharpness as module
    else:
        raise ValueError(f"unknown model family {family!r} (expected one of {', '.join(FAMILIES)})")
    kwargs = {k: v for k, v in architecture.items() if k != "family"}
    if family in ("detector_ensemble", "detector_fusion"):
        kwargs["build_member"] = build_model
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
