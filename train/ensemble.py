"""``dfstream train ensemble``: frame-detector checkpoints -> one checkpoint whose P(fake) is their mean.

The result is an ordinary dfstream checkpoint (family ``detector_ensemble``), so
``dfstream export`` turns it into one ONNX model the pipeline runs like any other
detector.  Members must cut and normalise the crop the same way; their training
records are kept in the ensemble's metadata.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from engines.metadata import ModelMetadata
from train import common

# what every member must share: the crop they are given is one and the same
SHARED_INPUT = ("input_size", "crop_margin", "mean", "std", "color_order", "output")


def load_members(checkpoints: list[str | Path], families: tuple[str, ...], what: str
                 ) -> tuple[list[dict], list[ModelMetadata], list[dict]]:
    """Each P(fake) detector checkpoint's architecture, metadata and weights, for ``what`` (an
    ensemble, a fusion) that takes only members of ``families``."""
    architectures, metadatas, states = [], [], []
    for path in checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        checkpoint = common.load_checkpoint(path)
        metadata = ModelMetadata.from_dict(checkpoint["metadata"]).expect_kind("detector", path)
        family = checkpoint["architecture"].get("family")
        if family not in families or metadata.output != "p_fake":
            raise ValueError(f"{path}: {what} takes frame detectors of family {', '.join(families)}, not {family!r}")
        architectures.append(checkpoint["architecture"])
        metadatas.append(metadata)
        states.append(checkpoint["state_dict"])
    return architectures, metadatas, states


def combine(checkpoints: list[str | Path], output: str | Path, name: str = "dfstream-detector-ensemble") -> Path:
    from engines.networks import build_model

    if len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two detector checkpoints")
    members, metadatas, states = load_members(checkpoints, ("detector",), "an ensemble")
    first = metadatas[0]
    for path, metadata in zip(checkpoints[1:], metadatas[1:]):
        for key in SHARED_INPUT:
            if getattr(metadata, key) != getattr(first, key):
                raise ValueError(f"{path}: {key} {getattr(metadata, key)!r} differs from {checkpoints[0]}'s "
                                 f"{getattr(first, key)!r}; ensemble members must see the same crop")
    architecture = {"family": "detector_ensemble", "members": members}
    model = build_model(architecture)
    model.load_state_dict({f"members.{i}.{key}": value for i, state in enumerate(states) for key, value in state.items()})
    metadata = dataclasses.replace(
        first, name=name, threshold=sum(m.threshold for m in metadatas) / len(metadatas),
        architecture=f"mean P(fake) of {len(members)} detectors: " + "; ".join(m.architecture for m in metadatas),
        training={"ensemble_of": [str(p) for p in checkpoints], "members": [m.training for m in metadatas]},
        metrics={}, extra={})
    return common.save_checkpoint(output, model, architecture, metadata)
