"""Backbones by name: any timm model, or a trunk cut out of a pretrained face detector or face recogniser.

timm's pretrained weights come from the internet; a machine without it may still hold
face detectors (``../shared/data/models``) trained on tens of thousands of faces (WIDER
FACE), whose early layers already respond to eyes, mouths, edges and skin texture at
several scales.  A *trunk* is such a detector's ONNX graph from its input up to one
tensor, turned into torch modules by onnx2torch (plain ``nn.Conv2d`` / ``nn.BatchNorm2d``)
and fine-tuned like any backbone, under a pooled linear classifier of our own.  It is
one of two pretrained starts for a detector that this project can get here.

The other is dlib's face-recognition ResNet (CC0, in a PyPI package): trained to tell
~7500 people apart from ~3 M faces, its early levels describe facial detail at a
finer grain than a detector needs, which is where blending seams and re-rendered skin
differ.  Its file is read by :mod:`engines.networks.dlib_resnet`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxTrunk:
    model: str  # registry name of the ONNX file (engines.registry): sha256-pinned, so `output` always names the same tensor
    output: str  # the tensor where the trunk ends
    description: str


TRUNKS = {
    "ultraface_rfb320": OnnxTrunk(
        model="ultraface-rfb320", output="400",
        description="UltraFace RFB-320's base_net (MIT, WIDER FACE): 13 depthwise-separable / RFB blocks, "
                    "up to the ReLU after base_net.12 (stride 32, 256 channels), 0.19 M parameters"),
}


def _cut(trunk: OnnxTrunk):
    """The ONNX graph of ``trunk.model`` from its image input up to ``trunk.output``."""
    import onnx
    from onnx.utils import Extractor

    from engines.registry import resolve

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(resolve(trunk.model))))  # the extractor needs every tensor's type
    weights = {t.name for t in graph.graph.initializer}
    image = next(i.name for i in graph.graph.input if i.name not in weights)  # old opsets list weights as inputs too
    return Extractor(graph).extract_model([image], [trunk.output])


def _reset_parameters(trunk: nn.Module) -> None:
    """The same network from scratch: to tell what a trunk's pretrained weights bring."""
    for module in trunk.modules():
        if module is not trunk and hasattr(module, "reset_parameters"):
            module.reset_parameters()


