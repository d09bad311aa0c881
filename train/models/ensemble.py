"""Several frame detectors as one model: P(fake) = the mean of the members' P(fake).

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
    def __init__(self, members: list[dict]):
        super().__init__()
        from train.models import build_model

        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(build_model(architecture) for architecture in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def build(members: list[dict]) -> DetectorEnsemble:
    return DetectorEnsemble(members)
