"""Several frame detectors as one model: P(fake) = the mean of the members' P(fake).
(And a detector with its mirror image: :class:`MirrorAveraged`.)

With ~100 training identities, one training seed moves the held-out ROC-AUC by
more than any recipe change (see the model card); averaging models trained from
different seeds takes that variance out.  The members see the same crop, so they
must agree on its size, margin and normalisation; the ensemble is then exported
like any detector, as one ONNX graph.
"""
from __future__ import annotations

import torch
from torch import nn


class DetectorEnsemble(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def build(members: list[dict], build_member) -> DetectorEnsemble:
    """The ensemble of the ``members`` (their architectures), each built by ``build_member``
    (:func:`engines.networks.build_model`, passed in: it is what imports this module)."""
    return DetectorEnsemble([build_member(architecture) for architecture in members])


class MirrorAveraged(nn.Module):
    """P(fake) = the mean of a detector's scores for the crop and its left-right mirror image.

    Faces are near-symmetric and training flips them at random, so the mirror is a second,
    slightly different look at the same blend traces; averaging the two steadies the score
    at twice the cost.  ``dfstream export --mirror-mean`` puts it inside the exported graph.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.detector(x) + self.detector(torch.flip(x, dims=[3])))