class PooledTrunk(nn.Module):
    """A trunk, then global average pooling, dropout and a linear classifier, with timm's
    interface (``get_classifier``, ``forward_features``, ``forward_head``; ``num_classes=0``: pooled features)."""

    def __init__(self, trunk: nn.Module, num_features: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.trunk = trunk
        self.num_features = int(num_features)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(features.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class TrunkClassifier(PooledTrunk):
    """A face detector's trunk (``TRUNKS``) under the pooled classifier."""

    def __init__(self, name: str, num_classes: int = 1, pretrained: bool = True, drop_rate: float = 0.0, in_chans: int = 3):
        from onnx2torch import convert

        if in_chans != 3:
            raise ValueError(f"backbone {name}: a face-detector trunk takes the 3 colours only, not {in_chans} channels")
        trunk = convert(_cut(TRUNKS[name]))
        if not pretrained:
            _reset_parameters(trunk)
        trunk.eval()
        with torch.no_grad():
            num_features = int(trunk(torch.zeros(1, 3, 64, 64)).shape[1])
        trunk.train()
        super().__init__(trunk, num_features, num_classes, drop_rate)


@dataclass(frozen=True)
class FaceRecognitionTrunk:
    model: str  # registry name of dlib's network file (engines.networks.dlib_resnet reads it)
    up_to: str  # the last level kept: later ones learnt who a face is, which a fake does not change
    frozen: tuple[str, ...]  # levels kept at their face-recognition weights when pretrained
    lr_scale: float  # the learnt levels' learning rate, as a fraction of the classifier's
    description: str


FACE_RECOGNITION_TRUNKS = {
    # Frozen early levels and a small learning rate for the rest: dlib's network has no batch norm
    # (fixed per-channel affines), and fine-tuned whole under AdamW its ReLUs died within a few
    # hundred steps in one seed of two (model card); with the first levels fixed neither seed did.
    "dlib_face_resnet": FaceRecognitionTrunk(
        model="dlib-face-resnet", up_to="level2", frozen=("stem", "level4", "level3"), lr_scale=0.03,
        description="dlib's face-recognition ResNet (CC0, ~3 M faces) up to its 128-channel level (stride 16), "
                    "levels before it frozen: 1.15 M parameters, 0.81 M of them learnt"),
}


class FaceRecognitionTrunkClassifier(PooledTrunk):
    """dlib's face-recognition network up to ``up_to`` under the pooled classifier.  Takes our crops
    in [-1, 1] and converts them to dlib's own input (pixel values minus the means stored in its
    file, over 256) inside the model, so the exported ONNX needs nothing from dlib."""

    def __init__(self, name: str, num_classes: int = 1, pretrained: bool = True, drop_rate: float = 0.0, in_chans: int = 3):
        from engines.registry import resolve
        from engines.networks.dlib_resnet import DlibFaceResNet

        if in_chans != 3:
            raise ValueError(f"backbone {name}: dlib's network takes the 3 colours only, not {in_chans} channels")
        spec = FACE_RECOGNITION_TRUNKS[name]
        trunk = DlibFaceResNet.from_dat(resolve(spec.model), up_to=spec.up_to)
        if pretrained:
            for level in spec.frozen:
                getattr(trunk, level).requires_grad_(False)
        else:
            _reset_parameters(trunk)
        super().__init__(trunk, trunk.num_features, num_classes, drop_rate)
        self.trunk_lr_scale = spec.lr_scale if pretrained else 1.0
        # [-1, 1] -> 0..255 -> dlib's (pixel - mean) / 256, as one fixed scale and shift
        mean = torch.tensor(trunk.rgb_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("input_scale", torch.tensor(127.5 * trunk.input_scale), persistent=False)
        self.register_buffer("input_shift", (127.5 - mean) * trunk.input_scale, persistent=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x * self.input_scale + self.input_shift)


AUTO_TRUNK = "ultraface_rfb320"  # steadier across seeds than MobileNetV3-small here (engines/weights/RESEARCH_LOG.md)
AUTO_FALLBACK = "mobilenetv3_small_100"


def choose(name: str) -> str:
    """The backbone a run will use.  ``auto``: the UltraFace trunk when its model file is installed,
    else MobileNetV3-small, with a warning.  A trunk asked for by name must be installed: that fails
    now, with how to fetch it, before minutes of face caching."""
    from engines.registry import ModelNotFoundError, resolve

    if name == "auto":
        try:
            resolve(TRUNKS[AUTO_TRUNK].model)
        except ModelNotFoundError as exc:
            log.warning("backbone auto falls back to %s: %s", AUTO_FALLBACK, exc)
            return AUTO_FALLBACK
        return AUTO_TRUNK
    if name in TRUNKS:
        resolve(TRUNKS[name].model)
    if name in FACE_RECOGNITION_TRUNKS:
        resolve(FACE_RECOGNITION_TRUNKS[name].model)
    return name


def describe(name: str) -> str:
    """What backbone ``name`` is, for a model's metadata."""
    if name in TRUNKS:
        return TRUNKS[name].description
    if name in FACE_RECOGNITION_TRUNKS:
        return FACE_RECOGNITION_TRUNKS[name].description
    return f"timm {name}"


def create(name: str, num_classes: int = 1, pretrained: bool = False, drop_rate: float = 0.0, in_chans: int = 3) -> nn.Module:
    """The backbone called ``name``: a face-detector trunk (``TRUNKS``), a face-recognition trunk
    (``FACE_RECOGNITION_TRUNKS``) or any timm model."""
    if name in TRUNKS:
        return TrunkClassifier(name, num_classes=num_classes, pretrained=pretrained, drop_rate=drop_rate, in_chans=in_chans)
    if name in FACE_RECOGNITION_TRUNKS:
        return FaceRecognitionTrunkClassifier(name, num_classes=num_classes, pretrained=pretrained, drop_rate=drop_rate,
                                              in_chans=in_chans)
    import timm

    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate, in_chans=in_chans)
